"""terminado as a benchmark peer: a minimal tornado app around NamedTermManager.

GET  /websocket/<name>  terminado's TermSocket; the first client of a name spawns `PROGRAM <name>`
POST /terminate         ends every terminal (terminado keeps named terminals after their
                        clients leave, so the bench clears them between rounds)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import tornado.web
from terminado.management import NamedTermManager, PtyWithClients
from terminado.websocket import TermSocket


class PerNameManager(NamedTermManager):
    """NamedTermManager whose program gets the terminal's name as its argument."""

    def get_terminal(self, term_name: str) -> PtyWithClients:  # type: ignore[override]
        # new_terminal() is not told the name; hand it over through this attribute.
        self._spawning = term_name
        return super().get_terminal(term_name)

    def new_terminal(self, **kwargs: Any) -> PtyWithClients:
        kwargs.setdefault("shell_command", [*self.shell_command, self._spawning])
        return super().new_terminal(**kwargs)


class TerminateAll(tornado.web.RequestHandler):
    def initialize(self, manager: PerNameManager) -> None:
        self.manager = manager

    async def post(self) -> None:
        await self.manager.kill_all()
        self.write("ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--program", nargs="+", required=True, help="argv; the name is appended")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    async def serve() -> None:
        manager = PerNameManager(shell_command=args.program)
        app = tornado.web.Application(
            [
                (r"/websocket/([^/]+)", TermSocket, {"term_manager": manager}),
                (r"/terminate", TerminateAll, {"manager": manager}),
            ]
        )
        app.listen(args.port, address="127.0.0.1")
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
