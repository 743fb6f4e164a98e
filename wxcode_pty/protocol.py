"""The WebSocket protocol, version 1: close codes, control messages, and their validation.

Binary frames carry terminal bytes both ways. Text frames carry JSON objects with a ``type``.
This module turns untrusted text frames into typed messages (or a ``ProtocolError`` that says
what was wrong) and builds the server's messages. It does no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_TOO_FAR_BEHIND",
    "CLOSE_TRY_AGAIN_LATER",
    "MAX_COLS",
    "MAX_ROWS",
    "PROTOCOL_VERSION",
    "Input",
    "Ping",
    "ProtocolError",
    "Resize",
    "clamp_size",
    "encode",
    "parse_control",
]

PROTOCOL_VERSION: Final = 1

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_TRY_AGAIN_LATER: Final = 1013
CLOSE_TOO_FAR_BEHIND: Final = 4001

#: Terminal sizes are clamped to this range; xterm.js itself tops out well below.
MIN_COLS: Final = 2
MIN_ROWS: Final = 1
MAX_COLS: Final = 1000
MAX_ROWS: Final = 500
#: A ping id is echoed back; keep it short.
_MAX_PING_ID = 128


class ProtocolError(Exception):
    """A control message was refused; ``code`` is the ``error`` message's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Resize:
    cols: int
    rows: int


@dataclass(frozen=True, slots=True)
class Input:
    data: str


@dataclass(frozen=True, slots=True)
class Ping:
    id: str | int | None


Control = Resize | Input | Ping


def _size_field(message: dict[str, object], name: str) -> int:
    value = message.get(name)
    # bool is an int in Python; true is no size.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError("bad_message", f"resize needs an integer {name!r}")
    return value


def clamp_size(cols: int, rows: int) -> tuple[int, int]:
    """Sizes out of range are clamped rather than refused: a tiny or huge window is no attack."""
    return max(MIN_COLS, min(MAX_COLS, cols)), max(MIN_ROWS, min(MAX_ROWS, rows))


def parse_control(text: str) -> Control:
    """A client's text frame as a message, or ProtocolError."""
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError("bad_json", "control messages must be JSON objects") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_message", "control messages must be JSON objects")
    kind = message.get("type")
    if kind == "resize":
        return Resize(*clamp_size(_size_field(message, "cols"), _size_field(message, "rows")))
    if kind == "input":
        data = message.get("data")
        if not isinstance(data, str):
            raise ProtocolError("bad_message", "input needs a string 'data'")
        try:
            data.encode()
        except UnicodeEncodeError:  # a lone surrogate from "\ud800" in the JSON
            raise ProtocolError("bad_message", "input 'data' is not valid Unicode") from None
        return Input(data)
    if kind == "ping":
        ping_id = message.get("id")
        if ping_id is not None and not (
            (isinstance(ping_id, str) and len(ping_id) <= _MAX_PING_ID)
            or (isinstance(ping_id, int) and not isinstance(ping_id, bool))
        ):
            raise ProtocolError("bad_message", "ping id must be a short string or an integer")
        return Ping(ping_id)
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "control messages need a string 'type'")
    raise ProtocolError("unknown_type", f"unknown message type {kind[:40]!r}")


def encode(kind: str, **fields: object) -> str:
    """A server message as a text frame."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))
