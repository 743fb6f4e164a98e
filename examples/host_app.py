"""A host application with its own pages and login that mounts wxcode-pty at ``/pty``.

Two demo users, ``alice`` and ``bob``, each own the projects whose ids start with their name
and a dash (``alice-notes``, ``bob-api``, ...). The host decides who someone is (a signed
session cookie) and what they may open; the plugin asks it through the ``authenticate`` and
``authorize`` hooks of its ``Settings`` and refuses everything else.

    python examples/host_app.py [--port 8080]

Passwords come from ``HOST_APP_ALICE_PASSWORD`` and ``HOST_APP_BOB_PASSWORD``; when unset,
random ones are printed at start. The cookie signing key is random per start, so a restart
logs everyone out (the terminals keep running and are respawned as usual).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html
import logging
import os
import secrets
import shlex
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from aiohttp import web

from wxcode_pty import ClaudeCommand, Settings, ShellCommand, create_app, get_session_manager
from wxcode_pty.commands import ClaudeState
from wxcode_pty.security import RedactingAccessLogger

__all__ = ["build_app", "main", "notify"]

log = logging.getLogger("host_app")

SESSION_COOKIE: Final = "host_session"
SESSION_SECONDS: Final = 8 * 3600
#: Projects shown on each user's home page; they may open any project with their prefix.
PROJECTS: Final[Mapping[str, tuple[str, ...]]] = {
    "alice": ("alice-notes", "alice-website"),
    "bob": ("bob-api",),
}


class Logins:
    """Session cookies ``user.expiry.signature``, signed with HMAC-SHA256."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, user: str) -> str:
        payload = f"{user}.{int(time.time()) + SESSION_SECONDS}"
        return f"{payload}.{self._sign(payload)}"

    def user(self, value: str | None) -> str | None:
        """The user a cookie value was issued to, if it is genuine and not expired."""
        if not value or value.count(".") != 2:
            return None
        payload, _, signature = value.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        user, _, expiry = payload.partition(".")
        if not expiry.isdigit() or int(expiry) < time.time() or user not in PROJECTS:
            return None
        return user


LOGINS_KEY: Final = web.AppKey("host_app.logins", Logins)
PASSWORDS_KEY: Final = web.AppKey("host_app.passwords", dict[str, str])
PLUGIN_KEY: Final = web.AppKey("host_app.plugin", web.Application)


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def current_user(request: web.Request) -> str | None:
    return request.app[LOGINS_KEY].user(request.cookies.get(SESSION_COOKIE))


def may_open(user: str, output_project_id: str) -> bool:
    return output_project_id.startswith(f"{user}-")


def _same_origin(request: web.Request) -> bool:
    """A form post from another site is refused (browsers send Origin on POST)."""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='referrer' content='no-referrer'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(text=text, content_type="text/html", status=status)


_LOGIN_FORM: Final = (
    "<form method='post' action='/login'>"
    "<p><label>User <input name='user' autocomplete='username' required></label></p>"
    "<p><label>Password <input name='password' type='password' autocomplete='current-password'"
    " required></label></p><p><button>Log in</button></p></form>"
)


async def home(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    if user is None:
        return _redirect("/login")
    sessions = await get_session_manager(request.app[PLUGIN_KEY]).list_sessions()
    status = {
        s["output_project_id"]: s["status"]
        for s in sessions
        if may_open(user, s["output_project_id"])
    }
    projects = sorted({*PROJECTS[user], *status})
    items = "".join(
        f"<li><a href='/pty/?project={html.escape(p)}'>{html.escape(p)}</a>"
        f" ({html.escape(status.get(p, 'not started'))})</li>"
        for p in projects
    )
    body = (
        f"<p>Logged in as {html.escape(user)}.</p><ul>{items}</ul>"
        "<form method='post' action='/logout'><button>Log out</button></form>"
    )
    return _page("Projects", body)


async def login_form(request: web.Request) -> web.Response:
    return _page("Log in", _LOGIN_FORM)


async def login(request: web.Request) -> web.StreamResponse:
    if not _same_origin(request):
        return web.Response(status=403, text="cross-site login refused")
    form = await request.post()
    user, password = str(form.get("user", "")), str(form.get("password", ""))
    expected = request.app[PASSWORDS_KEY].get(user)
    # Compared even for unknown users, so timing does not tell which names exist.
    matches = hmac.compare_digest(password.encode(), (expected or secrets.token_hex(16)).encode())
    if expected is None or not matches:
        return _page("Log in", "<p>Wrong user or password.</p>" + _LOGIN_FORM, status=401)
    response = _redirect("/")
    response.set_cookie(
        SESSION_COOKIE,
        request.app[LOGINS_KEY].issue(user),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=request.secure,
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    if not _same_origin(request):
        return web.Response(status=403, text="cross-site logout refused")
    response = _redirect("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def owner_of(output_project_id: str) -> str | None:
    user, dash, _ = output_project_id.partition("-")
    return user if dash and user in PROJECTS else None


async def notify(output_project_id: str, state: ClaudeState, detail: str | None) -> None:
    """Claude's state changed: tell the project's owner. Here a log line; a real host would
    send a chat message, a mail or a push notification."""
    owner = owner_of(output_project_id)
    if owner is not None and state == ClaudeState.WAITING:
        what = detail or "Claude is waiting for you"
        log.warning("%s: project %s needs you: %s", owner, output_project_id, what)


def build_app(
    *,
    passwords: Mapping[str, str],
    database: Path,
    workdir: Path,
    command: list[str],
    claude: str | None = None,
    key: bytes | None = None,
) -> web.Application:
    """The host app with the plugin mounted at ``/pty``: each terminal runs ``command``, or
    the Claude Code executable ``claude`` when given."""
    host = web.Application()
    logins = Logins(key or secrets.token_bytes(32))
    host[LOGINS_KEY] = logins
    host[PASSWORDS_KEY] = dict(passwords)

    async def authenticate(request: web.Request) -> str | None:
        # The plugin's requests carry the host's cookie: the user is whoever logged in here.
        return logins.user(request.cookies.get(SESSION_COOKIE))

    async def authorize(principal: object, output_project_id: str, action: str) -> bool:
        # Every action (attach, input, resize, list, close) on one's own projects, nothing else.
        return isinstance(principal, str) and may_open(principal, output_project_id)

    plugin = create_app(
        Settings(
            database=database,
            command=ClaudeCommand(executable=claude) if claude else ShellCommand(command),
            workdir=workdir,
            authenticate=authenticate,
            authorize=authorize,
            on_claude_state=notify,
        )
    )
    host[PLUGIN_KEY] = plugin
    host.router.add_get("/", home)
    host.router.add_get("/login", login_form)
    host.router.add_post("/login", login)
    host.router.add_post("/logout", logout)
    host.add_subapp("/pty", plugin)
    return host


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A host app that mounts wxcode-pty at /pty.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--db", type=Path, default=Path("host_app.db"), help="the plugin's SQLite file"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("host_projects"), help="one folder per project"
    )
    parser.add_argument(
        "--command", default=None, help="what each terminal runs (default: your shell)"
    )
    parser.add_argument(
        "--claude", metavar="PATH", default=None, help="run this Claude Code executable instead"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    command = (
        shlex.split(args.command) if args.command else [os.environ.get("SHELL") or "/bin/sh", "-l"]
    )
    if shutil.which(command[0]) is None:
        parser.error(f"--command: executable not found: {command[0]}")
    if args.claude is not None and shutil.which(args.claude) is None:
        parser.error(f"--claude: executable not found: {args.claude}")
    from_env = {user: os.environ.get(f"HOST_APP_{user.upper()}_PASSWORD") for user in PROJECTS}
    passwords = {user: password or secrets.token_urlsafe(9) for user, password in from_env.items()}
    app = build_app(
        passwords=passwords,
        database=args.db,
        workdir=args.workdir.absolute(),
        command=command,
        claude=args.claude,
    )

    def announce(_: str) -> None:
        print(f"open http://{args.host}:{args.port}/", flush=True)
        for user, password in passwords.items():
            shown = f"from HOST_APP_{user.upper()}_PASSWORD" if from_env[user] else password
            print(f"log in as {user}, password {shown}", flush=True)

    web.run_app(
        app, host=args.host, port=args.port, access_log_class=RedactingAccessLogger, print=announce
    )


if __name__ == "__main__":
    main()
