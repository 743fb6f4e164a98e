"""``ReplayBuffer``: the most recent output of one program, addressed by stream offset.

Offsets count bytes of the program's output since it started. The buffer keeps the last
``capacity`` of them; older bytes are evicted first in, first out. A reconnecting client asks
for "everything since offset N" and gets exactly that, or, when N was already evicted, the
oldest bytes still held and a ``truncated`` flag.

Where replay starts at the cut edge of the buffer (a first attach after eviction, or a truncated
resume) it starts at a safe boundary: never inside a UTF-8 character or an escape sequence, and
no later than that needs. The boundary is exact, not a guess. It follows the parser of xterm.js
(the DEC/VT500 state machine behind a UTF-8 decoder; see :mod:`wxcode_pty.termquery`), whose
state at the cut depends only on the evicted bytes since the last evicted ESC: an ESC starts a
new sequence whatever was in progress, and leaves the decoder between characters. So:

* ``append`` keeps those bytes, the *carry*, with a C-speed ``rfind`` and a slice: nearly free.
  When a stretch without an ESC makes them longer than :data:`_CARRY_MAX`, they are parsed once
  and replaced by a few bytes that leave the parser in the same state (``ESC ]`` inside an OSC
  string, nothing in the ground state, plus an unfinished character's first bytes). In the
  ground state more output without an ESC costs a search for a C1 introducer. Nothing is ever
  cut from the carry, so an over-long string (a 100 KiB OSC 52 or sixel DCS) is followed
  exactly too.
* At replay, the parser runs over the carry and on into the buffer: if the cut is in the ground
  state, the replay starts at the cut, after the continuation bytes of a cut character (at most
  3); if a sequence is pending, it starts right after the byte that ends it (a final byte, BEL
  or ST, CAN or SUB), or at an ESC or C1 introducer that starts a new one. A sequence still
  pending at the end of the buffer leaves nothing to replay: every byte held belongs to it.

Text is never left out because its line has no line break in the buffer: a 20,000-character
line cut by the buffer replays from the cut. What a cut sequence did is lost with it, including
C0 controls that xterm.js executes inside a control sequence (``ESC [ 1 LF m``): such bytes are
not replayed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_CAPACITY", "Replay", "ReplayBuffer", "safe_start"]

DEFAULT_CAPACITY = 65536

#: The longest carry kept as it is; a longer one is parsed and replaced by its canonical form.
_CARRY_MAX = 4096
_ESC = 0x1B


@dataclass(frozen=True, slots=True)
class Replay:
    """The stream bytes ``[start, end)`` (``data``), and whether a gap precedes them."""

    start: int
    end: int
    data: bytes
    truncated: bool


# -- xterm.js's parser ------------------------------------------------------------------------
# States of xterm.js's EscapeSequenceParser (src/common/parser/Constants.ts), same numbers.
(
    _GROUND,
    _ESCAPE,
    _ESCAPE_INTERMEDIATE,
    _CSI_ENTRY,
    _CSI_PARAM,
    _CSI_INTERMEDIATE,
    _CSI_IGNORE,
    _SOS_PM_APC_STRING,
    _OSC_STRING,
    _DCS_ENTRY,
    _DCS_PARAM,
    _DCS_IGNORE,
    _DCS_INTERMEDIATE,
    _DCS_PASSTHROUGH,
) = range(14)

#: What the parser's table uses for every code point from U+00A0 on.
_NON_ASCII = 0xA0
#: ESC and the C1 code points that start a sequence from any state: DCS, SOS, CSI, OSC, PM, APC.
_INTRODUCERS = frozenset({_ESC, 0x90, 0x98, 0x9B, 0x9D, 0x9E, 0x9F})
#: A C1 introducer as xterm.js sees it: a code point, which UTF-8 encodes as C2 xx.
_C1_INTRODUCER = re.compile(rb"\xc2[\x90\x98\x9b\x9d-\x9f]")
_C1_INTRODUCER_SECOND = b"\x90\x98\x9b\x9d\x9e\x9f"
#: Sequences that end in the ground state whatever came before: the common CSI and escape
#: forms, and an OSC string ended by BEL or ST. One match passes over them.
_SIMPLE = re.compile(
    rb"\x1b(?:\[[0-?]*+[ -/]*+[@-~]|[ -/]++[0-~]|[0-OQ-WYZ\\`-~]"
    rb"|\][^\x07\x18\x1a\x1b\xc2]*+(?:\x07|\x1b\\))"
)


def _find_c1_introducer(data: bytes | bytearray, start: int, end: int) -> int:
    """Index of the first C1 introducer wholly in ``data[start:end]``, or -1."""
    # A C2 byte is rare in most output, and ``find`` is much faster than a regex search.
    first = data.find(b"\xc2", start, end - 1)
    if first < 0:
        return -1
    match = _C1_INTRODUCER.search(data, first, end)
    return -1 if match is None else match.start()


def _transition_table() -> tuple[bytes, ...]:
    """The next state for each state and code point (up to ``_NON_ASCII``).

    A transcription of ``VT500_TRANSITION_TABLE`` in xterm.js 6.0.0
    (src/common/parser/EscapeSequenceParser.ts), keeping the states and dropping the actions.
    """
    table = [bytearray([_GROUND]) * (_NON_ASCII + 1) for _ in range(14)]  # default: to ground

    def add(codes: range | list[int], state: int, following: int) -> None:
        for code in codes:
            table[state][code] = following

    printables = range(0x20, 0x7F)
    executables = [*range(0x18), 0x19, *range(0x1C, 0x20)]
    add(printables, _GROUND, _GROUND)
    for state in range(14):
        add([0x18, 0x1A, 0x99, 0x9A, *range(0x80, 0x98), 0x9C], state, _GROUND)
        add([_ESC], state, _ESCAPE)
        add([0x9D], state, _OSC_STRING)
        add([0x98, 0x9E, 0x9F], state, _SOS_PM_APC_STRING)
        add([0x9B], state, _CSI_ENTRY)
        add([0x90], state, _DCS_ENTRY)
    for state in (_GROUND, _ESCAPE, _OSC_STRING, _CSI_ENTRY, _CSI_PARAM, _CSI_IGNORE):
        add(executables, state, state)
    add(executables, _CSI_INTERMEDIATE, _CSI_INTERMEDIATE)
    add(executables, _ESCAPE_INTERMEDIATE, _ESCAPE_INTERMEDIATE)
    for state in (_ESCAPE, _CSI_ENTRY, _CSI_PARAM, _CSI_INTERMEDIATE, _ESCAPE_INTERMEDIATE):
        add([0x7F], state, state)
    # OSC
    add([0x5D], _ESCAPE, _OSC_STRING)
    add([*printables, 0x7F, *range(0x1C, 0x20)], _OSC_STRING, _OSC_STRING)
    add([0x9C, _ESC, 0x18, 0x1A, 0x07], _OSC_STRING, _GROUND)
    add([_ESC], _OSC_STRING, _ESCAPE)  # the string ends, and the ESC starts a sequence
    # SOS, PM, APC
    add([0x58, 0x5E, 0x5F], _ESCAPE, _SOS_PM_APC_STRING)
    add([*printables, *executables, 0x7F], _SOS_PM_APC_STRING, _SOS_PM_APC_STRING)
    add([0x9C], _SOS_PM_APC_STRING, _GROUND)
    # CSI
    add([0x5B], _ESCAPE, _CSI_ENTRY)
    add(range(0x40, 0x7F), _CSI_ENTRY, _GROUND)
    add(range(0x30, 0x40), _CSI_ENTRY, _CSI_PARAM)
    add(range(0x30, 0x3C), _CSI_PARAM, _CSI_PARAM)
    add(range(0x40, 0x7F), _CSI_PARAM, _GROUND)
    add([0x3C, 0x3D, 0x3E, 0x3F], _CSI_PARAM, _CSI_IGNORE)
    add([*range(0x20, 0x40), 0x7F], _CSI_IGNORE, _CSI_IGNORE)
    add(range(0x40, 0x7F), _CSI_IGNORE, _GROUND)
    add(range(0x20, 0x30), _CSI_ENTRY, _CSI_INTERMEDIATE)
    add(range(0x20, 0x30), _CSI_INTERMEDIATE, _CSI_INTERMEDIATE)
    add(range(0x30, 0x40), _CSI_INTERMEDIATE, _CSI_IGNORE)
    add(range(0x40, 0x7F), _CSI_INTERMEDIATE, _GROUND)
    add(range(0x20, 0x30), _CSI_PARAM, _CSI_INTERMEDIATE)
    # ESC and intermediates
    add(range(0x20, 0x30), _ESCAPE, _ESCAPE_INTERMEDIATE)
    add(range(0x20, 0x30), _ESCAPE_INTERMEDIATE, _ESCAPE_INTERMEDIATE)
    add(range(0x30, 0x7F), _ESCAPE_INTERMEDIATE, _GROUND)
    add([*range(0x30, 0x50), *range(0x51, 0x58), 0x59, 0x5A, 0x5C], _ESCAPE, _GROUND)
    add(range(0x60, 0x7F), _ESCAPE, _GROUND)
    # DCS
    add([0x50], _ESCAPE, _DCS_ENTRY)
    add([*executables, 0x7F], _DCS_ENTRY, _DCS_ENTRY)
    add(range(0x20, 0x30), _DCS_ENTRY, _DCS_INTERMEDIATE)
    add(range(0x30, 0x40), _DCS_ENTRY, _DCS_PARAM)
    add([*executables, *range(0x20, 0x80)], _DCS_IGNORE, _DCS_IGNORE)
    add([*executables, 0x7F, *range(0x30, 0x3C)], _DCS_PARAM, _DCS_PARAM)
    add([0x3C, 0x3D, 0x3E, 0x3F], _DCS_PARAM, _DCS_IGNORE)
    add(range(0x20, 0x30), _DCS_PARAM, _DCS_INTERMEDIATE)
    add([*executables, 0x7F, *range(0x20, 0x30)], _DCS_INTERMEDIATE, _DCS_INTERMEDIATE)
    add(range(0x30, 0x40), _DCS_INTERMEDIATE, _DCS_IGNORE)
    for state in (_DCS_ENTRY, _DCS_PARAM, _DCS_INTERMEDIATE):
        add(range(0x40, 0x7F), state, _DCS_PASSTHROUGH)
    add([*executables, *printables, 0x7F], _DCS_PASSTHROUGH, _DCS_PASSTHROUGH)
    add([0x9C, 0x18, 0x1A], _DCS_PASSTHROUGH, _GROUND)
    # Characters from U+00A0 on; in any other state they end the sequence (an error).
    for state in (_GROUND, _OSC_STRING, _CSI_IGNORE, _DCS_IGNORE, _DCS_PASSTHROUGH):
        add([_NON_ASCII], state, state)
    return tuple(bytes(row) for row in table)


_TABLE = _transition_table()

#: Bytes that put the parser in each state when parsed from the ground state: what a long
#: carry is reduced to. Parameters, intermediates and string contents never matter for where
#: the sequence ends.
_CANONICAL = (
    b"",
    b"\x1b",
    b"\x1b ",
    b"\x1b[",
    b"\x1b[0",
    b"\x1b[ ",
    b"\x1b[0<",
    b"\x1b_",
    b"\x1b]",
    b"\x1bP",
    b"\x1bP0",
    b"\x1bP0<",
    b"\x1bP ",
    b"\x1bPq",
)


def _stay_pattern(state: int) -> re.Pattern[bytes]:
    """A run of bytes that leaves the parser in ``state`` (one regex match instead of a loop)."""
    row = _TABLE[state]
    ascii_class = b"".join(
        b"\\x%02x" % code for code in range(0x80) if row[code] == state and code not in _INTRODUCERS
    )
    if row[_NON_ASCII] != state:
        # Bytes that xterm.js's decoder drops wherever they stand (it is at a character
        # boundary here): continuation bytes, overlong leads, F8-FF.
        return re.compile(b"[" + ascii_class + rb"\x80-\xc1\xf8-\xff]*+")
    # Any byte but a C1 code point's C2: a character from U+00A0 on, or a byte xterm.js's
    # decoder drops. Neither ends the sequence.
    run = b"[" + ascii_class + rb"\x80-\xc1\xc3-\xff]*+"
    return re.compile(run + rb"(?:\xc2(?![\x80-\x9f])" + run + b")*+")


_STAY = tuple(_stay_pattern(state) for state in range(14))

_DROPPED = -1
_INCOMPLETE = -2


def _unit(data: bytes | bytearray, i: int) -> tuple[int, int]:
    """The code point at ``i`` as xterm.js decodes it, and the index after it.

    Returns the byte for ASCII, the code point for C1 controls, ``_NON_ASCII`` for other
    characters, ``_DROPPED`` for bytes the decoder drops (with where it goes on) and
    ``_INCOMPLETE`` when the data ends inside a character.
    """
    lead = data[i]
    if lead < 0x80:
        return lead, i + 1
    if lead < 0xC0 or lead >= 0xF8:
        return _DROPPED, i + 1  # a continuation byte without a lead, or never valid
    size = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    for k in range(i + 1, i + size):
        if k >= len(data):
            return _INCOMPLETE, i
        if data[k] & 0xC0 != 0x80:
            return _DROPPED, k  # the character is dropped, the byte at k read afresh
    if size == 2:
        code = (lead & 0x1F) << 6 | (data[i + 1] & 0x3F)
        if code < 0x80:  # overlong: the lead is dropped, its continuation read afresh
            return _DROPPED, i + 1
        return min(code, _NON_ASCII), i + 2
    if size == 3:
        code = (lead & 0x0F) << 12 | (data[i + 1] & 0x3F) << 6 | (data[i + 2] & 0x3F)
        if code < 0x800 or 0xD800 <= code <= 0xDFFF or code == 0xFEFF:
            return _DROPPED, i + 3
        return _NON_ASCII, i + 3
    code = (lead & 0x07) << 18 | (data[i + 1] & 0x3F) << 12
    code |= (data[i + 2] & 0x3F) << 6 | (data[i + 3] & 0x3F)
    if not 0x10000 <= code <= 0x10FFFF:
        return _DROPPED, i + 4
    return _NON_ASCII, i + 4


def _run(data: bytes | bytearray, cut: int) -> tuple[int, int]:
    """Parse ``data`` from the ground state, up to the first safe start at or after ``cut``.

    Returns ``(position, state)``:

    * ``state == _GROUND`` and ``position < cut``: the parser is in the ground state from
      ``position`` to the cut (and ``data[position:]`` is text, perhaps ending inside a
      character);
    * ``state == _GROUND`` and ``position >= cut``: a replay may start at ``position``: the
      pending sequence ended just before it, or a new one starts there;
    * any other state: the data ends inside a sequence, and ``data[position:]`` is a run that
      leaves the parser in that state, perhaps ending inside a character.
    """
    end = len(data)
    state = _GROUND
    i = 0
    while True:
        if state == _GROUND:
            if i >= cut:
                return i, _GROUND
            # Only an introducer leaves the ground state.
            esc = data.find(b"\x1b", i, cut)
            c1 = _find_c1_introducer(data, i, cut + 1 if esc < 0 else esc)
            if c1 >= 0:
                i = c1
            elif esc >= 0:
                simple = _SIMPLE.match(data, esc, cut)
                if simple is not None:
                    i = simple.end()
                    continue
                i = esc
            else:
                return i, _GROUND
        else:
            run = _STAY[state].match(data, i)  # always matches, possibly nothing
            stay = run.end() if run is not None else i
            if stay >= end:
                return i, state
            i = stay
        code, nxt = _unit(data, i)
        if code == _INCOMPLETE:
            return i, state
        if code == _DROPPED:
            i = nxt
            continue
        if i >= cut and code in _INTRODUCERS:
            # The pending sequence ends here and a whole new one starts; after an ST, the
            # string it ends was pending: start after the ST.
            if code == _ESC and data[i + 1 : i + 2] == b"\\":
                return i + 2, _GROUND
            return i, _GROUND
        state = _TABLE[state][code]
        i = nxt


def _tail_start(data: bytes | bytearray, low: int, high: int) -> int:
    """Where an unfinished character at the end of ``data[low:high]`` starts (else ``high``)."""
    for k in range(high - 1, max(low, high - 3) - 1, -1):
        lead = data[k]
        if lead < 0x80:
            return high
        if lead >= 0xC0:
            size = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4 if lead < 0xF8 else 1
            return k if high - k < size else high
    return high


def _canonical(carry: bytes | bytearray) -> bytes:
    """A few bytes that leave the parser (and its UTF-8 decoder) as ``carry`` does."""
    i, state = _run(carry, len(carry))
    return _CANONICAL[state] + bytes(carry[_tail_start(carry, i, len(carry)) :])


def safe_start(data: bytes | bytearray, before: bytes | bytearray = b"") -> int:
    """Index of the first byte of ``data`` where a terminal can start parsing without context.

    ``before`` holds the bytes that came just before ``data``, back to where the terminal was in
    its ground state: the start of the stream, or any ESC (a buffer's carry is that). The index
    is the first one outside any UTF-8 character or escape sequence that ``before`` leaves
    unfinished; ``len(data)`` if the sequence runs to the end of ``data``.
    """
    joined = bytes(before) + data if before else data
    cut = len(before)
    i, state = _run(joined, cut)
    if state != _GROUND:
        return len(data)
    i = max(i, cut)
    # Continuation bytes of a cut character (or stray ones, which xterm.js drops anyway).
    stop = min(i + 3, len(joined))
    while i < stop and 0x80 <= joined[i] <= 0xBF:
        i += 1
    return i - cut


class ReplayBuffer:
    """A byte-bounded FIFO of output with absolute offsets."""

    __slots__ = ("_carry", "_data", "_start", "capacity")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._data = bytearray()
        self._start = 0
        # The evicted bytes from the last evicted ESC on, or their canonical form; without an
        # ESC first, only an unfinished character's first bytes (the ground state). See the
        # module docstring.
        self._carry: bytes | bytearray = b""

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
            cut = size - self.capacity
            self._evict(self._data, len(self._data))
            self._evict(chunk, cut)
            self._start += len(self._data) + cut
            self._data = bytearray(chunk[cut:])
            return
        data = self._data
        data += chunk
        excess = len(data) - self.capacity
        if excess > 0:
            # The hot path: the carry is the evicted bytes from their last ESC on.
            esc = data.rfind(b"\x1b", 0, excess)
            if esc >= 0 and excess - esc <= _CARRY_MAX:
                self._carry = data[esc:excess]
            elif (
                esc < 0
                and not self._carry
                and data[excess - 1] < 0x80
                and data.find(b"\xc2", 0, excess) < 0
            ):
                pass  # text in the ground state, between characters, before and after
            else:
                self._evict(data, excess, esc)
            # Deleting from the front of a bytearray is O(1) in CPython: no copy per append.
            del data[:excess]
            self._start += excess

    def _evict(self, data: bytes | bytearray, count: int, esc: int | None = None) -> None:
        """Update the carry for the eviction of ``data[:count]`` (whose last ESC is ``esc``)."""
        if count <= 0:
            return
        if esc is None:
            esc = data.rfind(b"\x1b", 0, count)
        if esc >= 0:
            carry = data[esc:count]
            self._carry = carry if len(carry) <= _CARRY_MAX else _canonical(carry)
            return
        carry = self._carry
        if carry[:1] == b"\x1b":  # the state is not known yet
            if len(carry) + count <= _CARRY_MAX:
                self._carry = carry + data[:count]
                return
            # Usually a sequence that ended, then text. (The carry has only this one ESC.)
            simple = _SIMPLE.match(carry)
            if simple is not None and _find_c1_introducer(carry, 0, len(carry)) < 0:
                if carry[-1] < 0x80:
                    carry = b""
                else:
                    carry = carry[_tail_start(carry, simple.end(), len(carry)) :]
            else:
                carry = _canonical(carry)
            if carry[:1] == b"\x1b":  # inside a sequence
                self._carry = _canonical(carry + data[:count])
                return
        # The ground state, perhaps inside a character: it lasts unless a C1 introducer comes.
        if _find_c1_introducer(data, 0, count) >= 0 or (
            carry[-1:] == b"\xc2" and data[0] in _C1_INTRODUCER_SECOND
        ):
            self._carry = _canonical(carry + data[:count])
        elif data[count - 1] < 0x80:
            self._carry = b""
        elif count >= 3:
            self._carry = data[_tail_start(data, 0, count) : count]
        else:
            carry = carry + data[:count]
            self._carry = carry[_tail_start(carry, 0, len(carry)) :]

    def since(self, offset: int | None = None) -> Replay:
        """The bytes after ``offset``; with None, the whole buffer from a safe boundary.

        An ``offset`` beyond the end (from another run of the program) is treated as unknown.
        """
        end = self.end
        if offset is not None and self._start <= offset <= end:
            return Replay(offset, end, bytes(memoryview(self._data)[offset - self._start :]), False)
        truncated = offset is not None
        data = bytes(self._data)
        skip = safe_start(data, self._carry) if self._start > 0 else 0
        return Replay(self._start + skip, end, data[skip:], truncated)
