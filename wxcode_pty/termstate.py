"""Follow the terminal state a program sets once, and put a fresh terminal into it.

Programs set some state once and never repeat it: Claude turns on bracketed paste, focus and
colour-scheme reports at startup, a full-screen program enters the alternate screen. A client
that attaches later is sent a replay window that no longer holds those bytes, so the server
follows that state through the output and sends the client a *prelude* first: the sequences
that put a fresh terminal into the state in force at the replay's first byte.

:class:`TerminalState` is that state, as a value: the DEC private modes that matter (cursor
keys, origin, autowrap, cursor visible, reverse wrap, focus, bracketed paste, synchronized
output, colour-scheme reports, the mouse), the alternate screen, keypad mode, the kitty keyboard
flags and stack of each screen, modifyOtherKeys, each screen's scroll region, the cursor style
and the window title. Each change follows what xterm.js (the client) does with it, including
what its soft reset (``CSI ! p``) and full reset (``ESC c``) reset; the title survives both, as
it does on the page. ``feed`` follows a stream, ``prelude`` gives the bytes for a fresh terminal.

:class:`TerminalTimeline` gives the state at any offset of the replay window. It scans each
chunk once, as it is read, and keeps the state changes still inside the window with their
stream offsets; the changes that leave the window are folded into the state at its start. The
state at offset X is then the state at the window's start plus the kept changes that end at or
before X. Nothing is parsed twice and the buffer's bytes are never read again. The window is the
replay buffer's capacity, so that both drop the same bytes; memory is bounded by ``max_changes``
(past it, the oldest changes are folded early, and a replay from before them gets a slightly
later state). The prelude is extra bytes before the replay and does not move stream offsets.

Scanning costs the output path little: a chunk without ESC (or a C1 introducer) is passed over
with two ``in`` tests, and the others with one precompiled expression that only stops where a
followed sequence can start. Sequences split between reads are completed with a bounded tail.
Where sequences start and end follows the parser of xterm.js as ``termquery.py`` describes it,
with its patterns. Titles are kept to 1 KiB, and one split between reads is followed only when
shorter. A resize is not followed (xterm.js then forgets the scroll region, but a program that
uses one sets it again when told of the new size).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Final

from .termquery import OSC_BODY, SEQ_CONTROL, SEQ_PARAM, compile_pattern

__all__ = ["TerminalState", "TerminalTimeline", "parameters"]

# What a scanned sequence does, with its argument (parameters or a title).
_DECSET: Final = 0
_DECRST: Final = 1
_KEYPAD_APPLICATION: Final = 2
_KEYPAD_NUMERIC: Final = 3
_FULL_RESET: Final = 4
_KITTY_PUSH: Final = 5
_KITTY_POP: Final = 6
_KITTY_SET: Final = 7
_MODIFY_KEYS: Final = 8
_SCROLL_REGION: Final = 9
_CURSOR_STYLE: Final = 10
_SOFT_RESET: Final = 11
_TITLE: Final = 12

_ESC_ACTIONS: Final = {b"=": _KEYPAD_APPLICATION, b">": _KEYPAD_NUMERIC, b"c": _FULL_RESET}
_KITTY_ACTIONS: Final = {b">": _KITTY_PUSH, b"<": _KITTY_POP, b"=": _KITTY_SET}

# OSC strings ignore C0 controls but BEL (an end), CAN and SUB (aborts) and ESC.
_OSC_C0 = rb"[\x00-\x06\x08-\x17\x19\x1c-\x1f]"

# Where a followed sequence can start, found with as little work as possible per ESC: this
# expression runs over every chunk with an ESC, and TUI output has one every few bytes. Named
# groups, lookbehinds or a C1 alternative here make the search much slower, so they
# are left to _SEQUENCE, which runs only where this one stops, and the C1 form (never used in
# practice) runs only on a chunk that holds a C1 introducer. A DEC mode change, by far the
# most frequent (a TUI brackets every frame with one), is matched whole: it needs no more.
_CANDIDATE_TEMPLATE = rb"""
    \x1b %(F)b*+ (?: \[ %(F)b*+ (?: \? %(P)b*+ [hl]? | [<>=] | %(P)b*+ [\x20!r] ) | [\]=>c] )
    %(C1)b
"""
_CANDIDATE = compile_pattern(_CANDIDATE_TEMPLATE, F=SEQ_CONTROL, P=SEQ_PARAM, C1=b"")
_CANDIDATE_C1 = compile_pattern(
    _CANDIDATE_TEMPLATE, F=SEQ_CONTROL, P=SEQ_PARAM, C1=rb"| \xc2 [\x9b\x9d]"
)

# A followed sequence, matched at a candidate.
_SEQUENCE = compile_pattern(
    rb"""
    (?: \x1b %(F)b*+ (?: (?P<esc> [=>c] ) | [\[\]] ) | \xc2 [\x9b\x9d] )
    (?: (?<=[=>c])
      | (?<=[\[\x9b]) %(F)b*+
        (?: \? (?P<dec> %(P)b*+ ) (?P<dec_final> [hl] )
          | (?P<kitty> [<>=] ) (?P<kitty_params> %(P)b*+ ) u
          | > (?P<modify_keys> %(P)b*+ ) m
          | (?P<params> %(P)b*+ ) (?: (?P<region> r )
                                    | \x20 %(F)b*+ (?P<cursor> q )
                                    | ! %(F)b*+ (?P<soft_reset> p ) ) )
      | (?<=[\]\x9d])                                           # OSC 0 or 2: the title
        (?P<osc_id> (?: [02] | %(OSC_C0)b )++ ) (?: ; (?P<title> %(OSC_BODY)b ) )?
        (?: \x07 | \xc2\x9c | (?=\x1b) )   # xterm.js acts at the ESC, of ST or of another
    )
    """,
    F=SEQ_CONTROL,
    P=SEQ_PARAM,
    OSC_C0=_OSC_C0,
    OSC_BODY=OSC_BODY,
)

# The start of a followed sequence that the data ends inside, matched from its introducer.
_UNFINISHED = compile_pattern(
    rb"""
      \x1b %(F)b*+ (?: \[ %(CSI)b | \] %(OSC)b )?
    | \xc2 (?: \x9b %(CSI)b | \x9d %(OSC)b )?
    """,
    CSI=compile_pattern(
        rb"%(F)b*+ (?: [?<>=] %(P)b*+ | %(P)b*+ (?: [\x20!] %(F)b*+ )? )",
        F=SEQ_CONTROL,
        P=SEQ_PARAM,
    ).pattern,
    OSC=compile_pattern(
        rb"(?: (?: [02] | %(OSC_C0)b )++ (?: ; %(OSC_BODY)b )? )?",
        OSC_C0=_OSC_C0,
        OSC_BODY=OSC_BODY,
    ).pattern,
    F=SEQ_CONTROL,
)

#: Titles are kept to this many bytes.
_TITLE_LIMIT: Final = 1024
#: An unfinished sequence longer than this at the end of a read is not carried over.
_TAIL_LIMIT: Final = _TITLE_LIMIT + 64

_C0: Final = bytes(range(0x20))
_C0_DEL: Final = _C0 + b"\x7f"
# xterm.js keeps at most 32 parameters, each at most 2**31 - 1.
_MAX_PARAMS: Final = 32
_MAX_PARAM: Final = 0x7FFFFFFF
_MAX_DIGITS: Final = len(str(_MAX_PARAM))
# The kitty keyboard stack of each screen, as xterm.js bounds it.
_KITTY_STACK_LIMIT: Final = 16

_ALT_SCREENS: Final = frozenset({47, 1047, 1049})
_MOUSE_PROTOCOLS: Final = frozenset({9, 1000, 1002, 1003})
_MOUSE_ENCODINGS: Final = frozenset({1006, 1016})
# Modes that are only on or off. 66 (DECNKM) is the keypad mode that ESC = and ESC > set too.
# xterm.js ignores 1005 and 1015; they are kept for other terminals.
_FLAG_MODES: Final = frozenset({1, 6, 7, 25, 45, 66, 1004, 1005, 1015, 2004, 2026, 2031})
_FLAG_MODE_ARGUMENTS: Final = {b"%d" % mode: mode for mode in _FLAG_MODES}
_KEYPAD: Final = 66
_ORIGIN: Final = 6
_DEFAULT_MODES: Final = frozenset({7, 25})
# A soft reset leaves the mouse alone, and these two are mouse modes.
_SOFT_RESET_KEEPS: Final = frozenset({1005, 1015})

_NO_KEYBOARD: Final[tuple[int, tuple[int, ...]]] = (0, ())


@dataclass(slots=True)
class TerminalState:
    """The terminal state a program sets once, as xterm.js follows it."""

    #: The on/off DEC private modes (of ``_FLAG_MODES``) that are on; 66 is keypad mode.
    modes: frozenset[int] = _DEFAULT_MODES
    #: 47, 1047 or 1049 while the alternate screen is shown (the mode that showed it), else 0.
    alt_screen: int = 0
    #: 9, 1000, 1002 or 1003, or 0 for no mouse reports.
    mouse_protocol: int = 0
    #: 1006 or 1016, or 0 for the default encoding.
    mouse_encoding: int = 0
    #: Kitty keyboard flags and stack (oldest first) of the normal and the alternate screen.
    main_keyboard: tuple[int, tuple[int, ...]] = _NO_KEYBOARD
    alt_keyboard: tuple[int, tuple[int, ...]] = _NO_KEYBOARD
    #: xterm's modifyOtherKeys level.
    modify_other_keys: int = 0
    #: DECSTBM (top, bottom) of each screen, bottom 0 for the last row; None for the default.
    main_region: tuple[int, int] | None = None
    alt_region: tuple[int, int] | None = None
    #: The DECSCUSR parameter that gives this cursor (0 for the default).
    cursor_style: int = 0
    #: The window title (OSC 0/2), UTF-8 as sent, without the controls xterm.js ignores.
    title: bytes = b""
    _tail: bytes = field(default=b"", init=False, repr=False, compare=False)

    def feed(self, data: bytes) -> None:
        """Follow ``data``, the next bytes of the output."""
        if self._tail:
            data = self._tail + data
        elif b"\x1b" not in data and b"\xc2" not in data:
            return
        for _, action, argument in _scan(data):
            self._apply(action, argument)
        self._tail = _unfinished(data)

    def copy(self) -> TerminalState:
        """An independent copy (with any sequence in progress)."""
        copied = replace(self)
        copied._tail = self._tail
        return copied

    def prelude(self, *, screens: bool = True) -> bytes:
        """The sequences that put a fresh (reset) terminal into this state.

        Only what differs from a fresh terminal. The keyboard flags and the scroll region
        belong to a screen, so each screen's are set while it is the one shown: the alternate
        screen's (when it is not shown) on a visit to it, the normal screen's, then the
        alternate screen is entered and its own are set. Everything else is global and
        follows. Without ``screens``, the screens are left as they are (a screen snapshot has
        already drawn them, scroll region and origin mode included: setting those again would
        move the cursor) and only the shown screen's keyboard flags are set.
        """
        out: list[bytes] = []
        if not screens:
            out.append(_keyboard(self.alt_keyboard if self.alt_screen else self.main_keyboard))
        else:
            if not self.alt_screen and self.alt_keyboard != _NO_KEYBOARD:
                out += [b"\x1b[?1047h", _keyboard(self.alt_keyboard), b"\x1b[?1047l"]
            out += [_keyboard(self.main_keyboard), _region(self.main_region)]
            if self.alt_screen:
                out += [
                    b"\x1b[?%dh" % self.alt_screen,
                    _keyboard(self.alt_keyboard),
                    _region(self.alt_region),
                ]
        on = sorted(self.modes - _DEFAULT_MODES - {_KEYPAD} - (set() if screens else {_ORIGIN}))
        on += [mode for mode in (self.mouse_protocol, self.mouse_encoding) if mode]
        if on:
            out.append(b"\x1b[?%sh" % b";".join(b"%d" % mode for mode in on))
        off = sorted(_DEFAULT_MODES - self.modes - (set() if screens else {_ORIGIN}))
        if off:
            out.append(b"\x1b[?%sl" % b";".join(b"%d" % mode for mode in off))
        if _KEYPAD in self.modes:
            out.append(b"\x1b=")
        if self.cursor_style:
            out.append(b"\x1b[%d q" % self.cursor_style)
        if self.modify_other_keys:
            out.append(b"\x1b[>4;%dm" % self.modify_other_keys)
        if self.title:
            out.append(b"\x1b]2;%s\x07" % self.title)
        return b"".join(out)

    # -- changes -----------------------------------------------------------------------------

    def _apply(self, action: int, argument: bytes) -> None:
        if action <= _DECRST:  # the most frequent by far: a single on/off mode, quickly
            if argument in _FLAG_MODE_ARGUMENTS:
                mode = _FLAG_MODE_ARGUMENTS[argument]
                self.modes = self.modes | {mode} if action == _DECSET else self.modes - {mode}
                return
            for mode in parameters(argument):
                self._set_mode(mode, action == _DECSET)
        elif action == _KEYPAD_APPLICATION:
            self.modes |= {_KEYPAD}
        elif action == _KEYPAD_NUMERIC:
            self.modes -= {_KEYPAD}
        elif action == _SCROLL_REGION:
            self._set_region(parameters(argument))
        elif action == _CURSOR_STYLE:
            self._set_cursor_style(parameters(argument)[0])
        elif action == _TITLE:
            self.title = argument
        elif action == _MODIFY_KEYS:
            self._modify_keys(argument)
        elif action == _SOFT_RESET:
            self._soft_reset()
        elif action == _FULL_RESET:
            title = self.title
            self._reset_all()
            self.title = title
        else:
            self._kitty(action, parameters(argument))

    def _set_mode(self, mode: int, on: bool) -> None:
        if mode in _FLAG_MODES:
            self.modes = self.modes | {mode} if on else self.modes - {mode}
        elif mode in _ALT_SCREENS:
            if on and not self.alt_screen:
                self.alt_screen = mode
            elif not on and self.alt_screen:
                # xterm.js clears the alternate screen when it leaves it.
                self.alt_screen = 0
                self.alt_region = None
        elif mode in _MOUSE_PROTOCOLS:
            self.mouse_protocol = mode if on else 0
        elif mode in _MOUSE_ENCODINGS:
            self.mouse_encoding = mode if on else 0

    def _set_region(self, params: list[int]) -> None:
        top = params[0] or 1
        bottom = params[1] if len(params) > 1 else 0
        if bottom and bottom <= top:
            return  # refused by the terminal
        region = None if top == 1 and bottom == 0 else (top, bottom)
        if self.alt_screen:
            self.alt_region = region
        else:
            self.main_region = region

    def _set_cursor_style(self, param: int) -> None:
        if param <= 6:
            self.cursor_style = param
            return
        # Beyond 6 xterm.js keeps the shape and sets blinking from the parity; 7 and 8 say
        # that for the default shape.
        blink = param % 2 == 1
        shape = (self.cursor_style - 1) // 2 if self.cursor_style in range(1, 7) else None
        if shape is None:
            self.cursor_style = 7 if blink else 8
        else:
            self.cursor_style = 2 * shape + (1 if blink else 2)

    def _modify_keys(self, argument: bytes) -> None:
        if not argument.translate(None, _C0_DEL):
            self.modify_other_keys = 0  # no parameter: every resource back to its default
            return
        params = parameters(argument)
        if params[0] == 4:
            self.modify_other_keys = params[1] if len(params) > 1 else 0

    def _kitty(self, action: int, params: list[int]) -> None:
        flags, stack = self.alt_keyboard if self.alt_screen else self.main_keyboard
        if action == _KITTY_PUSH:
            stack = (*stack, flags)[-_KITTY_STACK_LIMIT:]
            flags = params[0]
        elif action == _KITTY_POP:
            count = min(max(1, params[0]), len(stack))
            if count:
                flags = stack[-count]
                stack = stack[:-count]
            if not stack:
                flags = 0  # popping the last entry (or more) leaves no flags, as in xterm.js
        else:
            mode = (params[1] or 1) if len(params) > 1 else 1
            if mode == 1:
                flags = params[0]
            elif mode == 2:
                flags |= params[0]
            elif mode == 3:
                flags &= ~params[0]
        if self.alt_screen:
            self.alt_keyboard = (flags, stack)
        else:
            self.main_keyboard = (flags, stack)

    def _soft_reset(self) -> None:
        # xterm.js's DECSTR: its DEC private modes (not the mouse, not the screen), the cursor
        # (shown, default style), the keyboard flags and the scroll region of the shown screen.
        self.modes = _DEFAULT_MODES | (self.modes & _SOFT_RESET_KEEPS)
        self.cursor_style = 0
        self.main_keyboard = self.alt_keyboard = _NO_KEYBOARD
        if self.alt_screen:
            self.alt_region = None
        else:
            self.main_region = None

    def _reset_all(self) -> None:
        self.modes = _DEFAULT_MODES
        self.alt_screen = self.mouse_protocol = self.mouse_encoding = 0
        self.main_keyboard = self.alt_keyboard = _NO_KEYBOARD
        self.modify_other_keys = self.cursor_style = 0
        self.main_region = self.alt_region = None


class TerminalTimeline:
    """The terminal state at any stream offset of the last ``window`` bytes of output.

    Feed it every chunk of output from the start of the stream (offset ``start``).
    """

    __slots__ = ("_base", "_changes", "_end", "_max_changes", "_tail", "_window")

    def __init__(self, window: int, *, start: int = 0, max_changes: int = 4096) -> None:
        if window <= 0 or max_changes <= 0:
            raise ValueError("window and max_changes must be positive")
        self._window = window
        self._max_changes = max_changes
        self._end = start
        self._tail = b""
        #: The state at the window's start (or at the last change folded early).
        self._base = TerminalState()
        #: (stream offset just after the sequence, action, argument), oldest first.
        self._changes: deque[tuple[int, int, bytes]] = deque()

    @property
    def end(self) -> int:
        """The offset just after the last byte fed."""
        return self._end

    def feed(self, data: bytes) -> None:
        """Follow ``data``, the next bytes of the output (the hot path)."""
        end = self._end = self._end + len(data)
        if self._tail:
            data = self._tail + data
        elif b"\x1b" not in data and b"\xc2" not in data:
            changes = self._changes
            if changes and changes[0][0] <= end - self._window:
                self._fold(end - self._window)
            return
        first = end - len(data)
        append = self._changes.append
        for index, action, argument in _scan(data):
            append((first + index, action, argument))
        self._tail = _unfinished(data)
        self._fold(end - self._window)

    def state_at(self, offset: int) -> TerminalState:
        """The state in force at ``offset`` (a replay's first byte), as a new object.

        An offset before the window gets the state at its start.
        """
        state = self._base.copy()
        for end, action, argument in self._changes:
            if end > offset:
                break
            state._apply(action, argument)
        return state

    def prelude(self, offset: int, *, screens: bool = True) -> bytes:
        """The bytes that put a fresh terminal into the state in force at ``offset``."""
        return self.state_at(offset).prelude(screens=screens)

    def _fold(self, window_start: int) -> None:
        changes = self._changes
        base = self._base
        while changes and (changes[0][0] <= window_start or len(changes) > self._max_changes):
            _, action, argument = changes.popleft()
            base._apply(action, argument)


# -- scanning -------------------------------------------------------------------------------


def _scan(data: bytes) -> list[tuple[int, int, bytes]]:
    """The followed sequences in ``data``: (index just after it, action, argument)."""
    candidates = _CANDIDATE
    if b"\xc2" in data and (b"\xc2\x9b" in data or b"\xc2\x9d" in data):
        candidates = _CANDIDATE_C1
    found: list[tuple[int, int, bytes]] = []
    for candidate in candidates.finditer(data):
        sequence = candidate[0]
        final = sequence[-1]
        if final in b"hl" and sequence.startswith(b"\x1b[?"):
            found.append((candidate.end(), _DECSET if final == 0x68 else _DECRST, sequence[3:-1]))
            continue
        match = _SEQUENCE.match(data, candidate.start())
        if match is None:
            continue
        esc = match["esc"]
        if esc is not None:
            found.append((match.end(), _ESC_ACTIONS[esc], b""))
            continue
        params = match["dec"]
        if params is not None:
            action = _DECSET if match["dec_final"] == b"h" else _DECRST
            found.append((match.end(), action, params))
            continue
        kitty = match["kitty"]
        if kitty is not None:
            found.append((match.end(), _KITTY_ACTIONS[kitty], match["kitty_params"]))
            continue
        params = match["modify_keys"]
        if params is not None:
            found.append((match.end(), _MODIFY_KEYS, params))
            continue
        if match["region"] is not None:
            found.append((match.end(), _SCROLL_REGION, match["params"]))
            continue
        if match["cursor"] is not None:
            found.append((match.end(), _CURSOR_STYLE, match["params"]))
            continue
        if match["soft_reset"] is not None:
            found.append((match.end(), _SOFT_RESET, b""))
            continue
        number = match["osc_id"].translate(None, _C0)
        if number and number.lstrip(b"0") in (b"", b"2"):  # OSC 0 or 2, not 20 or 22
            found.append((match.end(), _TITLE, _title(match["title"] or b"")))
    return found


def _unfinished(data: bytes) -> bytes:
    """The end of ``data`` when it is the unfinished start of a followed sequence."""
    size = len(data)
    cut = max(0, size - _TAIL_LIMIT)
    start = data.rfind(b"\x1b", cut)
    c1 = b"\xc2" in data
    if c1:
        start = max(start, data.rfind(b"\xc2\x9b", cut), data.rfind(b"\xc2\x9d", cut))
    if start >= 0 and _UNFINISHED.fullmatch(data, start) is not None:
        return data[start:]
    # A lone C2 may be the first byte of a C1 introducer.
    return b"\xc2" if c1 and data[-1] == 0xC2 else b""


def parameters(argument: bytes) -> list[int]:
    """CSI parameters as xterm.js reads them: at least one, empty as 0, sub-parameters off."""
    if argument.isdigit() and len(argument) <= _MAX_DIGITS - 1:
        return [int(argument)]  # the usual case, quickly
    values: list[int] = []
    for param in argument.translate(None, _C0_DEL).split(b";")[:_MAX_PARAMS]:
        digits = param.split(b":", 1)[0].lstrip(b"0")
        # Compared as text first: a parameter may be thousands of digits long.
        values.append(
            _MAX_PARAM if len(digits) > _MAX_DIGITS else min(int(digits or 0), _MAX_PARAM)
        )
    return values


def _title(body: bytes) -> bytes:
    """The title xterm.js shows for an OSC body, kept to ``_TITLE_LIMIT`` bytes."""
    title = body.translate(None, _C0)
    if len(title) <= _TITLE_LIMIT:
        return title
    cut = _TITLE_LIMIT
    # Not inside a UTF-8 character: back to the first byte of the one the limit splits.
    while cut > _TITLE_LIMIT - 3 and 0x80 <= title[cut] <= 0xBF:
        cut -= 1
    return title[:cut]


def _keyboard(keyboard: tuple[int, tuple[int, ...]]) -> bytes:
    """Kitty keyboard sequences that give a fresh screen these flags and this stack."""
    flags, stack = keyboard
    if not stack:
        return b"\x1b[=%du" % flags if flags else b""
    # Set the oldest entry, then push each later one: every push stacks the flags before it.
    return b"\x1b[=%du" % stack[0] + b"".join(b"\x1b[>%du" % f for f in (*stack[1:], flags))


def _region(region: tuple[int, int] | None) -> bytes:
    if region is None:
        return b""
    top, bottom = region
    return b"\x1b[%d;%dr" % (top, bottom) if bottom else b"\x1b[%dr" % top
