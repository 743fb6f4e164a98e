"""The aiohttp sub-application: routes, middleware, the REST API, the page, metrics.

``create_app(settings)`` returns an application for ``host.add_subapp(prefix, ...)`` (or to run
as the root). Its database connection and session manager live in its ``cleanup_ctx``; live
WebSockets are closed with 1001 in ``on_shutdown``. A WebSocket is checked here (Origin, id,
authentication, authorization, limits), its session found or started through the manager, and
then handed to a ``Client`` (``client.py``), which owns it from its handshake to its close.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from . import protocol
from .client import Client, close_socket
from .forward import Forwarder
from .manager import (
    HostFenced,
    InvalidProjectId,
    OwnedElsewhere,
    PTYSessionManager,
    SessionInfo,
    SessionLimitReached,
    ShuttingDown,
    check_project_id,
)
from .metrics import Metrics
from .pty import SpawnError
from .security import Gate, redact
from .settings import Settings
from .store import SessionStore
from .wsframe import OutputFrames

__all__ = ["GATE_KEY", "MANAGER_KEY", "SETTINGS_KEY", "create_app", "get_session_manager"]

log = logging.getLogger("wxcode_pty")

SETTINGS_KEY: Final = web.AppKey("wxcode_pty.settings", Settings)
MANAGER_KEY: Final = web.AppKey("wxcode_pty.manager", PTYSessionManager)
GATE_KEY: Final = web.AppKey("wxcode_pty.gate", Gate)
METRICS_KEY: Final = web.AppKey("wxcode_pty.metrics", Metrics)
FRAMES_KEY: Final = web.AppKey("wxcode_pty.frames", OutputFrames)
SOCKETS_KEY: Final = web.AppKey("wxcode_pty.sockets", weakref.WeakSet[web.WebSocketResponse])
FORWARDER_KEY: Final = web.AppKey("wxcode_pty.forwarder", Forwarder)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        # xterm.js's DOM renderer adds <style> elements for its theme.
        "style-src 'self' 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "Cache-Control": "no-store",
}


def get_session_manager(app: web.Application) -> PTYSessionManager:
    """The session manager of a plugin application (while it runs)."""
    return app[MANAGER_KEY]


def create_app(settings: Settings | None = None) -> web.Application:
    """The plugin as an aiohttp application, to mount with ``add_subapp`` or run as root."""
    settings = settings or Settings()
    app = web.Application(middlewares=[_guard])
    app[SETTINGS_KEY] = settings
    app[GATE_KEY] = Gate(settings)
    app[METRICS_KEY] = Metrics()
    app[FRAMES_KEY] = OutputFrames()
    app[SOCKETS_KEY] = weakref.WeakSet()
    app[FORWARDER_KEY] = Forwarder(heartbeat=settings.heartbeat)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/", _page)
    app.router.add_get("/ws/{project}", _websocket)
    app.router.add_get("/api/sessions", _list_sessions)
    app.router.add_get("/api/sessions/{project}", _get_session)
    app.router.add_post("/api/sessions/{project}", _post_session)
    app.router.add_delete("/api/sessions/{project}", _delete_session)
    app.router.add_get("/metrics", _metrics)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    store = await SessionStore.open(settings.database)
    manager = PTYSessionManager(settings, store)
    app[MANAGER_KEY] = manager
    try:
        await manager.start()
        yield
    finally:
        try:
            await manager.close_all()
        finally:
            await app[FORWARDER_KEY].close()
            await store.close()


async def _close_sockets(app: web.Application) -> None:
    # From now on no socket is admitted and no session started.
    get_session_manager(app).stop_accepting()
    registry: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS_KEY]
    sockets = list(registry)
    await asyncio.gather(
        *(close_socket(ws, protocol.CLOSE_GOING_AWAY, "server shutting down") for ws in sockets)
    )


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Host check for everything; JSON errors; no-referrer on every response."""
    gate = request.app[GATE_KEY]
    metrics = request.app[METRICS_KEY]
    if not gate.host_allowed(request):
        metrics.refuse("host")
        log.warning("refused reason=host path=%s", redact(request.path))
        response: web.StreamResponse = _error(403, "host_not_allowed", "this Host is not allowed")
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        except Exception:
            log.exception("internal error on %s %s", request.method, redact(request.path))
            response = _error(500, "internal_error", "internal server error")
    if not response.prepared:
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


# -- the page and the REST API ---------------------------------------------------------------


async def _page(request: web.Request) -> web.StreamResponse:
    exchange = request.app[GATE_KEY].exchange_url_token(request)
    if exchange is not None:
        return exchange
    return web.FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)


async def _principal(request: web.Request) -> object:
    principal = await request.app[GATE_KEY].authenticate(request)
    if not principal:
        request.app[METRICS_KEY].refuse("auth")
        log.warning("refused reason=auth path=%s", redact(request.path))
        raise web.HTTPUnauthorized(reason="Unauthorized")
    return principal


def _project(request: web.Request) -> str:
    """The request's project id, checked before any lookup or spawn."""
    try:
        return check_project_id(request.match_info["project"])
    except InvalidProjectId:
        request.app[METRICS_KEY].refuse("bad_id")
        raise web.HTTPBadRequest(reason="Bad Project Id") from None


async def _allowed(request: web.Request, principal: object, project: str, action: str) -> None:
    """Refuse with 404, whether or not the project exists: nothing is revealed."""
    if not await request.app[GATE_KEY].authorize(principal, project, action):
        request.app[METRICS_KEY].refuse("forbidden")
        log.warning("refused reason=forbidden action=%s", action)
        raise web.HTTPNotFound(reason="Not Found")


def _same_origin_write(request: web.Request) -> None:
    """Browsers send Origin on POST and DELETE; a foreign one is cross-site request forgery."""
    if "Origin" in request.headers and not request.app[GATE_KEY].origin_allowed(request):
        request.app[METRICS_KEY].refuse("origin")
        raise web.HTTPForbidden(reason="Origin Not Allowed")


def _may_forward(request: web.Request, moved: OwnedElsewhere) -> bool:
    """Whether a request may go to ``moved.address``: never a second hop (the owner changed
    after the first), never to no address (the owner gave none, or its lease is lapsing),
    never back to this host (two hosts advertising one address: a configuration error)."""
    settings = request.app[SETTINGS_KEY]
    if moved.address is None or request.app[FORWARDER_KEY].forwarded(request):
        return False
    if moved.address.rstrip("/") == (settings.advertise_url or "").rstrip("/"):
        log.error("another host advertises this host's own address %s", moved.address)
        return False
    return get_session_manager(request.app).lease is not None


async def _forward(request: web.Request, moved: OwnedElsewhere, path: str) -> web.Response:
    """Pass a REST call to the host that owns its project (SPEC 12)."""
    if not _may_forward(request, moved):
        return _error(503, "owner_unavailable", f"{moved}; try again")
    forwarder = request.app[FORWARDER_KEY]
    lease = get_session_manager(request.app).lease
    assert lease is not None and moved.address is not None
    return await forwarder.http(request, moved.address, path, lease.host_id or "")


async def _list_sessions(request: web.Request) -> web.Response:
    principal = await _principal(request)
    gate = request.app[GATE_KEY]
    visible: list[SessionInfo] = []
    for info in await get_session_manager(request.app).list_sessions():
        if await gate.authorize(principal, info["output_project_id"], "list"):
            visible.append(info)
    return web.json_response(visible)


async def _get_session(request: web.Request) -> web.Response:
    project = _project(request)
    principal = await _principal(request)
    await _allowed(request, principal, project, "list")
    manager = get_session_manager(request.app)
    moved = await manager.owner_elsewhere(project)
    if moved is not None:
        return await _forward(request, moved, f"/api/sessions/{project}")
    info = await manager.describe(project)
    if info is None:
        raise web.HTTPNotFound(reason="Not Found")
    return web.json_response(info)


async def _post_session(request: web.Request) -> web.Response:
    project = _project(request)
    _same_origin_write(request)
    principal = await _principal(request)
    await _allowed(request, principal, project, "attach")
    manager = get_session_manager(request.app)
    cols, rows = _query_size(request)
    try:
        _, created = await manager.ensure_session(project, cols=cols, rows=rows)
    except SessionLimitReached as exc:
        request.app[METRICS_KEY].refuse("session_limit")
        return _error(503, "session_limit", str(exc))
    except ShuttingDown as exc:
        return _error(503, "shutting_down", str(exc))
    except HostFenced as exc:
        return _error(503, "host_fenced", str(exc))
    except OwnedElsewhere as moved:
        return await _forward(request, moved, f"/api/sessions/{project}")
    except SpawnError as exc:
        return _error(500, "spawn_failed", str(exc))
    info = await manager.describe(project)
    return web.json_response(info, status=201 if created else 200)


async def _delete_session(request: web.Request) -> web.Response:
    project = _project(request)
    _same_origin_write(request)
    principal = await _principal(request)
    await _allowed(request, principal, project, "close")
    manager = get_session_manager(request.app)
    forget = request.query.get("forget") in ("1", "true", "yes")
    try:
        closed = await manager.close_session(project, forget=forget)
    except OwnedElsewhere as moved:
        return await _forward(request, moved, f"/api/sessions/{project}")
    if not closed:
        raise web.HTTPNotFound(reason="Not Found")
    log.info("close project=%s forget=%s", project, forget)
    return web.json_response(await manager.describe(project))


async def _metrics(request: web.Request) -> web.Response:
    await _principal(request)
    text = request.app[METRICS_KEY].render(
        get_session_manager(request.app), request.app[FORWARDER_KEY].forwards
    )
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


def _query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ValueError(f"{name} must be a non-negative integer")
    return int(raw)


def _query_size(request: web.Request) -> tuple[int | None, int | None]:
    try:
        cols, rows = _query_int(request, "cols"), _query_int(request, "rows")
    except ValueError:
        return None, None
    if cols is None or rows is None:
        return None, None
    return protocol.clamp_size(cols, rows)


# -- the WebSocket ---------------------------------------------------------------------------


def _at_connection_limit(app: web.Application) -> bool:
    return len(app[SOCKETS_KEY]) >= app[SETTINGS_KEY].max_connections


async def _refuse(
    ws: web.WebSocketResponse, request: web.Request, code: int, reason: str, metric: str
) -> web.WebSocketResponse:
    request.app[METRICS_KEY].refuse(metric)
    log.warning("refused reason=%s", metric)
    await close_socket(ws, code, reason)
    return ws


async def _refuse_connection(
    ws: web.WebSocketResponse, request: web.Request
) -> web.WebSocketResponse:
    return await _refuse(
        ws, request, protocol.CLOSE_TRY_AGAIN_LATER, "connection limit reached", "connection_limit"
    )


async def _websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS_KEY]
    # Cross-site WebSocket hijacking: refuse before the upgrade, before anything else runs.
    if not app[GATE_KEY].origin_allowed(request):
        app[METRICS_KEY].refuse("origin")
        log.warning("refused reason=origin")
        return _error(403, "origin_not_allowed", "this Origin is not allowed")

    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat,
        max_msg_size=settings.max_frame_size,
        compress=settings.compress,
    )
    await ws.prepare(request)
    try:
        return await _open(ws, request)
    except Exception:
        # Past the upgrade an HTTP error page would corrupt the stream: close the socket.
        log.exception("websocket failed path=%s", redact(request.path))
        return await _refuse(
            ws, request, protocol.CLOSE_INTERNAL_ERROR, "internal error", "internal_error"
        )


async def _forward_socket(
    ws: web.WebSocketResponse, request: web.Request, moved: OwnedElsewhere, project: str
) -> web.WebSocketResponse:
    """Relay the WebSocket to the host that owns its project (SPEC 12)."""
    app = request.app
    if not _may_forward(request, moved):
        return await _refuse(
            ws, request, protocol.CLOSE_TRY_AGAIN_LATER, "owner changing; try again", "moved"
        )
    forwarder = app[FORWARDER_KEY]
    lease = get_session_manager(app).lease
    assert lease is not None and moved.address is not None
    app[SOCKETS_KEY].add(ws)
    log.info("forward project=%s to=%s", project, moved.address)
    await forwarder.websocket(ws, request, moved.address, f"/ws/{project}", lease.host_id or "")
    return ws


async def _open(ws: web.WebSocketResponse, request: web.Request) -> web.WebSocketResponse:
    """Identify, authorise, find or start the session, then hand the socket to a client."""
    app = request.app
    gate = app[GATE_KEY]
    settings = app[SETTINGS_KEY]
    metrics = app[METRICS_KEY]
    try:
        project = check_project_id(request.match_info["project"])
    except InvalidProjectId:
        return await _refuse(ws, request, protocol.CLOSE_POLICY, "invalid project id", "bad_id")
    principal = await gate.authenticate(request)
    if not principal:
        return await _refuse(ws, request, protocol.CLOSE_POLICY, "not authorised", "auth")
    if not await gate.authorize(principal, project, "attach"):
        return await _refuse(ws, request, protocol.CLOSE_POLICY, "not authorised", "forbidden")
    if _at_connection_limit(app):
        return await _refuse_connection(ws, request)
    try:
        since = _query_int(request, "since")
    except ValueError as exc:
        return await _refuse(ws, request, protocol.CLOSE_POLICY, str(exc), "bad_since")
    cols, rows = _query_size(request)
    manager = get_session_manager(app)
    try:
        session, created = await manager.ensure_session(
            project, cols=cols, rows=rows, hold_output=True
        )
    except SessionLimitReached as exc:
        return await _refuse(ws, request, protocol.CLOSE_TRY_AGAIN_LATER, str(exc), "session_limit")
    except ShuttingDown as exc:
        return await _refuse(ws, request, protocol.CLOSE_GOING_AWAY, str(exc), "shutting_down")
    except HostFenced as exc:
        return await _refuse(ws, request, protocol.CLOSE_TRY_AGAIN_LATER, str(exc), "fenced")
    except OwnedElsewhere as moved:
        return await _forward_socket(ws, request, moved, project)
    except SpawnError as exc:
        return await _refuse(
            ws, request, protocol.CLOSE_INTERNAL_ERROR, str(exc)[:120], "spawn_failed"
        )
    try:
        client = Client(
            ws,
            request,
            session,
            settings,
            metrics,
            app[FRAMES_KEY],
            may_input=await gate.authorize(principal, project, "input"),
            may_resize=await gate.authorize(principal, project, "resize"),
            size=(cols, rows) if cols is not None and rows is not None else None,
        )
        # Checked after the hooks' awaits: the session may have ended or filled up meanwhile.
        if not session.running:
            return await _refuse(
                ws, request, protocol.CLOSE_TRY_AGAIN_LATER, "session is ending", "ending"
            )
        if len(session.clients) >= settings.max_clients_per_session:
            return await _refuse(
                ws,
                request,
                protocol.CLOSE_TRY_AGAIN_LATER,
                "client limit reached for this session",
                "client_limit",
            )
        if _at_connection_limit(app):
            return await _refuse_connection(ws, request)
        if not manager.accepting:
            # Shutdown began while this request waited: its sockets were closed without it.
            return await _refuse(
                ws, request, protocol.CLOSE_GOING_AWAY, "server shutting down", "shutting_down"
            )
        app[SOCKETS_KEY].add(ws)
        metrics.connections += 1
        same_run = request.query.get("session") in (None, session.session_id)
        log.info(
            "connect project=%s session=%s clients=%d since=%s",
            project,
            session.session_id,
            len(session.clients) + 1,
            since,
        )
        await client.serve(since, same_run)
        log.info("disconnect project=%s session=%s", project, session.session_id)
        return ws
    finally:
        if created:
            # Output of a session this request started waited for its client (or refusal).
            session.release_output()
