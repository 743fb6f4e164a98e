"""``Client``: one WebSocket attached to a session, from its handshake to its close.

Owns the socket once the web layer has admitted it: the handshake (``hello``, the replay,
``replayed``), the one task that reads the socket (input and control messages, rate-limited),
and everything sent to it. Output goes straight into the socket while it keeps up (one frame
per chunk, ``wsframe.py``); once it backs up, frames wait in a bounded queue that the client's
pump sends in order, joining runs of output into larger frames. Past the bound the client is
closed with 4001 (it can reconnect with ``since``); so a slow client can only ever hurt itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable
from typing import Final

from aiohttp import WSMsgType, web

from . import protocol
from .buffer import Replay
from .commands import ClaudeState
from .metrics import Metrics
from .pty import ExitStatus, InputOverflow, PTYClosed
from .session import PTYSession
from .settings import Settings
from .termquery import strip_queries
from .wsframe import OP_TEXT, DirectWriter, OutputFrames, frame

__all__ = ["Client", "close_socket"]

log = logging.getLogger("wxcode_pty")

#: Consecutive output chunks joined into one frame by the pump, up to this size.
_COALESCE: Final = 256 * 1024
#: Refused input is reported at most this often (seconds) per client.
_ERROR_INTERVAL: Final = 1.0


async def close_socket(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    """Close with ``code``, bounded in time: a peer that does not answer is not waited for."""
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.wait_for(ws.close(code=code, message=reason.encode()), timeout=5)


def replay_at_end(replay: Replay, truncated: bool) -> Replay:
    """An empty replay at ``replay``'s end: what a screen snapshot stands for."""
    return Replay(replay.end, replay.end, b"", truncated)


class Client:
    """One WebSocket attached to one session."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        session: PTYSession,
        settings: Settings,
        metrics: Metrics,
        frames: OutputFrames,
        *,
        may_input: bool,
        may_resize: bool,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.ws = ws
        self.session = session
        self.settings = settings
        self.metrics = metrics
        self.may_input = may_input
        self.may_resize = may_resize
        #: The client's terminal size: the one it brought (``?cols=&rows=``), else the PTY's.
        self.cols, self.rows = size or (session.cols, session.rows)
        self._brought_size = size is not None
        self._frames = frames
        self._direct = DirectWriter(ws, request.transport)
        self._items: deque[bytes | str] = deque()
        self._queued = 0
        self._sending = False
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._tokens = settings.control_rate
        self._tokens_at = time.monotonic()
        self._last_error: dict[str, float] = {}
        self._resize_timer: asyncio.TimerHandle | None = None
        # A quarter of the bound: room for what arrives before reading pauses.
        self._high_water = settings.client_queue_limit // 4

    # -- the life of the connection ----------------------------------------------------------

    async def serve(self, since: int | None, same_run: bool) -> None:
        """Handshake, attach, then read the socket until it closes; detach and close."""
        session = self.session
        if self._brought_size and self.may_resize:
            session.fit_to(self.cols, self.rows)  # before the hello, which says the size
        replay = session.replay(since if same_run else None)
        truncated = replay.truncated or (since is not None and not same_run)
        # A client that continues its stream keeps its terminal; any other resets it and is
        # first put into the state in force at the replay's first byte. When the window does
        # not reach back to the start of the run, it gets the program's current screen instead
        # of the window's bytes (after a minute of a spinner they would only hold redraws).
        resuming = since is not None and same_run and not truncated
        prelude = b""
        if not resuming and replay.start > 0:
            await session.screen_caught_up()
            if not session.running:
                self.close(protocol.CLOSE_TRY_AGAIN_LATER, "session is ending")
                await self.pump()
                return
            screen_replay, snapshot = session.screen_replay()
            if snapshot is not None:
                replay = replay_at_end(screen_replay, truncated)
                prelude = snapshot
            else:
                replay = screen_replay
        if not resuming and not prelude:
            prelude = session.prelude(replay.start)
        # From here to the attach nothing awaits: the replay (or the screen) ends exactly
        # where live output begins.
        with self._direct.corked():
            self.send(
                protocol.encode(
                    "hello",
                    protocol=protocol.PROTOCOL_VERSION,
                    session_id=session.session_id,
                    output_project_id=session.output_project_id,
                    claude_session_id=session.claude_session_id,
                    offset=replay.end,
                    cols=session.cols,
                    rows=session.rows,
                    resumed=session.resumed,
                )
            )
            self.send(
                protocol.encode(
                    "replay",
                    **{
                        "from": replay.start,
                        "to": replay.end,
                        "truncated": truncated,
                        "prelude": len(prelude),
                    },
                )
            )
            if prelude:
                self.send(prelude)
            if replay.data:
                self.send(strip_queries(replay.data))
            self.send(protocol.encode("replayed", offset=replay.end))
            if session.claude_state is not None and session.claude_state_since is not None:
                self.send_claude_state(
                    session.claude_state, session.claude_state_detail, session.claude_state_since
                )
        if self.closing:
            # The replay alone passed the queue's bound: closed before it began.
            await self.pump()
            return
        session.attach(self)
        pump = asyncio.create_task(self.pump())
        # A session this connection started was held until now; its client is in place.
        session.release_output()
        try:
            await self._receive()
        except Exception:
            log.exception("websocket failed project=%s", session.output_project_id)
            self.close(protocol.CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self.close(protocol.CLOSE_NORMAL, "closed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pump), timeout=self.settings.send_timeout)
            if not pump.done():
                pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await pump

    def close(self, code: int, reason: str, *, flush: bool = False) -> None:
        """Detach and let the pump close the socket (after what is queued, with ``flush``)."""
        if self._close is not None:
            return
        self._close = (code, reason)
        if self._resize_timer is not None:
            self._resize_timer.cancel()
            self._resize_timer = None
        self.session.detach(self)
        if not flush:
            self._items.clear()
            self._queued = 0
        self._wake.set()

    @property
    def closing(self) -> bool:
        return self._close is not None

    # -- what the session calls (from the PTY's read callback: never blocks) -----------------

    @property
    def congested(self) -> bool:
        return self._queued > self._high_water

    def send(self, item: bytes | str) -> None:
        """Send a frame (bytes: terminal output, str: a control message) within the bound."""
        if self._close is not None:
            return
        if not self._items and not self._sending and self._direct.ready():
            if isinstance(item, bytes):
                self._direct.write(self._frames.of(item))
                self.metrics.bytes_out += len(item)
            else:
                self._direct.write(frame(OP_TEXT, item.encode()))
            return
        self._items.append(item)
        self._queued += len(item)
        if self._queued > self.settings.client_queue_limit:
            self.close(protocol.CLOSE_TOO_FAR_BEHIND, "client too far behind; reconnect with since")
        else:
            self._wake.set()

    send_output = send

    def send_claude_session(
        self, claude_session_id: str, previous: str | None, reason: str | None
    ) -> None:
        self.send(
            protocol.encode(
                "claude_session",
                claude_session_id=claude_session_id,
                previous=previous,
                reason=reason,
            )
        )

    def send_claude_state(self, state: ClaudeState, detail: str | None, since: float) -> None:
        self.send(protocol.encode("claude_state", state=state, detail=detail, since=since))

    def send_size(self, cols: int, rows: int) -> None:
        self.send(protocol.encode("size", cols=cols, rows=rows))

    def send_exit(self, status: ExitStatus) -> None:
        self.send(protocol.encode("exit", code=status.code, signal=status.signal))
        self.close(protocol.CLOSE_NORMAL, "program exited", flush=True)

    def send_moved(self) -> None:
        self.close(protocol.CLOSE_GOING_AWAY, "session moves to another host")

    def send_error(self, code: str, message: str, *, throttle: bool = False) -> None:
        if throttle:
            now = time.monotonic()
            if now - self._last_error.get(code, -_ERROR_INTERVAL) < _ERROR_INTERVAL:
                return
            self._last_error[code] = now
        self.send(protocol.encode("error", code=code, message=message))

    # -- reading the socket ------------------------------------------------------------------

    async def _receive(self) -> None:
        """The one reader of the socket: input and control messages, in order."""
        async for message in self.ws:
            if message.type is WSMsgType.BINARY:
                self._input(message.data)
            elif message.type is WSMsgType.TEXT:
                self._control(message.data)
            elif message.type is WSMsgType.ERROR:
                break

    def _control(self, text: str) -> None:
        if self._close is not None:
            return  # closed, still draining: it no longer acts on the session
        allowed = self._take_control_token()
        try:
            control = protocol.parse_control(text)
        except protocol.ProtocolError as exc:
            if exc.code == "unknown_type":
                # Newer clients may send types this server does not know: not fatal.
                self.send_error(exc.code, exc.message, throttle=True)
            else:
                self.send_error(exc.code, exc.message)
                self.close(protocol.CLOSE_POLICY, exc.message[:120], flush=True)
            return
        if not allowed:
            self.send_error("rate_limited", "too many control messages", throttle=True)
            if isinstance(control, protocol.Resize) and self.may_resize:
                # A dragged window sends many sizes; the last one must still apply.
                self._defer_resize(control.cols, control.rows)
            return
        if isinstance(control, protocol.Resize):
            if self.may_resize:
                self.cols, self.rows = control.cols, control.rows
                self.session.resize(self)
            else:
                self.send_error("forbidden", "resizing is not allowed", throttle=True)
        elif isinstance(control, protocol.Input):
            self._input(control.data.encode())
        else:
            self.send(protocol.encode("pong", id=control.id))

    def _input(self, data: bytes) -> None:
        if self._close is not None:
            return  # closed, still draining: it no longer acts on the session
        if not self.may_input:
            self.send_error("forbidden", "input is not allowed", throttle=True)
            return
        try:
            self.session.input(self, data)
        except InputOverflow as exc:
            self.send_error("input_overflow", str(exc), throttle=True)
            return
        except PTYClosed:
            return
        self.metrics.bytes_in += len(data)

    def _take_control_token(self) -> bool:
        now = time.monotonic()
        rate = self.settings.control_rate
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _defer_resize(self, cols: int, rows: int) -> None:
        """Apply the latest refused size once the rate limit allows another message."""
        self.cols, self.rows = cols, rows
        if self._resize_timer is None:

            def apply() -> None:
                self._resize_timer = None
                if self._close is None:
                    self.session.resize(self)

            delay = 1 / self.settings.control_rate
            self._resize_timer = asyncio.get_running_loop().call_later(delay, apply)

    # -- the pump: what could not go out at once ---------------------------------------------

    async def pump(self) -> None:
        """Send what is queued, in order; one frame per run of output chunks; then close."""
        try:
            await self._pump()
        except (ConnectionError, RuntimeError):
            # The transport is gone; the reader sees that too and ends the handler.
            self.close(protocol.CLOSE_INTERNAL_ERROR, "connection lost")
            self._direct.abort()

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
                    if self._queued < self._high_water // 4:
                        self.session.drained()
                else:
                    self._queued -= len(item)
                    self._sending = True
                    await self._bounded(ws.send_str(item))
                    self._sending = False
            if self._close is not None:
                code, reason = self._close
                await close_socket(ws, code, reason)
                return

    async def _bounded(self, send: Awaitable[None]) -> None:
        try:
            # asyncio.timeout, not wait_for: no extra task per frame.
            async with asyncio.timeout(self.settings.send_timeout):
                await send
        except TimeoutError:
            # The peer stopped reading: nothing more can be sent, not even a close frame.
            log.warning("abort project=%s reason=send_timeout", self.session.output_project_id)
            self._direct.abort()
            raise ConnectionResetError("send timed out") from None
