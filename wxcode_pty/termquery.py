"""Remove terminal queries from output that is about to be replayed.

When a client reconnects, the server replays recent PTY output into a fresh xterm.js. Some of
those bytes are *queries* (cursor position, device attributes, mode and setting requests, colour
and clipboard reads, ...): xterm.js answers them as if they were live, the answers reach the
server as typed input, and the program receives garbage keystrokes. :func:`strip_queries`
removes every complete query and leaves everything else byte for byte.

Where a sequence starts and ends follows the parser of xterm.js (the DEC/VT500 state machine):
every ESC starts a new sequence, whatever was in progress; C0 controls inside a control sequence
are executed without ending it; OSC strings end at BEL, ST or any ESC; DCS and APC strings end at
ST or any ESC (BEL is data there); CAN and SUB abort. xterm.js decodes UTF-8 before it parses,
so a raw 0x9B byte is never a CSI: in UTF-8 output it can only be a continuation byte, and
invalid bytes are dropped. The C1 *code points* (U+009B CSI, U+009D OSC, U+0090 DCS, U+009F APC,
U+009C ST), which UTF-8 encodes as C2 9B, C2 9D, ..., are control functions to xterm.js, so the
8-bit forms are recognised in that encoding only.

An incomplete sequence at the end of the data is left as it is: its rest arrives live, and then
the terminal should answer, because the query is live. Removing a query can join the bytes
around it (``ESC [`` + query + ``6n`` would read as a new ``ESC [ 6n``). Where the bytes before a
removed query leave a sequence unfinished, a no-op takes the query's place and ends that sequence
the way the query's introducer did: ST (``ESC \\``) after an ESC, which completes a pending
string, or CAN after a C1 introducer, which abandons it.

This module recognises queries and nothing else. Where a replay starts (a safe boundary) is the
replay buffer's concern, and resetting the client's terminal is the client's.
"""

from __future__ import annotations

import bisect
import re

__all__ = [
    "FINISHED",
    "OSC_BODY",
    "QUERY",
    "SEQ_CONTROL",
    "SEQ_PARAM",
    "compile_pattern",
    "is_query",
    "strip_queries",
]


def compile_pattern(template: bytes, **parts: bytes) -> re.Pattern[bytes]:
    """Compile a verbose pattern, filling in ``%(NAME)b`` placeholders."""
    return re.compile(template % {name.encode(): part for name, part in parts.items()}, re.X)


# Bytes that xterm.js executes (C0 but CAN, SUB, ESC) or ignores (DEL) inside an escape or
# control sequence without leaving it. Real programs never put them there, but xterm.js would
# still answer, so every pattern below lets them in.
SEQ_CONTROL = rb"[\x00-\x17\x19\x1c-\x1f\x7f]"
# Parameter bytes of a CSI or DCS, with those controls in between.
SEQ_PARAM = rb"[\x00-\x17\x19\x1c-\x1f\x7f0-9:;]"

# CSI queries, by prefix, intermediate and final byte. Window reports (final "t") depend on the
# first parameter, which is checked in code.
_CSI = compile_pattern(
    rb"""
      >  %(P)b*+ [cq]                    # DA2, XTVERSION
    | =  %(P)b*+ c                       # DA3
    | \? %(P)b*+ (?: [nmuS]              # DECDSR, XTQMODKEYS, kitty keyboard flags, XTSMGRAPHICS
                   | \$ %(F)b*+ p )      # DECRQM, DEC modes
    | (?P<csi_params> %(P)b*+ )
      (?: [cnx]                          # DA1, DSR, DECREQTPARM
        | (?P<winop> t )                 # XTWINOPS reports
        | \$ %(F)b*+ [puw]               # DECRQM (ANSI modes), DECRQTSR, DECRQPSR
        | & %(F)b*+ u                    # DECRQUPSS
        | \* %(F)b*+ y                   # DECRQCRA
        | \# %(F)b*+ [|R]                # XTREPORTSGR, XTREPORTCOLORS
        | " %(F)b*+ v                    # DECRQDE
        | ' %(F)b*+ \| )                 # DECRQLP
    """,
    P=SEQ_PARAM,
    F=SEQ_CONTROL,
).pattern

# String bodies. A C2 byte is allowed unless it starts a C1 code point, which ends or aborts
# the string. xterm.js leaves an APC string at any non-ASCII character.
OSC_BODY = rb"[^\x07\x18\x1a\x1b\xc2]*+ (?: \xc2(?![\x80-\x9f]) [^\x07\x18\x1a\x1b\xc2]*+ )*+"
_DCS_BODY = rb"[^\x18\x1a\x1b\xc2]*+ (?: \xc2(?![\x80-\x9f]) [^\x18\x1a\x1b\xc2]*+ )*+"
_APC_BODY = rb"[\x00-\x17\x19\x1c-\x7f]*+"
# A bare ESC ends a string too, and xterm.js acts on the string at that ESC, so it counts as
# complete even as the very last byte. It is not consumed: it starts the next sequence.
_STRING_END = rb"(?: \x1b\\ | \xc2\x9c | (?=\x1b) )"

# One candidate, anchored at an introducer: the 7-bit ESC form (with the controls the parser
# executes before the introducing byte) or the UTF-8 encoded C1 form. A one-byte lookbehind on
# the introducing byte then picks the body, so that each body is written once for both forms.
QUERY = compile_pattern(
    rb"""
    (?: \x1b (?P<lead> %(F)b*+ ) [\[\]P_Z] | \xc2 [\x9b\x9d\x90\x9f] )
    (?: (?<=[\[\x9b]) %(F)b*+ (?: %(CSI)b )
      | (?<=Z)                           # DECID, the VT100 form of DA1
      | (?<=[\]\x9d]) (?P<osc> %(OSC_BODY)b ) (?: \x07 | %(END)b )
      | (?<=[P\x90]) (?P<dcs> %(P)b*+    # DECRQSS, XTGETTCAP, XTGETXRES
                              (?: \$ %(F)b*+ q | \+ %(F)b*+ [qQ] ) %(DCS_BODY)b ) %(END)b
      | (?<=[_\x9f]) (?P<apc> G %(APC_BODY)b ) %(END)b     # kitty graphics
    )
    """,
    F=SEQ_CONTROL,
    P=SEQ_PARAM,
    CSI=_CSI,
    OSC_BODY=OSC_BODY,
    DCS_BODY=_DCS_BODY,
    APC_BODY=_APC_BODY,
    END=_STRING_END,
)

# Text and the common sequences that cannot be queries (SGR, cursor movement, erasing, mode
# changes, charset selection), passed over in one match. Only where this stops does the loop in
# strip_queries look closer, which keeps colour-heavy output fast.
_SKIP = compile_pattern(
    rb"""
    [^\x1b\xc2]*+
    (?: (?: \x1b (?: \[ [0-9;:]*+ [@-bd-mo-su-wy-~]     # CSI, any final but c n t x
                   | \[\? [0-9;:]*+ [@-RT-lo-tv-~]      # CSI ?, any final but S m n u
                   | [^\x00-\x1f\x7f\[\]P_Z\xc2] )      # ESC and a byte that starts no query
          | \xc2 (?![\x90\x98\x9b\x9d\x9e\x9f]) )       # a character, not a C1 introducer
        [^\x1b\xc2]*+ )*+
    """
)

# C1 code points that start a sequence, as ESC does.
_C1_INTRO = re.compile(rb"\xc2[\x90\x98\x9b\x9d\x9e\x9f]")
# Bytes and C1 code points that return the parser to its ground state from any state.
_GROUNDING = re.compile(rb"[\x18\x1a]|\xc2[\x80-\x8f\x91-\x97\x99\x9a\x9c]")
# A sequence that has finished, matched from its introducer. What is not matched here counts
# as unfinished, which at worst adds a needless (and harmless) ST or CAN.
FINISHED = compile_pattern(
    rb"""
      \x1b %(F)b*+ (?: \[ [\x00-\x17\x19\x1c-\x3f\x7f]*+ [\x40-\x7e]
                     | [\x20-\x2f] [\x00-\x17\x19\x1c-\x2f\x7f]*+ [\x30-\x7e]
                     | [\x30-\x4f\x51-\x57\x59\x5a\x5c\x60-\x7e]
                     | \] [^\x07\x18\x1a\x1b]*+ \x07 )
    | \xc2\x9b [\x00-\x17\x19\x1c-\x3f\x7f]*+ [\x40-\x7e]
    | \xc2\x9d [^\x07\x18\x1a\x1b]*+ \x07
    """,
    F=SEQ_CONTROL,
)

_PARAM_SEPARATOR = re.compile(rb"[;:]")
_EXECUTED = bytes([*range(0x18), 0x19, *range(0x1C, 0x20)])
_NOT_EXECUTED = bytes(b for b in range(256) if b not in _EXECUTED)
_C0 = bytes(range(0x20))
_C0_DEL = _C0 + b"\x7f"
_ST = b"\x1b\\"
_CAN = b"\x18"

# CSI Ps t: 11 state, 13 position, 14 size in pixels, 15 screen size in pixels, 16 cell size,
# 18 text area size, 19 screen size, 20 icon label, 21 title.
_WINDOW_REPORTS = frozenset({b"11", b"13", b"14", b"15", b"16", b"18", b"19", b"20", b"21"})
# OSC numbers that read a value given as "?": palette (4), special colours (5), the dynamic
# colours 10-19 (each may take several values) and the clipboard (52).
_OSC_QUESTION = frozenset({b"4", b"5", *(str(n).encode() for n in range(10, 20)), b"52"})


def strip_queries(data: bytes) -> bytes:
    """Return ``data`` without its complete terminal queries; everything else is kept."""
    if b"\x1b" not in data and b"\xc2" not in data:
        return data
    pieces: list[bytes] = []
    kept_from = 0
    c1_intros: list[int] | None = None
    position = 0
    while True:
        skipped = _SKIP.match(data, position)  # always matches, possibly nothing
        if skipped is not None:
            position = skipped.end()
        if position >= len(data):
            break
        match = QUERY.match(data, position)
        if match is None:
            position += 1
            continue
        position = match.end()
        if not is_query(match):
            continue
        start = match.start()
        pieces.append(data[kept_from:start])
        if c1_intros is None:
            c1_intros = [m.start() for m in _C1_INTRO.finditer(data)] if b"\xc2" in data else []
        if not _ground_before(data, kept_from, start, c1_intros):
            pieces.append(_ST if data[start] == 0x1B else _CAN)
        # Controls the parser executed while reading the query still take effect: all of them
        # in a CSI, only those before the introducing byte in a string.
        if match["osc"] is None and match["dcs"] is None and match["apc"] is None:
            executed = match[0]
        else:
            executed = match["lead"] or b""
        if executed:
            pieces.append(executed.translate(None, _NOT_EXECUTED))
        kept_from = position
    if not pieces:
        return data
    pieces.append(data[kept_from:])
    return b"".join(pieces)


def is_query(match: re.Match[bytes]) -> bool:
    if match["winop"] is not None:
        params = match["csi_params"].translate(None, _C0_DEL)
        # Compared as text, not int(): a parameter may be thousands of digits long.
        first = _PARAM_SEPARATOR.split(params, maxsplit=1)[0]
        return first.lstrip(b"0") in _WINDOW_REPORTS
    osc = match["osc"]
    if osc is not None:
        return _is_osc_query(osc)
    apc = match["apc"]
    if apc is not None:
        # Kitty graphics: only the query action; the control data ends at ";".
        control = apc.translate(None, _C0_DEL)[1:].partition(b";")[0]
        return b"a=q" in control.split(b",")
    return True


def _is_osc_query(body: bytes) -> bool:
    # xterm.js ignores C0 controls inside an OSC string.
    number, _, text = body.translate(None, _C0).partition(b";")
    if not number.isdigit():
        return False
    number = number.lstrip(b"0")
    fields = text.split(b";")
    if number in _OSC_QUESTION:
        return b"?" in fields
    if number == b"21":  # kitty colours: key=?
        return any(field.endswith(b"=?") for field in fields)
    if number == b"50":  # font: ?, ?+n, ?-n
        return text.startswith(b"?")
    if number in (b"60", b"61"):  # XTQALLOWED, XTQDISALLOWED
        return True
    if number == b"1337":  # iTerm2 reports
        return text.startswith((b"ReportCellSize", b"ReportVariable"))
    return False


def _ground_before(data: bytes, lo: int, hi: int, c1_intros: list[int]) -> bool:
    """Whether the parser is in its ground state at ``hi``, given that it is at ``lo``."""
    # Every introducer resets the parser, so only the last one before hi matters.
    last = data.rfind(b"\x1b", lo, hi)
    index = bisect.bisect_left(c1_intros, hi) - 1
    if index >= 0 and c1_intros[index] >= lo:
        last = max(last, c1_intros[index])
    if last < 0:
        return True
    if _GROUNDING.search(data, last + 1, hi):
        return True
    return FINISHED.match(data, last, hi) is not None
