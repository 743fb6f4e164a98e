"""A host application with the plugin mounted at /pty, as a real process for restart tests.

Built only on the public API. Usage:
    plugin_server.py PORT DB WORKDIR (--argv JSON | --claude PATH) [--kill-grace S]
                     [--idle-timeout S] [--env K=V ...]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from aiohttp import web

from wxcode_pty import ClaudeCommand, Settings, ShellCommand, create_app
from wxcode_pty.commands import CommandProfile
from wxcode_pty.security import RedactingAccessLogger

TOKEN = "server-test-token"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("db")
    parser.add_argument("workdir")
    parser.add_argument("--argv")
    parser.add_argument("--claude")
    parser.add_argument("--kill-grace", type=float, default=1.0)
    parser.add_argument("--idle-timeout", type=float, default=Settings.idle_timeout)
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    command: CommandProfile
    if args.claude:
        command = ClaudeCommand(executable=args.claude)
    else:
        command = ShellCommand(json.loads(args.argv))
    settings = Settings(
        database=args.db,
        workdir=Path(args.workdir),
        command=command,
        token=TOKEN,
        kill_grace=args.kill_grace,
        idle_timeout=args.idle_timeout,
        env_extra=dict(item.split("=", 1) for item in args.env),
    )
    host = web.Application()
    host.add_subapp("/pty", create_app(settings))
    web.run_app(
        host,
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log_class=RedactingAccessLogger,
        shutdown_timeout=5,
    )


if __name__ == "__main__":
    main()
