"""Remove terminal queries from output that is about to be replayed.

When a client reconnects, the server replays recent PTY output into a fresh xterm.js.
Some of those bytes are *queries* (cursor position, device attributes, mode and setting
requests, colour and clipboard reads, ...): xterm.js answers them as if they were live, the
answers reach the server as typed input, and the program receives garbage keystrokes.
:func:`strip_queries` removes every complete query and leaves everything else byte for byte.

What counts as a sequence, and where it ends, follows the parser xterm.js uses (the DEC/VT500
state machine): every ESC starts a new sequence, whatever was in progress; C0 controls inside
a control sequence are executed without ending it; OSC strings end at BEL, ST, or any ESC;
DCS and APC strings end at ST or any ESC (BEL is data there); CAN and SUB abort. xterm.js
decodes UTF-8 before parsing, so a raw 0x9B byte is never a CSI: in UTF-8 it is only a
continuation byte, and invalid bytes are dropped. The C1 *code points* U+009B, U+009D, U+0090,
U+009F and U+009C, encoded as C2 9B, C2 9D, C2 90, C2 9F and C2 9C, are control functions to
xterm.js, so the 8-bit forms are handled in that encoding only.

An incomplete sequence at the end of the data is left as it is: the rest of it arrives live,
and then the terminal should answer, because the query is live. Removing a query can join the
bytes around it (``ESC [`` + query + ``6n`` would become a new ``ESC [ 6n``); where the bytes
before a removed query leave a sequence unfinished, a no-op ST (``ESC \\``) takes the query's
place so that the unfinished sequence ends just as the query's own ESC ended it.

This module owns the recognition of queries only. It does not choose where a replay starts (a
safe boundary is the replay buffer's concern) and it does not reset the client's terminal.
"""

from __future__ import annotations

import bisect
import re

__all__ = ["strip_queries"]

# Bytes xterm.js executes (C0 except CAN, SUB, ESC) or ignores (DEL) inside an escape or
# control sequence without leaving it.
_F = rb"[\x00-\x17\x19\x1c-\x1f\x7f]"
# Parameter bytes of a CSI or DCS, with those controls allowed in between.
_P = rb"[\x00-\x17\x19\x1c-\x1f\x7f0-9:;]"

# Which CSI sequences are queries, by prefix, intermediate and final byte. The window
# reports (final ``t``) depend on the first parameter and are checked in code.
_CSI = (
    rb"(?:>" + _P + rb"*+[cq]"  # DA2, XTVERSION
    rb"|=" + _P + rb"*+c"  # DA3
    rb"|\?" + _P + rb"*+(?:[nmuS]|\$" + _F + rb"*+p)"  # DECDSR, XTQMODKEYS, kitty
    # keyboard flags, XTSMGRAPHICS, DECRQM (DEC modes)
    rb"|(?P<csi_params>" + _P + rb"*+)(?:[cnx]|(?P<winop>t)"  # DA1, DSR, DECREQTPARM
    rb"|\$" + _F + rb"*+[puw]"  # DECRQM (ANSI modes), DECRQTSR, DECRQPSR
    rb"|&" + _F + rb"*+u"  # DECRQUPSS
    rb"|\*" + _F + rb"*+y"  # DECRQCRA
    rb"|\#" + _F + rb"*+[|R]"  # XTREPORTSGR, XTREPORTCOLORS
    rb'|"' + _F + rb"*+v"  # DECRQDE
    rb"|'" + _F + rb"*+\|"  # DECRQLP
    rb"))"
)

# String bodies. A C2 byte is allowed unless it starts a C1 code point, which ends or
# aborts the string.
_OSC_BODY = rb"[^\x07\x18\x1a\x1b\xc2]*+(?:\xc2(?![\x80-\x9f])[^\x07\x18\x1a\x1b\xc2]*+)*+"
_DCS_BODY = rb"[^\x18\x1a\x1b\xc2]*+(?:\xc2(?![\x80-\x9f])[^\x18\x1a\x1b\xc2]*+)*+"
# xterm.js leaves an APC string at any non-ASCII character.
_APC_BODY = rb"[\x00-\x17\x19\x1c-\x7f]*+"
# A bare ESC ends a string too (xterm.js acts on the string at that ESC, so it counts as
# complete even as the last byte); it is not consumed, because it starts the next sequence.
_STRING_END = rb"(?:\x1b\\|\xc2\x9c|(?=\x1b))"

# One pass finds every candidate. The introducer is matched first (7-bit ESC form, with
# controls the parser executes before the introducing byte, or the UTF-8 encoded C1 form);
# a one-byte lookbehind on the introducing byte then picks the body, so each body is
# written once for both forms.
_QUERY = re.compile(
    rb"(?:\x1b(?P<lead>" + _F + rb"*+)[\[\]P_Z]|\xc2[\x9b\x9d\x90\x9f])"
    rb"(?:(?<=[\[\x9b])" + _F + rb"*+" + _CSI
    # DECID, the VT100 form of DA1.
    + rb"|(?<=Z)"
    rb"|(?<=[\]\x9d])(?P<osc>" + _OSC_BODY + rb")(?:\x07|" + _STRING_END + rb")"
    # DECRQSS, XTGETTCAP, XTGETXRES: always queries.
    rb"|(?<=[P\x90])(?P<dcs>" + _P + rb"*+(?:\$" + _F + rb"*+q|\+" + _F + rb"*+[qQ])"
    + _DCS_BODY
    + rb")"
    + _STRING_END
    + rb"|(?<=[_\x9f])(?P<apc>G" + _APC_BODY + rb")" + _STRING_END + rb")"
)

# Text and the common sequences that cannot be queries (SGR, cursor movement, erasing,
# mode changes, charset selection), passed over in one match. Only where it stops does the
# loop in strip_queries look closer; this keeps colour-heavy output fast.
_SKIP = re.compile(
    rb"[^\x1b\xc2]*+(?:(?:\x1b(?:"
    rb"\[[0-9;:]*+[@-bd-mo-su-wy-~]"  # CSI, no prefix or intermediate: any final but c n t x
    rb"|\[\?[0-9;:]*+[@-RT-lo-tv-~]"  # CSI ?: any final but S m n u
    rb"|[^\x00-\x1f\x7f\[\]P_Z\xc2])"  # ESC and one byte that starts no query
    rb"|\xc2(?![\x90\x98\x9b\x9d\x9e\x9f]))"  # a character that is not a C1 introducer
    rb"[^\x1b\xc2]*+)*+"
)

# C1 code points that start a sequence, like ESC does.
_C1_INTRO = re.compile(rb"\xc2[\x90\x98\x9b\x9d\x9e\x9f]")
# Bytes and C1 code points that return the parser to its ground state from any state.
_GROUNDING = re.compile(rb"[\x18\x1a]|\xc2[\x80-\x8f\x91-\x97\x99\x9a\x9c]")
# A sequence that has finished, matched from its introducer. Anything not matched here is
# treated as unfinished, which at worst adds a harmless ST.
_FINISHED = re.compile(
    rb"\x1b" + _F + rb"*+(?:\[[\x00-\x17\x19\x1c-\x3f\x7f]*+[\x40-\x7e]"
    rb"|[\x20-\x2f][\x00-\x17\x19\x1c-\x2f\x7f]*+[\x30-\x7e]"
    rb"|[\x30-\x4f\x51-\x57\x59\x5a\x5c\x60-\x7e]"
    rb"|\][^\x07\x18\x1a\x1b]*+\x07)"
    rb"|\xc2\x9b[\x00-\x17\x19\x1c-\x3f\x7f]*+[\x40-\x7e]"
    rb"|\xc2\x9d[^\x07\x18\x1a\x1b]*+\x07"
)

_PARAM_SEPARATOR = re.compile(rb"[;:]")
_EXECUTED = bytes([*range(0x18), 0x19, *range(0x1C, 0x20)])
_NOT_EXECUTED = bytes(b for b in range(256) if b not in _EXECUTED)
_C0 = bytes([*range(0x20)])
_ST = b"\x1b\\"

# CSI Ps t: 11 state, 13 position, 14 size in pixels, 15 screen size in pixels, 16 cell
# size, 18 text area size, 19 screen size, 20 icon label, 21 title.
_WINDOW_REPORTS = frozenset({b"11", b"13", b"14", b"15", b"16", b"18", b"19", b"20", b"21"})
# OSC numbers that read a colour when a value is "?": palette, special colours, and the
# dynamic colours 10-19 (which take several values, each possibly "?"); 52 reads the
# clipboard the same way.
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
        position = _SKIP.match(data, position).end()  # type: ignore[union-attr]
        if position >= len(data):
            break
        match = _QUERY.match(data, position)
        if match is None:
            position += 1
            continue
        position = match.end()
        if not _is_query(match):
            continue
        start = match.start()
        pieces.append(data[kept_from:start])
        if c1_intros is None:
            c1_intros = (
                [m.start() for m in _C1_INTRO.finditer(data)] if b"\xc2" in data else []
            )
        if not _finished_before(data, kept_from, start, c1_intros):
            pieces.append(_ST)
        # Controls the parser executed while reading the query still take effect.
        executed = match["lead"] if match["osc"] or match["dcs"] or match["apc"] else match[0]
        if executed:
            pieces.append(executed.translate(None, _NOT_EXECUTED))
        kept_from = position
    if not pieces:
        return data
    pieces.append(data[kept_from:])
    return b"".join(pieces)


def _is_query(match: re.Match[bytes]) -> bool:
    if match["winop"] is not None:
        params = match["csi_params"].translate(None, _C0 + b"\x7f")
        first = _PARAM_SEPARATOR.split(params, maxsplit=1)[0]
        return first.lstrip(b"0") in _WINDOW_REPORTS
    osc = match["osc"]
    if osc is not None:
        return _is_osc_query(osc)
    apc = match["apc"]
    if apc is not None:
        # Kitty graphics: only the explicit query action; control data ends at ';'.
        control = apc.translate(None, _C0 + b"\x7f")[1:].partition(b";")[0]
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
    if number == b"21":  # kitty colour protocol: key=?
        return any(field.endswith(b"=?") for field in fields)
    if number == b"50":  # font query: ?, ?+n, ?-n
        return text.startswith(b"?")
    if number in (b"60", b"61"):  # XTQALLOWED, XTQDISALLOWED
        return True
    if number == b"1337":  # iTerm2 reports
        return text.startswith((b"ReportCellSize", b"ReportVariable"))
    return False


def _finished_before(data: bytes, lo: int, hi: int, c1_intros: list[int]) -> bool:
    """Whether the parser is in its ground state at ``hi``, given that it is at ``lo``."""
    last = data.rfind(b"\x1b", lo, hi)
    index = bisect.bisect_left(c1_intros, hi) - 1
    if index >= 0 and c1_intros[index] >= lo:
        last = max(last, c1_intros[index])
    if last < 0:
        return True
    if _GROUNDING.search(data, last + 1, hi):
        return True
    return _FINISHED.match(data, last, hi) is not None
