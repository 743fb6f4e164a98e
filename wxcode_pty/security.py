"""Who may talk to the plugin: Host and Origin allowlists, authentication, authorization.

Everything fails closed: a missing header, an unknown host, a hook that raises, all mean "no".
Without hooks, a built-in token guards the plugin: ``?token=`` on a page URL is traded for an
HttpOnly, SameSite=Strict cookie (and a redirect that drops it from the address bar); scripts
send ``Authorization: Bearer``. Tokens never reach a log line: see :class:`RedactingAccessLogger`.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .settings import Settings

__all__ = [
    "ANONYMOUS",
    "COOKIE_NAME",
    "Gate",
    "RedactingAccessLogger",
    "redact",
]

log = logging.getLogger("wxcode_pty")

COOKIE_NAME: Final = "wxcode_pty_token"
_LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SECRET_QUERY = re.compile(r"(?i)([?&](?:token|access_token)=)[^&\s\"]*")


@dataclass(frozen=True, slots=True)
class _Anonymous:
    """The principal of a plugin whose token is turned off, or of a valid token."""

    name: str = "token"


ANONYMOUS: Final = _Anonymous()


def redact(text: str) -> str:
    """``text`` with the values of ``token=`` query parameters replaced."""
    return _SECRET_QUERY.sub(r"\1[redacted]", text)


class RedactingAccessLogger(AbstractAccessLogger):
    """An access log line per request, without query strings' secrets or any header."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %.1fms",
            request.remote,
            request.method,
            redact(request.path_qs),
            response.status,
            time * 1000,
        )


def _split_host(host: str) -> tuple[str, int | None]:
    """``host[:port]`` (with IPv6 in brackets) as (lower-case host, port)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        name, rest = host[: end + 1], host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        name, port = host.split(":")
    else:
        name, port = host, ""
    if port and not port.isdigit():
        return name, -1
    return name, int(port) if port else None


def _scheme_and_host(origin: str) -> tuple[str, str]:
    scheme, _, host = origin.rstrip("/").partition("://")
    return scheme, host


def _origin_key(scheme: str, host: str) -> tuple[str, str, int | None] | None:
    name, port = _split_host(host)
    if not name or port == -1:
        return None
    scheme = scheme.lower()
    return scheme, name, port if port is not None else _DEFAULT_PORTS.get(scheme)


class Gate:
    """The plugin's checks, bound to its settings and token."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.token: str | None = None
        if settings.authenticate is None and settings.token_required:
            self.token = settings.token or secrets.token_urlsafe(32)
        # The allowlists in the form requests are compared in, worked out once.
        self._hosts = (
            None if settings.allowed_hosts is None else {h.lower() for h in settings.allowed_hosts}
        )
        self._origins = (
            None
            if settings.allowed_origins is None
            else {_origin_key(*_scheme_and_host(item)) for item in settings.allowed_origins}
        )

    # -- Host and Origin ---------------------------------------------------------------------

    def host_allowed(self, request: web.BaseRequest) -> bool:
        """The Host header names this server (DNS rebinding defence)."""
        host = request.headers.get("Host")
        if not host:
            return False
        name, port = _split_host(host)
        if port == -1:
            return False
        if self._hosts is not None:
            return name in self._hosts
        if name in _LOCAL_HOSTS:
            return True
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple) and sockname:
            bound = str(sockname[0]).lower()
            return name in (bound, f"[{bound}]")
        return False

    def origin_allowed(self, request: web.BaseRequest) -> bool:
        """The Origin header is exactly an allowed origin (by default: this server's own)."""
        origin = request.headers.get("Origin")
        if not origin or origin == "null" or "://" not in origin:
            return False
        scheme, _, host = origin.partition("://")
        if "/" in host or "@" in host:
            return False
        key = _origin_key(scheme, host)
        if key is None:
            return False
        if self._origins is not None:
            return key in self._origins
        own = _origin_key(request.scheme, request.headers.get("Host", ""))
        return own is not None and key == own

    # -- authentication ----------------------------------------------------------------------

    def token_matches(self, candidate: str | None) -> bool:
        return (
            self.token is not None
            and candidate is not None
            and hmac.compare_digest(candidate.encode(), self.token.encode())
        )

    async def authenticate(self, request: web.Request) -> object | None:
        """The request's principal, or None. Never raises."""
        hook = self.settings.authenticate
        if hook is not None:
            try:
                return await hook(request)
            except Exception:
                log.warning("authenticate hook raised; request refused", exc_info=True)
                return None
        if self.token is None:
            return ANONYMOUS
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer " and self.token_matches(auth[7:].strip()):
            return ANONYMOUS
        if self.token_matches(request.cookies.get(COOKIE_NAME)):
            return ANONYMOUS
        return None

    async def authorize(self, principal: object, output_project_id: str, action: str) -> bool:
        """May ``principal`` do ``action`` on the project? Never raises."""
        hook = self.settings.authorize
        if hook is None:
            return True
        try:
            return (await hook(principal, output_project_id, action)) is True
        except Exception:
            log.warning("authorize hook raised; %s refused", action, exc_info=True)
            return False

    def exchange_url_token(self, request: web.Request) -> web.StreamResponse | None:
        """A redirect that trades a valid ``?token=`` for a cookie; None without one."""
        if "token" not in request.query:
            return None
        if not self.token_matches(request.query.get("token")):
            return None
        query = request.url.query.copy()
        query.popall("token")
        target = request.rel_url.with_query(query)
        response = web.Response(status=302, headers={"Location": str(target)})
        response.set_cookie(
            COOKIE_NAME,
            self.token or "",
            httponly=True,
            samesite="Strict",
            # The page's folder (``/`` or a mount prefix's ``/PREFIX/``): its WebSockets and
            # API calls are under it, and other applications on the host never see the token.
            path=request.path[: request.path.rfind("/") + 1] or "/",
            secure=request.secure,
        )
        response.headers["Referrer-Policy"] = "no-referrer"
        return response
