"""``ReplayBuffer``: the most recent output of one program, addressed by stream offset.

Offsets count bytes of the program's output since it started. The buffer keeps the last
``capacity`` of them; older bytes are evicted first in, first out. A reconnecting client asks
for "everything since offset N" and gets exactly that, or, when N was already evicted, the
oldest bytes still held and a ``truncated`` flag.

Where replay starts at the cut edge of the buffer (a first attach, or a truncated resume) it
starts at a safe boundary: never inside a UTF-8 character or an escape sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_CAPACITY", "Replay", "ReplayBuffer", "safe_start"]

DEFAULT_CAPACITY = 65536

#: How far to look for a safe boundary before settling for a mere UTF-8 boundary.
_BOUNDARY_SEARCH = 4096
_ESC = 0x1B


@dataclass(frozen=True, slots=True)
class Replay:
    """The stream bytes ``[start, end)`` (``data``), and whether a gap precedes them."""

    start: int
    end: int
    data: bytes
    truncated: bool


def safe_start(data: bytes | bytearray) -> int:
    """Index of the first byte where a terminal can start parsing ``data`` without context.

    An ESC always starts a fresh sequence, and a line feed or carriage return is never part
    of one that matters, so the first of those is safe. Bytes before it are a tail of
    something already evicted (a half escape sequence prints as garbage). Without either in
    reach, skip at least the UTF-8 continuation bytes.
    """
    window = data[:_BOUNDARY_SEARCH]
    candidates = [
        i for i in (window.find(b"\x1b"), window.find(b"\n"), window.find(b"\r")) if i >= 0
    ]
    if candidates:
        first = min(candidates)
        # Start after a line break, at an escape.
        return first if data[first] == _ESC else first + 1
    i = 0
    while i < min(4, len(data)) and 0x80 <= data[i] <= 0xBF:
        i += 1
    return i


class ReplayBuffer:
    """A byte-bounded FIFO of output with absolute offsets."""

    __slots__ = ("_data", "_start", "capacity")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._data = bytearray()
        self._start = 0

    @property
    def start(self) -> int:
        """Offset of the oldest byte still held."""
        return self._start

    @property
    def end(self) -> int:
        """Offset just after the newest byte: the total output so far."""
        return self._start + len(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def append(self, chunk: bytes) -> None:
        size = len(chunk)
        if size >= self.capacity:
            self._start += len(self._data) + size - self.capacity
            self._data = bytearray(chunk[size - self.capacity :])
            return
        self._data += chunk
        excess = len(self._data) - self.capacity
        if excess > 0:
            # Deleting from the front of a bytearray is O(1) in CPython: no copy per append.
            del self._data[:excess]
            self._start += excess

    def since(self, offset: int | None = None) -> Replay:
        """The bytes after ``offset``; with None, the whole buffer from a safe boundary.

        An ``offset`` beyond the end (from another run of the program) is treated as unknown.
        """
        end = self.end
        if offset is not None and self._start <= offset <= end:
            return Replay(offset, end, bytes(memoryview(self._data)[offset - self._start :]), False)
        truncated = offset is not None
        skip = safe_start(self._data) if self._start > 0 else 0
        start = self._start + skip
        return Replay(start, end, bytes(memoryview(self._data)[skip:]), truncated)
