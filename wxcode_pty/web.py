"""The aiohttp sub-application: WebSocket endpoint, REST API, terminal page, metrics.

``create_app(settings)`` returns an application for ``host.add_subapp(prefix, ...)`` (or to run
as the root). Its database connection and session manager live in its ``cleanup_ctx``; live
WebSockets are closed with 1001 in ``on_shutdown``. Every WebSocket has exactly one task reading
it (the handler). Output goes straight into the socket while the socket keeps up (one write
per frame, no task switch); once it backs up, frames wait in a bounded queue that the client's
pump sends in order, so a slow client can only ever hurt itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Final

from aiohttp import WSMsgType, web

from . import protocol
from .manager import InvalidProjectId, PTYSessionManager, SessionInfo, SessionLimitReached
from .metrics import Metrics
from .pty import ExitStatus, InputOverflow, PTYClosed, SpawnError
from .security import Gate, redact
from .session import PTYSession
from .settings import Settings, valid_project_id
from .store import SessionStore
from .termquery import strip_queries

__all__ = ["GATE_KEY", "MANAGER_KEY", "SETTINGS_KEY", "create_app", "get_session_manager"]

log = logging.getLogger("wxcode_pty")

SETTINGS_KEY: Final = web.AppKey("wxcode_pty.settings", Settings)
MANAGER_KEY: Final = web.AppKey("wxcode_pty.manager", PTYSessionManager)
GATE_KEY: Final = web.AppKey("wxcode_pty.gate", Gate)
METRICS_KEY: Final = web.AppKey("wxcode_pty.metrics", Metrics)
SOCKETS_KEY: Final = web.AppKey("wxcode_pty.sockets", weakref.WeakSet[web.WebSocketResponse])

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
#: Consecutive output chunks joined into one frame, up to this size.
_COALESCE: Final = 256 * 1024
#: Refused input is reported at most this often (seconds) per client.
_ERROR_INTERVAL: Final = 1.0


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
    app[SOCKETS_KEY] = weakref.WeakSet()
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
        await manager.close_all()
        await store.close()


async def _close_sockets(app: web.Application) -> None:
    registry: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS_KEY]
    sockets = list(registry)
    await asyncio.gather(
        *(_close_socket(ws, protocol.CLOSE_GOING_AWAY, "server shutting down") for ws in sockets)
    )


async def _close_socket(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.wait_for(ws.close(code=code, message=reason.encode()), timeout=5)


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
    project = request.match_info["project"]
    if not valid_project_id(project):
        request.app[METRICS_KEY].refuse("bad_id")
        raise web.HTTPBadRequest(reason="Bad Project Id")
    return project


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
    info = await get_session_manager(request.app).describe(project)
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
    if not await manager.close_session(project, forget=forget):
        raise web.HTTPNotFound(reason="Not Found")
    log.info("close project=%s forget=%s", project, forget)
    return web.json_response(await manager.describe(project))


async def _metrics(request: web.Request) -> web.Response:
    await _principal(request)
    text = request.app[METRICS_KEY].render(get_session_manager(request.app))
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


class _Client:
    """One WebSocket attached to a session: a bounded outbound queue and its pump."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        session: PTYSession,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.ws = ws
        self.request = request
        self.session = session
        self.settings = settings
        self.metrics = metrics
        self.cols = session.cols
        self.rows = session.rows
        self.may_input = False
        self.may_resize = False
        self._items: deque[bytes | str] = deque()
        self._queued = 0
        self._sending = False
        self._compressed = bool(ws.compress)  # negotiated in the upgrade, fixed from then on
        #: While set, frames for an idle socket gather here and go out in one write.
        self._corked: bytearray | None = None
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._tokens = settings.control_rate
        self._tokens_at = time.monotonic()
        self._last_error: dict[str, float] = {}
        self._resize_timer: asyncio.TimerHandle | None = None
        # A quarter of the bound: room for what arrives before reading pauses.
        self._high_water = settings.client_queue_limit // 4

    # SessionClient: called from the PTY's read callback; never blocks.

    @property
    def congested(self) -> bool:
        return self._queued > self._high_water

    @property
    def closing(self) -> bool:
        return self._close is not None

    def send(self, item: bytes | str) -> None:
        """Queue a frame (bytes: terminal output, str: a control message) within the bound."""
        if self._close is not None:
            return
        if not self._items and not self._sending and self._write_now(item):
            return
        self._items.append(item)
        self._queued += len(item)
        if self._queued > self.settings.client_queue_limit:
            self.close(protocol.CLOSE_TOO_FAR_BEHIND, "client too far behind; reconnect with since")
        else:
            self._wake.set()

    send_output = send_text = send

    def _write_now(self, item: bytes | str) -> bool:
        """Write ``item`` as one frame straight into an idle socket: no hop through the pump.

        Only when nothing is queued or being sent before it (order) and the socket has nothing
        buffered (so this adds one frame at most; the pump's sends bound the rest).
        """
        transport = self.request.transport
        ws = self.ws
        if (
            transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size()
            or ws.closed
            or self._compressed
        ):
            return False
        if isinstance(item, bytes):
            frame = _output_frame(item)
            self.metrics.bytes_out += len(item)
        else:
            frame = _frame(_OP_TEXT, item.encode())
        if self._corked is not None:
            self._corked += frame
        else:
            transport.write(frame)
        return True

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Send what is sent inside in one write (the handshake: three frames, one packet)."""
        self._corked = bytearray()
        try:
            yield
        finally:
            frames, self._corked = self._corked, None
            transport = self.request.transport
            if frames and transport is not None and not transport.is_closing():
                transport.write(frames)

    def send_claude_session(
        self, claude_session_id: str, previous: str | None, reason: str | None
    ) -> None:
        self.send_text(
            protocol.encode(
                "claude_session",
                claude_session_id=claude_session_id,
                previous=previous,
                reason=reason,
            )
        )

    def send_exit(self, status: ExitStatus) -> None:
        self.send_text(protocol.encode("exit", code=status.code, signal=status.signal))
        self.close(protocol.CLOSE_NORMAL, "program exited", flush=True)

    def send_error(self, code: str, message: str, *, throttle: bool = False) -> None:
        if throttle:
            now = time.monotonic()
            if now - self._last_error.get(code, -_ERROR_INTERVAL) < _ERROR_INTERVAL:
                return
            self._last_error[code] = now
        self.send_text(protocol.encode("error", code=code, message=message))

    def close(self, code: int, reason: str, *, flush: bool = False) -> None:
        """Detach and let the pump close the socket (after what is queued, with ``flush``)."""
        if self._close is not None:
            return
        self._close = (code, reason)
        self.session.detach(self)
        if not flush:
            self._items.clear()
            self._queued = 0
        self._wake.set()

    def defer_resize(self, manager: PTYSessionManager, cols: int, rows: int) -> None:
        """Apply the latest refused size once the rate limit allows another message."""
        self.cols, self.rows = cols, rows
        if self._resize_timer is None:
            delay = 1 / self.settings.control_rate

            def apply() -> None:
                self._resize_timer = None
                if self._close is None:
                    manager.resize(self.session, self.cols, self.rows)

            self._resize_timer = asyncio.get_running_loop().call_later(delay, apply)

    def take_control_token(self) -> bool:
        now = time.monotonic()
        rate = self.settings.control_rate
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def pump(self) -> None:
        """Send what is queued, in order; one frame per run of output chunks."""
        try:
            await self._pump()
        except (ConnectionError, RuntimeError):
            # The transport is gone; the reader sees that too and ends the handler.
            self.close(protocol.CLOSE_INTERNAL_ERROR, "connection lost")
            if self.request.transport is not None:
                self.request.transport.abort()

    async def _pump(self) -> None:
        ws = self.ws
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._items:
                item = self._items.popleft()
                if isinstance(item, bytes):
                    parts = [item]
                    size = len(item)
                    while self._items and size < _COALESCE and isinstance(self._items[0], bytes):
                        nxt = self._items.popleft()
                        parts.append(nxt)  # type: ignore[arg-type]
                        size += len(nxt)
                    self._queued -= size
                    self._sending = True
                    await self._bounded(
                        ws.send_bytes(parts[0] if len(parts) == 1 else b"".join(parts))
                    )
                    self._sending = False
                    self.metrics.bytes_out += size
                    if self._queued < self._high_water // 4 and self.session.pty.reading_paused:
                        self.session.drained()
                else:
                    self._queued -= len(item)
                    self._sending = True
                    await self._bounded(ws.send_str(item))
                    self._sending = False
            if self._close is not None:
                code, reason = self._close
                await _close_socket(ws, code, reason)
                return

    async def _bounded(self, send: Awaitable[None]) -> None:
        try:
            # asyncio.timeout, not wait_for: no extra task per frame.
            async with asyncio.timeout(self.settings.send_timeout):
                await send
        except TimeoutError:
            # The peer stopped reading: nothing more can be sent, not even a close frame.
            log.warning("abort project=%s reason=send_timeout", self.session.output_project_id)
            if self.request.transport is not None:
                self.request.transport.abort()
            raise ConnectionResetError("send timed out") from None


_OP_TEXT: Final = 0x1
_OP_BINARY: Final = 0x2


def _frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked, uncompressed WebSocket frame (RFC 6455 5.2), header and payload."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return header + payload


#: The last output frame built: a session hands the same chunk to each of its clients.
_last_output: tuple[bytes, bytes] = (b"", _frame(_OP_BINARY, b""))


def _output_frame(data: bytes) -> bytes:
    global _last_output
    if _last_output[0] is not data:
        _last_output = (data, _frame(_OP_BINARY, data))
    return _last_output[1]


def _at_connection_limit(app: web.Application) -> bool:
    return len(app[SOCKETS_KEY]) >= app[SETTINGS_KEY].max_connections


async def _refuse_connection(
    ws: web.WebSocketResponse, request: web.Request
) -> web.WebSocketResponse:
    return await _refuse(
        ws, request, protocol.CLOSE_TRY_AGAIN_LATER, "connection limit reached", "connection_limit"
    )


async def _refuse(
    ws: web.WebSocketResponse, request: web.Request, code: int, reason: str, metric: str
) -> web.WebSocketResponse:
    request.app[METRICS_KEY].refuse(metric)
    log.warning("refused reason=%s", metric)
    await _close_socket(ws, code, reason)
    return ws


async def _websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    gate = app[GATE_KEY]
    settings = app[SETTINGS_KEY]
    metrics = app[METRICS_KEY]
    # Cross-site WebSocket hijacking: refuse before the upgrade, before anything else runs.
    if not gate.origin_allowed(request):
        metrics.refuse("origin")
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


async def _open(ws: web.WebSocketResponse, request: web.Request) -> web.WebSocketResponse:
    """Identify, authorise, find or start the session, then attach."""
    app = request.app
    gate = app[GATE_KEY]
    project = request.match_info["project"]
    if not valid_project_id(project):
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
    except InvalidProjectId as exc:
        return await _refuse(ws, request, protocol.CLOSE_POLICY, str(exc), "bad_id")
    except SpawnError as exc:
        return await _refuse(
            ws, request, protocol.CLOSE_INTERNAL_ERROR, str(exc)[:120], "spawn_failed"
        )
    try:
        return await _attach(ws, request, session, principal, since, cols, rows)
    finally:
        if created:
            # Output of a session this request started waited for its client (or refusal).
            session.pty.resume_reading()


async def _attach(
    ws: web.WebSocketResponse,
    request: web.Request,
    session: PTYSession,
    principal: object,
    since: int | None,
    cols: int | None,
    rows: int | None,
) -> web.WebSocketResponse:
    app = request.app
    gate = app[GATE_KEY]
    settings = app[SETTINGS_KEY]
    metrics = app[METRICS_KEY]
    manager = get_session_manager(app)
    sockets = app[SOCKETS_KEY]
    project = session.output_project_id
    client = _Client(ws, request, session, settings, metrics)
    client.may_input = await gate.authorize(principal, project, "input")
    client.may_resize = await gate.authorize(principal, project, "resize")
    # Checked after the hooks' awaits: the session may have ended or filled up meanwhile.
    if session.closing is not None or not session.pty.running:
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
    if cols is not None and rows is not None and client.may_resize:
        client.cols, client.rows = cols, rows
        manager.resize(session, cols, rows)

    # From here to the client's registration nothing awaits: the replay ends exactly where
    # live output begins.
    same_run = request.query.get("session") in (None, session.session_id)
    replay = session.buffer.since(since if same_run else None)
    truncated = replay.truncated or (since is not None and not same_run)
    with client.corked():
        client.send_text(
            protocol.encode(
                "hello",
                protocol=protocol.PROTOCOL_VERSION,
                session_id=session.session_id,
                output_project_id=project,
                claude_session_id=session.claude_session_id,
                offset=replay.end,
                cols=session.cols,
                rows=session.rows,
                resumed=session.resumed,
            )
        )
        client.send_text(
            protocol.encode(
                "replay", **{"from": replay.start, "to": replay.end, "truncated": truncated}
            )
        )
        if replay.data:
            client.send_output(strip_queries(replay.data))
        client.send_text(protocol.encode("replayed", offset=replay.end))
    if client.closing:
        # The replay alone passed the client's queue bound: it was closed before it began.
        await client.pump()
        return ws
    session.attach(client)
    session.touch()
    sockets.add(ws)
    metrics.connections += 1
    log.info(
        "connect project=%s session=%s clients=%d since=%s",
        project,
        session.session_id,
        len(session.clients),
        since,
    )
    pump = asyncio.create_task(client.pump())
    # A session this request started was held until now; its client is in place.
    session.pty.resume_reading()
    try:
        await _receive(ws, client, manager)
    except Exception:
        log.exception("websocket failed project=%s", project)
        client.close(protocol.CLOSE_INTERNAL_ERROR, "internal error")
    finally:
        client.close(protocol.CLOSE_NORMAL, "closed")
        session.touch()
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump), timeout=settings.send_timeout)
        if not pump.done():
            pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await pump
        log.info("disconnect project=%s session=%s", project, session.session_id)
    return ws


async def _receive(ws: web.WebSocketResponse, client: _Client, manager: PTYSessionManager) -> None:
    """The one reader of the socket: input and control messages, in order."""
    session = client.session
    async for message in ws:
        if message.type is WSMsgType.BINARY:
            _write_input(client, manager, message.data)
        elif message.type is WSMsgType.TEXT:
            allowed = client.take_control_token()
            try:
                control = protocol.parse_control(message.data)
            except protocol.ProtocolError as exc:
                if exc.code == "unknown_type":
                    # Newer clients may send types this server does not know: not fatal.
                    client.send_error(exc.code, exc.message, throttle=True)
                else:
                    client.send_error(exc.code, exc.message)
                    client.close(protocol.CLOSE_POLICY, exc.message[:120], flush=True)
                continue
            if not allowed:
                client.send_error("rate_limited", "too many control messages", throttle=True)
                if isinstance(control, protocol.Resize) and client.may_resize:
                    # A dragged window sends many sizes; the last one must still apply.
                    client.defer_resize(manager, control.cols, control.rows)
                continue
            if isinstance(control, protocol.Resize):
                if client.may_resize:
                    client.cols, client.rows = control.cols, control.rows
                    manager.resize(session, control.cols, control.rows)
                else:
                    client.send_error("forbidden", "resizing is not allowed", throttle=True)
            elif isinstance(control, protocol.Input):
                _write_input(client, manager, control.data.encode())
            else:
                client.send_text(protocol.encode("pong", id=control.id))
        elif message.type is WSMsgType.ERROR:
            break


def _write_input(client: _Client, manager: PTYSessionManager, data: bytes) -> None:
    session = client.session
    if not client.may_input:
        client.send_error("forbidden", "input is not allowed", throttle=True)
        return
    # tmux's "latest": the client that types decides the size.
    if client.may_resize and (client.cols, client.rows) != (session.cols, session.rows):
        manager.resize(session, client.cols, client.rows)
    try:
        session.pty.write(data)
    except InputOverflow as exc:
        client.send_error("input_overflow", str(exc), throttle=True)
        return
    except PTYClosed:
        return
    client.metrics.bytes_in += len(data)
    session.touch()
