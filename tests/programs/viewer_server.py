"""A host application whose users may watch but not type: the plugin mounted at /pty with
an ``authorize`` hook that refuses ``input`` (every other action is allowed).

Built only on the public API. Usage: viewer_server.py PORT DB WORKDIR ARGV_JSON
Prints ``listening`` once the port accepts connections.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aiohttp import web

from wxcode_pty import Settings, ShellCommand, create_app
from wxcode_pty.security import RedactingAccessLogger


async def authenticate(request: web.Request) -> object | None:
    return "viewer"


async def authorize(principal: object, output_project_id: str, action: str) -> bool:
    return action != "input"


def main() -> None:
    port, db, workdir, argv = sys.argv[1:5]
    settings = Settings(
        database=db,
        workdir=Path(workdir),
        command=ShellCommand(json.loads(argv)),
        authenticate=authenticate,
        authorize=authorize,
        kill_grace=0.5,
    )
    host = web.Application()
    host.add_subapp("/pty", create_app(settings))

    async def announce(app: web.Application) -> None:
        print("listening", flush=True)

    host.on_startup.append(announce)
    web.run_app(
        host,
        host="127.0.0.1",
        port=int(port),
        print=None,
        access_log_class=RedactingAccessLogger,
        shutdown_timeout=5,
    )


if __name__ == "__main__":
    main()
