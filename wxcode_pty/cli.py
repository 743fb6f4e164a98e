"""The ``wxcode-pty`` command: the plugin as a standalone server with its terminal page.

``wxcode-pty serve`` (or just ``wxcode-pty``) runs Claude when it is on PATH, else the user's
shell, binds 127.0.0.1 by default, prints the URL to open, and shuts down gracefully on SIGINT
and SIGTERM. Errors a user can fix (a busy port, an unwritable database, a missing program) are
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import secrets
import shlex
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from .claude import ClaudeCommand
from .commands import CommandProfile, ShellCommand, default_shell
from .security import RedactingAccessLogger
from .settings import Settings
from .web import create_app

__all__ = ["main"]

log = logging.getLogger("wxcode_pty")


class UsageError(Exception):
    """Something the user can fix; printed as one line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wxcode-pty",
        description=(
            "Serve terminal programs (Claude Code, or any command) to browser terminals. "
            "Without a subcommand, 'serve' is assumed."
        ),
    )
    commands = parser.add_subparsers(dest="subcommand")
    serve = commands.add_parser(
        "serve",
        prog="wxcode-pty [serve]",
        help="run the server (the default)",
        description=parser.description,
        epilog=(
            "Runs 'claude' when it is on PATH, else your shell. Open the printed URL; each "
            "?project=<id> is one terminal that survives reloads and restarts. "
            "SIGINT and SIGTERM shut down gracefully; sessions are respawned on the next start."
        ),
    )
    _add_serve_options(serve)
    return parser


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="port to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--db",
        default="./wxcode_pty.db",
        help="SQLite database file, created if needed (default: %(default)s)",
    )
    parser.add_argument(
        "--workdir",
        default="./projects",
        help=(
            "root folder; each project runs in WORKDIR/<project id>, created on demand"
            " (default: %(default)s)"
        ),
    )
    program = parser.add_mutually_exclusive_group()
    program.add_argument(
        "--command",
        help="run this command line in every session (split like a shell line, not run by a shell)",
    )
    program.add_argument("--claude", metavar="PATH", help="run this Claude Code executable")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="end sessions with no client and no output for this long (default: %(default)s)",
    )
    parser.add_argument(
        "--buffer-size",
        type=int,
        default=65536,
        metavar="BYTES",
        help="replay buffer per session (default: %(default)s)",
    )
    parser.add_argument(
        "--max-sessions",
        type=int,
        default=1000,
        help="running sessions at most (default: %(default)s)",
    )
    parser.add_argument(
        "--no-token",
        action="store_true",
        help="no access token (Origin and Host checks stay on); only for a trusted machine",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def _profile(args: argparse.Namespace) -> tuple[CommandProfile, str]:
    if args.command is not None:
        try:
            argv = shlex.split(args.command)
        except ValueError as exc:
            raise UsageError(f"--command: {exc}") from None
        if not argv:
            raise UsageError("--command is empty")
        _require_executable(argv[0], "--command")
        return ShellCommand(argv), shlex.join(argv)
    if args.claude is not None:
        _require_executable(args.claude, "--claude")
        return ClaudeCommand(executable=args.claude), f"Claude Code ({args.claude})"
    claude = shutil.which("claude")
    if claude is not None:
        return ClaudeCommand(executable=claude), f"Claude Code ({claude})"
    shell = default_shell()
    return ShellCommand([shell, "-l"]), f"{shell} (claude is not on PATH)"


def _require_executable(program: str, option: str) -> None:
    if shutil.which(program) is None:
        raise UsageError(f"{option}: executable not found: {program}")


def _check_database(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise UsageError(f"--db: cannot write the database {path}")
    elif not folder.is_dir():
        raise UsageError(f"--db: folder does not exist: {folder}")
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--db: cannot create the database in {folder}")


async def _serve(args: argparse.Namespace) -> None:
    profile, description = _profile(args)
    database = Path(args.db)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    token = None if args.no_token else secrets.token_urlsafe(24)
    try:
        settings = Settings(
            database=database,
            command=profile,
            workdir=Path(args.workdir),
            idle_timeout=args.idle_timeout,
            buffer_size=args.buffer_size,
            max_sessions=args.max_sessions,
            token=token,
            token_required=not args.no_token,
        )
    except ValueError as exc:
        raise UsageError(str(exc).replace("Settings.", "--").replace("_", "-")) from None
    runner = web.AppRunner(create_app(settings), access_log_class=RedactingAccessLogger)
    try:
        await runner.setup()
    except Exception as exc:
        await runner.cleanup()
        raise UsageError(f"cannot start: {exc}") from None
    try:
        site = web.TCPSite(runner, args.host, args.port)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"port {args.port} on {args.host} is already in use"
                    " (choose another with --port)"
                ) from None
            raise UsageError(
                f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
            ) from None
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{host}:{args.port}/"
        print(f"wxcode-pty serving {description}", flush=True)
        print(f"open {url}?token={token}" if token else f"open {url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        print("shutting down", flush=True)
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wxcode-pty`` and ``python -m wxcode_pty``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] != "serve":
        args_list.insert(0, "serve")
    args = _parser().parse_args(args_list)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        _check_database(Path(args.db))
        # Absolute: sessions keep their directory even if the server's cwd changes.
        args.workdir = os.path.abspath(args.workdir)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args))
    except UsageError as exc:
        print(f"wxcode-pty: error: {exc}", file=sys.stderr)
        return 2
    return 0
