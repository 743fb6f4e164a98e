"""The ``wxcode-pty`` command: the plugin as a standalone server with its terminal page.

``wxcode-pty serve`` (or just ``wxcode-pty``) runs Claude when it is on PATH, else the user's
shell, binds 127.0.0.1 by default, prints the URL to open, and shuts down gracefully on SIGINT
and SIGTERM. Behind a reverse proxy it can serve under a path prefix (``--base-path``), listen on
a Unix socket (``--unix-socket``) and answer to the proxy's host and origin (``--allowed-host``,
``--allowed-origin``); ``--tls-cert``/``--tls-key`` serve HTTPS and WSS itself. Errors a user
can fix (a busy port, an unwritable database, a missing program) are one line on stderr and exit
status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import ipaddress
import logging
import os
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import stat
import sys
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: The names the server always answers to (what a local browser, curl or a proxy on the same
#: machine sends by default).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


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
    parser.add_argument("--host", help=f"address to bind (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, help=f"port to bind (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--unix-socket",
        metavar="PATH",
        help=(
            "listen on this Unix socket instead of TCP (not with --host/--port), for a reverse"
            " proxy on the same machine; a stale socket file is replaced, any other file is"
            " refused; removed at shutdown"
        ),
    )
    parser.add_argument(
        "--base-path",
        metavar="/PREFIX",
        default="/",
        help=(
            "serve everything (page, /ws/, /api/, /metrics) under this path, for a reverse"
            " proxy that passes the path on unchanged (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--tls-cert", metavar="FILE", help="serve HTTPS and WSS with this PEM certificate chain"
    )
    parser.add_argument(
        "--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM; both are needed)"
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help=(
            "also answer to this Host name (the one a reverse proxy passes on, e.g."
            " pty.example.com); localhost, 127.0.0.1, [::1] and --host stay allowed; repeatable"
        ),
    )
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help=(
            "let pages at this origin open terminals (scheme://host[:port] as the browser shows"
            " it, e.g. https://pty.example.com when a proxy terminates TLS); the server's own"
            " local URLs stay allowed; repeatable"
        ),
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
        "--advertise",
        metavar="URL",
        help=(
            "with a postgresql:// database: this server's URL as the other servers reach it"
            " (with the --base-path); they forward requests for its sessions there"
            " (default: the URL it listens on)"
        ),
    )
    parser.add_argument(
        "--host-lease",
        type=float,
        metavar="SECONDS",
        help=(
            "with a postgresql:// database: how long this server's lease lasts; it ends its"
            " programs when it cannot renew it, and the others take its sessions over"
            f" (default: {_setting_default('host_lease')})"
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


def _listen_unix(path: Path) -> socket.socket:
    """Bind a Unix socket, replacing a stale one (a socket file nothing listens on) only."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UsageError(f"--unix-socket: cannot use {path}: {exc.strerror or exc}") from None
    else:
        if not stat.S_ISSOCK(mode):
            raise UsageError(f"--unix-socket: {path} exists and is not a socket; not replacing it")
        if _unix_socket_answers(path):
            raise UsageError(f"--unix-socket: {path} is in use by another server")
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise UsageError(
                f"--unix-socket: cannot remove the stale socket {path}: {exc.strerror or exc}"
            ) from None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(1024)
    except OSError as exc:
        listener.close()
        raise UsageError(f"--unix-socket: cannot listen on {path}: {exc.strerror or exc}") from None
    return listener


def _unix_socket_answers(path: Path) -> bool:
    """Does a server listen on the socket file? False for one a stopped server left behind."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            return False
        except OSError as exc:
            # Not allowed to connect, say: whether it is stale cannot be told, so keep it.
            raise UsageError(
                f"--unix-socket: cannot tell whether {path} is in use: {exc.strerror or exc}"
            ) from None
    return True


@contextlib.contextmanager
def _removed_at_exit(path: Path) -> Iterator[None]:
    """Remove the socket file at shutdown, unless another server has replaced it meanwhile."""
    bound = os.stat(path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            now = os.stat(path)
            if (now.st_dev, now.st_ino) == (bound.st_dev, bound.st_ino):
                path.unlink()


def _tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key go together: give both or neither")
    for option, file in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with open(file, "rb"):
                pass
        except OSError as exc:
            raise UsageError(f"{option}: cannot read {file}: {exc.strerror or exc}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        problem = (
            "the key does not belong to the certificate"
            if exc.reason == "KEY_VALUES_MISMATCH"
            else "expected a PEM certificate and its PEM private key"
        )
        raise UsageError(f"--tls-cert {cert} --tls-key {key}: {problem}") from None
    return context


def _base_path(raw: str) -> str:
    """``/PREFIX`` without its trailing slash; "" for the root."""
    if not raw.startswith("/"):
        raise UsageError(f"--base-path must start with /, got {raw!r}")
    segments = raw.strip("/").split("/") if raw.strip("/") else []
    for segment in segments:
        if segment in (".", "..") or not _PATH_SEGMENT.fullmatch(segment):
            raise UsageError(
                f"--base-path {raw!r}: use /name/... with letters, digits and . _ ~ -"
                " (no empty, . or .. segments)"
            )
    return "".join(f"/{segment}" for segment in segments)


def _host_name(raw: str) -> str:
    """An ``--allowed-host`` in the form the Host check compares (IPv6 in brackets)."""
    name = raw.strip().lower()
    if name.count(":") > 1 and not name.startswith("["):
        name = f"[{name}]"
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    if (
        not bare
        or "/" in name
        or "@" in name
        or any(c.isspace() for c in name)
        or (":" in name and not name.startswith("["))
        or (name.startswith("[") and not name.endswith("]"))
    ):
        raise UsageError(
            f"--allowed-host: expected a host name without scheme or port, got {raw!r}"
        )
    return name


def _origin(raw: str) -> str:
    scheme, sep, host = raw.strip().rstrip("/").partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not host or "/" in host or "@" in host:
        raise UsageError(
            f"--allowed-origin: expected scheme://host[:port] (e.g. https://pty.example.com),"
            f" got {raw!r}"
        )
    return f"{scheme.lower()}://{host.lower()}"


@dataclass(frozen=True, slots=True)
class Address:
    """Where the server listens, worked out from the options before anything is opened."""

    host: str | None
    port: int | None
    unix_socket: Path | None
    scheme: str
    base_path: str

    @classmethod
    def from_args(cls, args: argparse.Namespace, secure: bool) -> Address:
        base_path = _base_path(args.base_path)
        scheme = "https" if secure else "http"
        if args.unix_socket is not None:
            if args.host is not None or args.port is not None:
                raise UsageError("--unix-socket listens instead of TCP: not with --host/--port")
            path = Path(os.path.abspath(args.unix_socket))
            return cls(None, None, path, scheme, base_path)
        host = DEFAULT_HOST if args.host is None else args.host
        port = DEFAULT_PORT if args.port is None else args.port
        return cls(host, port, None, scheme, base_path)

    def listen(self) -> socket.socket:
        if self.unix_socket is not None:
            return _listen_unix(self.unix_socket)
        assert self.host is not None and self.port is not None
        return _listen(self.host, self.port)

    @property
    def local_hosts(self) -> tuple[str, ...]:
        """The Host names that reach this server directly."""
        names = list(LOCAL_HOSTS)
        if self.host is not None and self.host.lower() not in _WILDCARD_HOSTS:
            names.append(_host_name(self.host))
        return tuple(dict.fromkeys(names))

    @property
    def url(self) -> str:
        """The URL to open (for a Unix socket, in the ``http+unix://`` form Jupyter prints)."""
        if self.unix_socket is not None:
            quoted = urllib.parse.quote(str(self.unix_socket), safe="")
            return f"{self.scheme}+unix://{quoted}{self.base_path}/"
        host = self.host or DEFAULT_HOST
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}{self.base_path}/"

    def local_origins(self) -> Iterator[str]:
        port = "" if self.port is None else f":{self.port}"
        for name in self.local_hosts:
            yield f"{self.scheme}://{name}{port}"


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 maybe in brackets) is this machine only."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _settings(args: argparse.Namespace, profile: CommandProfile, address: Address) -> Settings:
    token = None
    if not args.no_token:
        token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    allowed_hosts = allowed_origins = None
    if args.allowed_host:
        allowed_hosts = frozenset(
            [*address.local_hosts, *(_host_name(item) for item in args.allowed_host)]
        )
    if args.allowed_origin:
        allowed_origins = frozenset(
            [*address.local_origins(), *(_origin(item) for item in args.allowed_origin)]
        )
    advertise = args.advertise
    if advertise is None and _is_url(args.db) and address.unix_socket is None:
        advertise = address.url.rstrip("/")
        if (address.host or "").lower() in _WILDCARD_HOSTS:
            # Peers cannot reach "0.0.0.0": this machine's name is the best guess.
            advertise = (
                urllib.parse.urlsplit(advertise)
                ._replace(netloc=f"{socket.gethostname()}:{address.port}")
                .geturl()
            )
        elif _is_loopback(address.host or DEFAULT_HOST):
            log.warning(
                "advertising %s to the other hosts: give --advertise with an address they"
                " can reach unless they all run on this machine",
                advertise,
            )
    lease = {} if args.host_lease is None else {"host_lease": args.host_lease}
    try:
        return Settings(
            database=args.db if _is_url(args.db) else Path(args.db),
            advertise_url=advertise,
            **lease,
            command=profile,
            # Absolute: sessions keep their directory even if the server's cwd changes.
            workdir=Path(os.path.abspath(args.workdir)),
            idle_timeout=args.idle_timeout,
            buffer_size=args.buffer_size,
            max_sessions=args.max_sessions,
            env_extra=_env_extra(args.env),
            token=token,
            token_required=not args.no_token,
            allowed_hosts=allowed_hosts,
            allowed_origins=allowed_origins,
        )
    except ValueError as exc:
        raise UsageError(str(exc).replace("Settings.", "--").replace("_", "-")) from None


def _application(settings: Settings, base_path: str) -> web.Application:
    """The plugin at the root, or mounted at ``base_path`` (nothing else is served)."""
    plugin = create_app(settings)
    if not base_path:
        return plugin
    root = web.Application()

    async def add_slash(request: web.Request) -> web.StreamResponse:
        # The page's URLs are relative: /PREFIX must become /PREFIX/ before it loads.
        query = request.rel_url.raw_query_string
        raise web.HTTPPermanentRedirect(f"{base_path}/" + (f"?{query}" if query else ""))

    root.router.add_get(base_path, add_slash)
    root.add_subapp(base_path, plugin)
    return root


async def _serve(
    settings: Settings,
    listener: socket.socket,
    tls: ssl.SSLContext | None,
    address: Address,
    description: str,
) -> None:
    runner = web.AppRunner(
        _application(settings, address.base_path), access_log_class=RedactingAccessLogger
    )
    try:
        await runner.setup()
    except Exception as exc:
        await runner.cleanup()
        raise UsageError(f"cannot start: {exc}") from None
    try:
        await web.SockSite(runner, listener, ssl_context=tls).start()
        print(f"wxcode-pty serving {description}", flush=True)
        if address.unix_socket is not None:
            print(f"listening on unix socket {address.unix_socket}", flush=True)
        url = address.url
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
        tls = _tls_context(args.tls_cert, args.tls_key)
        address = Address.from_args(args, secure=tls is not None)
        settings = _settings(args, profile, address)
        listener = address.listen()
        with listener, contextlib.ExitStack() as cleanup:
            if address.unix_socket is not None:
                cleanup.enter_context(_removed_at_exit(address.unix_socket))
            if not _is_url(args.db):
                _check_database(Path(args.db))
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_serve(settings, listener, tls, address, description))
    except UsageError as exc:
        print(f"wxcode-pty: error: {exc}", file=sys.stderr)
        return 2
    return 0
