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
import dataclasses
import errno
import logging
import os
import resource
import secrets
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from .claude import ClaudeCommand
from .commands import CommandProfile, ShellCommand, default_shell
from .security import RedactingAccessLogger
from .settings import CLAUDE_SESSION_MARKERS, Settings
from .web import create_app

__all__ = ["main"]

log = logging.getLogger("wxcode_pty")

#: A fixed token for the built-in check, so that open pages reconnect after a restart.
TOKEN_ENV = "WXCODE_PTY_TOKEN"


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
            "SIGINT and SIGTERM shut down gracefully; sessions are respawned on the next start. "
            "The access token is random per start unless WXCODE_PTY_TOKEN sets it (then open "
            "pages reconnect after a restart)."
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
        help=(
            "SQLite database file, created if needed (one server per file), or a"
            " postgresql://user:password@host/db URL that several servers share (needs"
            " wxcode-pty[postgres]) (default: %(default)s)"
        ),
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
        default=_setting_default("idle_timeout"),
        metavar="SECONDS",
        help="end sessions with no client and no output for this long (default: %(default)s)",
    )
    parser.add_argument(
        "--buffer-size",
        type=int,
        default=_setting_default("buffer_size"),
        metavar="BYTES",
        help="replay buffer per session (default: %(default)s)",
    )
    parser.add_argument(
        "--max-sessions",
        type=int,
        default=_setting_default("max_sessions"),
        help="running sessions at most (default: %(default)s)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help=(
            "pass the server's variable NAME to the programs (beyond the default allowlist,"
            " which has ANTHROPIC_*, CLAUDE_CODE_*, AWS_*, ...), or set NAME=VALUE; repeatable."
            " Claude's session markers (CLAUDECODE, CLAUDE_CODE_SESSION_ID, ...) are refused"
        ),
    )
    parser.add_argument(
        "--no-token",
        action="store_true",
        help="no access token (Origin and Host checks stay on); only for a trusted machine",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def _setting_default(name: str) -> object:
    """A default of ``Settings``, shown in --help: the CLI must not repeat (and drift from) it."""
    return next(f.default for f in dataclasses.fields(Settings) if f.name == name)


def _env_extra(items: Sequence[str]) -> dict[str, str]:
    """``--env NAME`` (the server's value) and ``--env NAME=VALUE``."""
    extra: dict[str, str] = {}
    for item in items:
        name, has_value, value = item.partition("=")
        if not name:
            # The value is not echoed: it may be a secret.
            raise UsageError("--env: expected NAME or NAME=VALUE, got an empty NAME")
        if name in CLAUDE_SESSION_MARKERS:
            raise UsageError(
                f"--env {name}: {name} marks the Claude session the server runs in;"
                " it is never passed to programs"
            )
        if not has_value:
            if name not in os.environ:
                raise UsageError(f"--env {name}: {name} is not set in the server's environment")
            value = os.environ[name]
        extra[name] = value
    return extra


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


def _is_url(database: str) -> bool:
    """A PostgreSQL URL rather than an SQLite file."""
    return database.partition("://")[0].lower() in ("postgresql", "postgres")


def _check_database(path: Path) -> None:
    """Open (and so create) the file, for a clear message instead of SQLite's."""
    if path.is_dir():
        raise UsageError(f"--db: {path} is a folder, not a database file")
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise UsageError(f"--db: cannot open the database {path}: {exc.strerror or exc}") from None


def _listen(host: str, port: int) -> socket.socket:
    """Bind before anything else: a second server must fail before touching any session."""
    if not 0 < port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {port}")
    try:
        return socket.create_server((host, port), backlog=1024)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is already in use (choose another with --port)"
            ) from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _settings(args: argparse.Namespace, profile: CommandProfile) -> Settings:
    token = None
    if not args.no_token:
        token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    try:
        return Settings(
            database=args.db if _is_url(args.db) else Path(args.db),
            command=profile,
            # Absolute: sessions keep their directory even if the server's cwd changes.
            workdir=Path(os.path.abspath(args.workdir)),
            idle_timeout=args.idle_timeout,
            buffer_size=args.buffer_size,
            max_sessions=args.max_sessions,
            env_extra=_env_extra(args.env),
            token=token,
            token_required=not args.no_token,
        )
    except ValueError as exc:
        raise UsageError(str(exc).replace("Settings.", "--").replace("_", "-")) from None


async def _serve(settings: Settings, listener: socket.socket, url: str, description: str) -> None:
    runner = web.AppRunner(create_app(settings), access_log_class=RedactingAccessLogger)
    try:
        await runner.setup()
    except Exception as exc:
        await runner.cleanup()
        raise UsageError(f"cannot start: {exc}") from None
    try:
        await web.SockSite(runner, listener).start()
        print(f"wxcode-pty serving {description}", flush=True)
        token = settings.token if settings.token_required else None
        print(f"open {url}?token={token}" if token else f"open {url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        print("shutting down", flush=True)
    finally:
        await runner.cleanup()


def _raise_open_file_limit() -> None:
    """Each session holds about four descriptors (PTY, pidfd, sockets): 1,000 sessions need
    more than the usual soft limit of 1,024, so take what the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


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
    _raise_open_file_limit()
    try:
        profile, description = _profile(args)
        settings = _settings(args, profile)
        listener = _listen(args.host, args.port)
        with listener:
            if not _is_url(args.db):
                _check_database(Path(args.db))
            host = f"[{args.host}]" if ":" in args.host else args.host
            url = f"http://{host}:{args.port}/"
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_serve(settings, listener, url, description))
    except UsageError as exc:
        print(f"wxcode-pty: error: {exc}", file=sys.stderr)
        return 2
    return 0
