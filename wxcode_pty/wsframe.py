"""Server WebSocket frames written straight into the connection's transport.

Output goes out from the PTY's read callback itself: one RFC 6455 frame per chunk, header and
payload in one ``transport.write``, with no task switch. aiohttp's ``send_bytes`` is a
coroutine (a task step per frame) that writes header and payload apart; for a stream of small
PTY reads that difference is most of the server's cost (bench/README.md).

Writing past aiohttp's ``WebSocketWriter`` is safe under three facts of aiohttp, which
``tests/test_wsframe.py`` checks against aiohttp's own reader on every version CI runs (the
declared minimum and the latest):

1. Without compression the writer keeps no state between frames that a frame written past it
   could upset: it only counts bytes to pace its own drains, and the plugin never sends
   fragmented messages.
2. Compression (permessage-deflate) is settled in the upgrade and fixed from then on; a
   compressed connection is never written to here (its frames need the writer's deflate state).
3. ``WebSocketResponse.close()`` marks the response closed before its first await, so no frame
   written here can follow a close frame.

A frame is written here only while nothing else can be in flight on the connection: the
caller's own queue is empty, and the transport has nothing buffered (so each direct write adds
one frame at most; a peer that stops reading pushes the caller back onto its bounded queue).
"""

from __future__ import annotations

import contextlib
import struct
from asyncio import BaseTransport, Transport
from collections.abc import Iterator
from typing import Final

from aiohttp import web

__all__ = ["OP_BINARY", "OP_TEXT", "DirectWriter", "OutputFrames", "frame"]

OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked, uncompressed frame (RFC 6455 section 5.2), header and payload."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return header + payload


class OutputFrames:
    """The binary frame of the latest output chunk: a session hands the same chunk to each of
    its clients, and the frame is built once for all of them. One per plugin application (one
    event loop); the chunk is held, so its identity cannot be reused while it is cached."""

    __slots__ = ("_chunk", "_frame")

    def __init__(self) -> None:
        self._chunk = b""
        self._frame = frame(OP_BINARY, b"")

    def of(self, chunk: bytes) -> bytes:
        if self._chunk is not chunk:
            self._chunk = chunk
            self._frame = frame(OP_BINARY, chunk)
        return self._frame


class DirectWriter:
    """Writes whole frames into one WebSocket's transport while that is safe (see above)."""

    __slots__ = ("_compressed", "_corked", "_transport", "_ws")

    def __init__(self, ws: web.WebSocketResponse, transport: BaseTransport | None) -> None:
        self._ws = ws
        self._transport = transport if isinstance(transport, Transport) else None
        # Negotiated in the upgrade, fixed from then on.
        self._compressed = bool(ws.compress)
        #: While set, frames gather here and go out in one write.
        self._corked: bytearray | None = None

    def ready(self) -> bool:
        """May a frame be written now? (The caller has nothing queued before it.)"""
        transport = self._transport
        return not (
            self._compressed
            or transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size()
            or self._ws.closed
        )

    def write(self, data: bytes) -> None:
        """Write one or more whole frames (only after :meth:`ready` said yes)."""
        if self._corked is not None:
            self._corked += data
        elif self._transport is not None:
            self._transport.write(data)

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Frames written inside go out in one write (a handshake: several frames, one packet)."""
        self._corked = bytearray()
        try:
            yield
        finally:
            frames, self._corked = self._corked, None
            transport = self._transport
            if frames and transport is not None and not transport.is_closing():
                transport.write(frames)

    def abort(self) -> None:
        """Drop the connection at once (a peer that stopped reading)."""
        if self._transport is not None:
            self._transport.abort()
