"""strip_queries: every complete terminal query goes, everything else stays byte for byte.

Besides examples, the tests check the function against a small reference parser written
after the xterm.js state machine: on random streams built from sequence fragments, the output
must hold no query that parser would answer, and must otherwise parse to the same text and
sequences as the input.
"""

from __future__ import annotations

import random
import re
import time

import pytest

from wxcode_pty.termquery import strip_queries

ESC = b"\x1b"
ST = b"\x1b\\"
BEL = b"\x07"

# (name, sequence) for queries that are complete without a string terminator.
CONTROL_QUERIES = [
    ("cpr", b"\x1b[6n"),
    ("cpr-dec", b"\x1b[?6n"),
    ("dsr-status", b"\x1b[5n"),
    ("da1", b"\x1b[c"),
    ("da1-0", b"\x1b[0c"),
    ("da2", b"\x1b[>c"),
    ("da2-0", b"\x1b[>0c"),
    ("da3", b"\x1b[=c"),
    ("da3-0", b"\x1b[=0c"),
    ("decrqm-dec", b"\x1b[?2026$p"),
    ("decrqm-dec-focus", b"\x1b[?1004$p"),
    ("decrqm-ansi", b"\x1b[4$p"),
    ("xtversion", b"\x1b[>q"),
    ("xtversion-0", b"\x1b[>0q"),
    ("kitty-keyboard", b"\x1b[?u"),
    ("winops-11", b"\x1b[11t"),
    ("winops-13", b"\x1b[13t"),
    ("winops-13-2", b"\x1b[13;2t"),
    ("winops-14", b"\x1b[14t"),
    ("winops-14-2", b"\x1b[14;2t"),
    ("winops-15", b"\x1b[15t"),
    ("winops-16", b"\x1b[16t"),
    ("winops-18", b"\x1b[18t"),
    ("winops-19", b"\x1b[19t"),
    ("winops-20", b"\x1b[20t"),
    ("winops-21", b"\x1b[21t"),
    ("winops-leading-zero", b"\x1b[014t"),
    ("colour-scheme", b"\x1b[?996n"),
    ("decdsr-printer", b"\x1b[?15n"),
    ("decdsr-keyboard", b"\x1b[?26n"),
    ("xtqmodkeys", b"\x1b[?4m"),
    ("xtqmodkeys-1", b"\x1b[?1m"),
    ("decreqtparm", b"\x1b[1x"),
    ("decrqcra", b"\x1b[1;1;1;1;10;10*y"),
    ("decrqpsr", b"\x1b[1$w"),
    ("decrqtsr", b"\x1b[1$u"),
    ("decrqupss", b"\x1b[&u"),
    ("xtreportsgr", b"\x1b[1;1;1;10#|"),
    ("xtreportcolors", b"\x1b[#R"),
    ("decrqde", b'\x1b["v'),
    ("decrqlp", b"\x1b[1'|"),
    ("xtsmgraphics", b"\x1b[?1;1;0S"),
    ("decid", b"\x1bZ"),
    ("c1-cpr", b"\xc2\x9b6n"),
    ("c1-da1", b"\xc2\x9bc"),
]

# (name, sequence without its terminator) for string queries.
STRING_QUERIES = [
    ("osc4", b"\x1b]4;1;?"),
    ("osc4-several", b"\x1b]4;1;?;2;?"),
    ("osc4-set-and-read", b"\x1b]4;1;#ff0000;2;?"),
    ("osc5", b"\x1b]5;0;?"),
    ("osc10", b"\x1b]10;?"),
    ("osc10-several", b"\x1b]10;?;?"),
    ("osc11", b"\x1b]11;?"),
    ("osc12", b"\x1b]12;?"),
    *((f"osc{n}", f"\x1b]{n};?".encode()) for n in range(13, 20)),
    ("osc52", b"\x1b]52;c;?"),
    ("osc52-no-selection", b"\x1b]52;;?"),
    ("osc50-font", b"\x1b]50;?"),
    ("osc60", b"\x1b]60"),
    ("osc61", b"\x1b]61;1"),
    ("osc21-kitty", b"\x1b]21;foreground=?;background=?"),
    ("osc1337-cell-size", b"\x1b]1337;ReportCellSize"),
    ("c1-osc11", b"\xc2\x9d11;?"),
]
DCS_QUERIES = [
    ("decrqss-sgr", b"\x1bP$qm"),
    ("decrqss-decscusr", b"\x1bP$q q"),
    ("decrqss-decstbm", b"\x1bP$qr"),
    ("xtgettcap", b"\x1bP+q544e"),
    ("xtgettcap-several", b"\x1bP+q436f;6b6273"),
    ("xtgetxres", b"\x1bP+QallowWindowOps"),
    ("kitty-graphics", b"\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA"),
    ("c1-decrqss", b"\xc2\x90$qm"),
]
ALL_STRINGS = STRING_QUERIES + DCS_QUERIES

LOOK_ALIKES = [
    ("sgr-blink", b"\x1b[6m"),
    ("sgr-256", b"\x1b[38;5;6m"),
    ("sgr-truecolour-colons", b"\x1b[38:2::10:20:30m"),
    ("erase-display", b"\x1b[2J"),
    ("alt-screen", b"\x1b[?1049h"),
    ("focus-reporting", b"\x1b[?1004h"),
    ("sync-output", b"\x1b[?2026h"),
    ("cursor-forward", b"\x1b[5C"),
    ("cursor-forward-6", b"\x1b[6C"),
    ("cursor-position", b"\x1b[12;40H"),
    ("cursor-shape", b"\x1b[2 q"),
    ("decsca", b'\x1b[1"q'),
    ("decll", b"\x1b[1q"),
    ("decstr", b"\x1b[!p"),
    ("kitty-push", b"\x1b[>1u"),
    ("kitty-pop", b"\x1b[<u"),
    ("kitty-set", b"\x1b[=1;1u"),
    ("restore-cursor", b"\x1b[u"),
    ("save-cursor", b"\x1b[s"),
    ("xtmodkeys-set", b"\x1b[>4;2m"),
    ("xtmodkeys-reset", b"\x1b[>4n"),
    ("title-push", b"\x1b[22;0t"),
    ("title-pop", b"\x1b[23t"),
    ("resize", b"\x1b[8;24;80t"),
    ("winops-115", b"\x1b[115t"),
    ("linux-cursor", b"\x1b[?1c"),
    ("scroll-up", b"\x1b[3S"),
    ("decsc", b"\x1b7"),
    ("charset", b"\x1b(B"),
    ("lone-st", b"\x1b\\"),
    ("osc-title", b"\x1b]0;title\x07"),
    ("osc-title-question", b"\x1b]0;?\x07"),
    ("osc-title-utf8", "\x1b]2;✳ Claude Code?\x1b\\".encode()),
    ("osc-hyperlink", b"\x1b]8;;https://example.com/?q=1\x1b\\"),
    ("osc-hyperlink-bel", b"\x1b]8;id=1;https://example.com/\x07"),
    ("osc10-set", b"\x1b]10;#ffffff\x07"),
    ("osc11-set", b"\x1b]11;rgb:00/00/00\x1b\\"),
    ("osc4-set", b"\x1b]4;1;rgb:ff/00/00\x1b\\"),
    ("osc52-set", b"\x1b]52;c;aGVsbG8=\x07"),
    ("osc104-reset", b"\x1b]104\x07"),
    ("osc110-reset", b"\x1b]110\x07"),
    ("osc7-cwd", b"\x1b]7;file://host/tmp\x07"),
    ("osc133-mark", b"\x1b]133;A\x07"),
    ("osc-not-a-number", b"\x1b]x11;?\x07"),
    ("sixel", b'\x1bPq"1;1;2;2#0;2;0;0;0#0~~\x1b\\'),
    ("sixel-params", b"\x1bP0;1;0q#0~~-\x1b\\"),
    ("xtsettcap", b"\x1bP+p544e=787465726d\x1b\\"),
    ("decudk", b"\x1bP1;1|17/616263\x1b\\"),
    ("dcs-prefix", b"\x1bP?$qm\x1b\\"),
    ("kitty-graphics-transmit", b"\x1b_Ga=T,f=100;AAAA\x1b\\"),
    ("apc-other", b"\x1b_hello\x1b\\"),
    ("two-intermediates", b"\x1b[?1$$p"),
    ("prefix-after-params", b"\x1b[6?n"),
    ("cancelled-csi", b"\x1b[6\x18n"),
    ("substituted-csi", b"\x1b[6\x1an"),
    ("cancelled-osc", b"\x1b]11;?\x18"),
    ("osc-aborted-by-c1", b"\x1b]11;?\xc2\x85"),
    ("utf8-continuation-9b", "Û6n ✛ ✝ ✐ ؛".encode()),
    ("c1-nel", b"\xc2\x85"),
    ("c1-st-alone", b"\xc2\x9c"),
]


def test_output_without_escapes_is_returned_as_is() -> None:
    data = "plain text, ünïcödé ✓\r\n".encode() * 100
    assert strip_queries(data) is data


def test_output_without_queries_is_returned_as_is() -> None:
    data = b"\x1b[1;31mred\x1b[0m \x1b]0;title\x07\x1b[?2026h\x1b[2K\x1b[?2026l"
    assert strip_queries(data) is data


@pytest.mark.parametrize(("name", "query"), CONTROL_QUERIES, ids=[n for n, _ in CONTROL_QUERIES])
def test_control_query_removed(name: str, query: bytes) -> None:
    assert strip_queries(b"before" + query + b"after") == b"beforeafter"
    assert strip_queries(query) == b""


@pytest.mark.parametrize(("name", "query"), ALL_STRINGS, ids=[n for n, _ in ALL_STRINGS])
def test_string_query_removed_with_st(name: str, query: bytes) -> None:
    assert strip_queries(b"before" + query + ST + b"after") == b"beforeafter"
    assert strip_queries(b"before" + query + b"\xc2\x9c" + b"after") == b"beforeafter"


@pytest.mark.parametrize(("name", "query"), STRING_QUERIES, ids=[n for n, _ in STRING_QUERIES])
def test_osc_query_removed_with_bel(name: str, query: bytes) -> None:
    assert strip_queries(b"before" + query + BEL + b"after") == b"beforeafter"


@pytest.mark.parametrize(("name", "query"), ALL_STRINGS, ids=[n for n, _ in ALL_STRINGS])
def test_string_query_ended_by_next_sequence_removed(name: str, query: bytes) -> None:
    # Any ESC ends a string in xterm.js, which answers there; the ESC starts the next sequence.
    assert strip_queries(query + b"\x1b[31mred") == b"\x1b[31mred"
    assert strip_queries(query + b"\x1b[6n") == b""


def test_dcs_string_runs_past_bel() -> None:
    # In a DCS string BEL is data: xterm.js answers at the ESC, with "m\x07text" as the request.
    assert strip_queries(b"\x1bP$qm\x07text\x1b\\after") == b"after"
    assert strip_queries(b"\x1bP$qm\x07") == b"\x1bP$qm\x07"


@pytest.mark.parametrize(("name", "sequence"), LOOK_ALIKES, ids=[n for n, _ in LOOK_ALIKES])
def test_look_alike_kept(name: str, sequence: bytes) -> None:
    data = b"before" + sequence + b"after"
    assert strip_queries(data) == data


ALL_TERMINATED = (
    [query for _, query in CONTROL_QUERIES]
    + [query + BEL for _, query in STRING_QUERIES]
    + [query + ST for _, query in ALL_STRINGS]
)


@pytest.mark.parametrize("query", ALL_TERMINATED)
def test_query_cut_at_the_end_is_left_intact(query: bytes) -> None:
    # The rest arrives live; the terminal should answer then, because the query is live.
    for cut in range(1, len(query)):
        head = b"text" + query[:cut]
        expected = head
        if head.endswith(ESC) and query.endswith(ST) and cut == len(query) - 1:
            # Everything but the backslash of ST: xterm.js has answered at the ESC already.
            expected = b"text" + ESC
        assert strip_queries(head) == expected, cut


def test_utf8_text_around_queries_kept() -> None:
    text = ["héllo ✓ 日本語 ", "→ done «ok» © ", "emoji 🎉 ", "Û and ✛\r\n"]
    queries = [b"\x1b[6n", b"\x1b]11;?\x1b\\", b"\x1bP$qm\x1b\\", b"\xc2\x9b>c"]
    data = b"".join(part.encode() + query for part, query in zip(text, queries, strict=True))
    assert strip_queries(data) == "".join(text).encode()


def test_controls_inside_a_query_still_take_effect() -> None:
    # xterm.js executes C0 controls met inside a control sequence and ignores DEL there.
    assert strip_queries(b"\x1b[6\rn") == b"\r"
    assert strip_queries(b"\x1b\n[?6n") == b"\n"
    assert strip_queries(b"\x1b[6\x7fn") == b""
    assert strip_queries(b"\x1b\r]11;?\x07") == b"\r"
    # Inside an OSC string they are ignored, and they do not hide its number.
    assert strip_queries(b"\x1b]1\n1;\r?\x07") == b""


def test_joined_bytes_do_not_form_a_new_sequence() -> None:
    # The removed query's ESC ended the unfinished sequence before it; an ST does it instead.
    assert strip_queries(b"\x1b[\x1b[6n6n") == b"\x1b[\x1b\\6n"
    assert strip_queries(b"\x1b[1\x1b[6n2m") == b"\x1b[1\x1b\\2m"
    assert strip_queries(b"\x1b]1\x1b[6n1;?\x07") == b"\x1b]1\x1b\\1;?\x07"
    assert strip_queries(b"\x1b\x1b[6n[c") == b"\x1b\x1b\\[c"
    assert strip_queries(b"\x1b[\x1b]11;?\x1b[6nc") == b"\x1b[\x1b\\c"
    # A finished sequence before the query needs nothing.
    assert strip_queries(b"\x1b[1m\x1b[6nx") == b"\x1b[1mx"
    assert strip_queries(b"\x1b]0;t\x07\x1b[6nx") == b"\x1b]0;t\x07x"


def test_claude_like_frame() -> None:
    frame = [
        b"\x1b[?2026h",
        b"\x1b[2K\x1b[1G\x1b[38;2;215;119;87m\xe2\x9c\xbb\x1b[39m Thinking\xe2\x80\xa6",
        b"\x1b]0;\xe2\x9c\xb3 Claude Code\x07",
        b"\r\n\x1b[1m> \x1b[22mfix the tests\x1b[0m",
        b"\x1b[?2026l",
    ]
    queries = [b"\x1b[c", b"\x1b[?u", b"\x1b]11;?\x1b\\", b"\x1b[?2026$p", b"\x1b[6n"]
    data = b"".join(q + f for q, f in zip(queries, frame, strict=True))
    assert strip_queries(data) == b"".join(frame)


def test_long_parameters_do_not_fail() -> None:
    digits = b"1" * 5000
    for data in (b"\x1b[" + digits + b"t", b"\x1b]" + digits + b";?\x07"):
        assert strip_queries(data) == data
    assert strip_queries(b"\x1b]" + b"0" * 5000 + b"11;?\x07") == b""


def test_adversarial_input_stays_linear() -> None:
    depth = 8000
    nested = b"\x1b[" * depth + b"\x1b[6n" + b"6n" * depth
    many = b"\x1b[6n\x1b[" * depth
    unterminated = b"\x1b]11;?" + b"\xc2\xa9" * 30000
    for data in (nested, many, unterminated):
        started = time.perf_counter()
        stripped = strip_queries(data)
        assert time.perf_counter() - started < 1.0
        assert not answered_queries(stripped)


# --- Reference parser ----------------------------------------------------------------------

Event = tuple[str, ...]

(
    GROUND,
    ESCAPE,
    ESCAPE_INTERMEDIATE,
    CSI_ENTRY,
    CSI_PARAM,
    CSI_INTERMEDIATE,
    CSI_IGNORE,
    OSC_STRING,
    DCS_ENTRY,
    DCS_PARAM,
    DCS_INTERMEDIATE,
    DCS_IGNORE,
    DCS_PASSTHROUGH,
    SOS_PM_STRING,
    APC_STRING,
) = range(15)


def parse(data: bytes) -> list[Event]:
    """Events the xterm.js parser would produce for ``data`` (valid UTF-8)."""
    events: list[Event] = []
    state = GROUND
    prefix = params = collect = final = payload = ""

    def end_string() -> None:
        if state == OSC_STRING:
            events.append(("osc", payload))
        elif state == DCS_PASSTHROUGH:
            events.append(("dcs", prefix, params, collect, final, payload))
        elif state == APC_STRING:
            events.append(("apc", payload))

    for char in data.decode():
        code = ord(char)
        executable = code < 0x20 and code not in (0x18, 0x1A, 0x1B)
        # Transitions from any state.
        if code in (0x1B, 0x9C):
            end_string()
            state = ESCAPE if code == 0x1B else GROUND
            prefix = params = collect = ""
            continue
        if code in (0x18, 0x1A):
            if state not in (OSC_STRING, DCS_PASSTHROUGH):  # there they abort the string
                events.append(("exec", char))
            state = GROUND
            continue
        if 0x80 <= code < 0xA0:
            prefix = params = collect = payload = ""
            state = {
                0x9B: CSI_ENTRY,
                0x9D: OSC_STRING,
                0x90: DCS_ENTRY,
                0x9F: APC_STRING,
                0x98: SOS_PM_STRING,
                0x9E: SOS_PM_STRING,
            }.get(code, GROUND)
            if state == GROUND:
                events.append(("exec", char))
            continue
        if state == GROUND:
            if executable:
                events.append(("exec", char))
            elif code != 0x7F:
                events.append(("print", char))
        elif state in (ESCAPE, ESCAPE_INTERMEDIATE):
            if executable:
                events.append(("exec", char))
            elif code == 0x7F:
                pass
            elif 0x20 <= code <= 0x2F:
                collect += char
                state = ESCAPE_INTERMEDIATE
            elif state == ESCAPE and char in "[]P_X^":
                payload = ""
                state = {
                    "[": CSI_ENTRY,
                    "]": OSC_STRING,
                    "P": DCS_ENTRY,
                    "_": APC_STRING,
                }.get(char, SOS_PM_STRING)
            elif code <= 0x7E:
                events.append(("esc", collect + char))
                state = GROUND
            else:
                state = GROUND
        elif state in (CSI_ENTRY, CSI_PARAM, CSI_INTERMEDIATE):
            if executable:
                events.append(("exec", char))
            elif code == 0x7F:
                pass
            elif state == CSI_ENTRY and char in "<=>?":
                prefix = char
                state = CSI_PARAM
            elif state != CSI_INTERMEDIATE and 0x30 <= code <= 0x3B:
                params += char
                state = CSI_PARAM
            elif 0x20 <= code <= 0x2F:
                collect += char
                state = CSI_INTERMEDIATE
            elif 0x40 <= code <= 0x7E:
                events.append(("csi", prefix, params, collect, char))
                state = GROUND
            elif code >= 0xA0:
                state = GROUND
            else:
                state = CSI_IGNORE
        elif state == CSI_IGNORE:
            if executable:
                events.append(("exec", char))
            elif 0x40 <= code <= 0x7E:
                state = GROUND
        elif state == OSC_STRING:
            if code == 0x07:
                events.append(("osc", payload))
                state = GROUND
            elif not executable:
                payload += char
        elif state in (DCS_ENTRY, DCS_PARAM, DCS_INTERMEDIATE):
            if executable or code == 0x7F:
                pass
            elif state == DCS_ENTRY and char in "<=>?":
                prefix = char
                state = DCS_PARAM
            elif state != DCS_INTERMEDIATE and 0x30 <= code <= 0x3B:
                params += char
                state = DCS_PARAM
            elif 0x20 <= code <= 0x2F:
                collect += char
                state = DCS_INTERMEDIATE
            elif 0x40 <= code <= 0x7E:
                final = char
                payload = ""
                state = DCS_PASSTHROUGH
            elif code >= 0xA0:
                state = GROUND
            else:
                state = DCS_IGNORE
        elif state == DCS_PASSTHROUGH:
            if code != 0x7F:
                payload += char
        elif state in (SOS_PM_STRING, APC_STRING):
            if code >= 0xA0:
                state = GROUND
            elif state == APC_STRING and 0x20 <= code < 0x7F:
                payload += char
    return events


CSI_QUERIES = {
    ("", "", "c"),
    (">", "", "c"),
    ("=", "", "c"),
    ("", "", "n"),
    ("?", "", "n"),
    ("", "$", "p"),
    ("?", "$", "p"),
    (">", "", "q"),
    ("?", "", "u"),
    ("?", "", "m"),
    ("?", "", "S"),
    ("", "", "x"),
    ("", "$", "u"),
    ("", "$", "w"),
    ("", "&", "u"),
    ("", "*", "y"),
    ("", "#", "|"),
    ("", "#", "R"),
    ("", '"', "v"),
    ("", "'", "|"),
}
WINDOW_REPORTS = {"11", "13", "14", "15", "16", "18", "19", "20", "21"}
DCS_QUERY_IDS = {("", "$", "q"), ("", "+", "q"), ("", "+", "Q")}


def is_answered(event: Event) -> bool:
    """Whether a terminal sends something back for ``event``."""
    kind = event[0]
    if kind == "csi":
        _, prefix, params, collect, final = event
        if (prefix, collect, final) == ("", "", "t"):
            return re.split("[;:]", params)[0].lstrip("0") in WINDOW_REPORTS
        return (prefix, collect, final) in CSI_QUERIES
    if kind == "esc":
        return event[1] == "Z"
    if kind == "dcs":
        _, prefix, _params, collect, final, _payload = event
        return (prefix, collect, final) in DCS_QUERY_IDS
    if kind == "apc":
        control = event[1].partition(";")[0]
        return event[1].startswith("G") and "a=q" in control[1:].split(",")
    if kind == "osc":
        number, _, text = event[1].partition(";")
        if not (number.isascii() and number.isdigit()):
            return False
        number = number.lstrip("0")
        fields = text.split(";")
        if number in ("4", "5", "52") or (len(number) == 2 and "10" <= number <= "19"):
            return "?" in fields
        if number == "21":
            return any(field.endswith("=?") for field in fields)
        if number == "50":
            return text.startswith("?")
        if number == "1337":
            return text.startswith(("ReportCellSize", "ReportVariable"))
        return number in ("60", "61")
    return False


def answered_queries(data: bytes) -> list[Event]:
    return [event for event in parse(data) if is_answered(event)]


def kept_events(data: bytes) -> list[Event]:
    """Everything but the queries and no-ops, with adjacent printed text merged."""
    merged: list[Event] = []
    for event in parse(data):
        # A lone ST, and CAN outside a string, do nothing in xterm.js.
        if is_answered(event) or event in (("esc", "\\"), ("exec", "\x18")):
            continue
        if event[0] == "print" and merged and merged[-1][0] == "print":
            merged[-1] = ("print", merged[-1][1] + event[1])
        else:
            merged.append(event)
    return merged


def test_reference_parser_finds_the_listed_queries() -> None:
    # Keeps the reference honest: it must see each listed query, and no look-alike.
    for _, query in CONTROL_QUERIES:
        assert answered_queries(query), query
    for _, query in STRING_QUERIES:
        assert answered_queries(query + BEL), query
    for _, query in ALL_STRINGS:
        assert answered_queries(query + ST), query
    for _, sequence in LOOK_ALIKES:
        assert not answered_queries(sequence), sequence


FRAGMENTS = [
    *(b"\x1b", b"\x1b[", b"\x1b]", b"\x1bP", b"\x1b_", b"\x1bZ", b"\x1b\\", b"\x1bX", b"\x1b("),
    *(b"[", b"]", b"?", b">", b"=", b"<", b"$", b"+", b"&", b"*", b"#", b'"', b"'", b" "),
    *(b"0", b"1", b"4", b"5", b"6", b"11", b"13", b"14", b"21", b"52", b"60", b"996", b";", b":"),
    *(b"c", b"n", b"p", b"q", b"Q", b"t", b"u", b"m", b"x", b"y", b"w", b"v", b"|", b"R", b"S"),
    *(b"G", b"a=q", b"=?", b"h", b"l", b"H", b"J", b"A", b"text "),
    *(b"\x07", b"\r", b"\n", b"\x00", b"\x18", b"\x1a", b"\x7f"),
    *(b"\xc2\x9b", b"\xc2\x9d", b"\xc2\x90", b"\xc2\x9c", b"\xc2\x85", b"\xc2\x9f", b"\xc2\x98"),
    *("é".encode(), "Û".encode(), "✓".encode(), "©".encode()),
    *(b"\x1b[6n", b"\x1b[c", b"\x1b[>q", b"\x1b[?u", b"\x1b[?2026$p", b"\x1b[14t", b"\x1b[22t"),
    *(b"\x1b]11;?", b"\x1b]10;?\x07", b"\x1bP$qm", b"\x1bP+q544e", b"\x1b_Ga=q;", b"\x1b[38;5;6m"),
    *(b"\x1b]0;title", b"\x1b]8;;http://x/?a=1\x1b\\", b"\x1b[?1004h", b"\x1b[2 q"),
]


def random_streams(count: int, seed: int) -> list[bytes]:
    generator = random.Random(seed)
    return [
        b"".join(generator.choices(FRAGMENTS, k=generator.randint(0, 40))) for _ in range(count)
    ]


def test_random_streams_lose_their_queries_and_nothing_else() -> None:
    streams = random_streams(4000, seed=20240607)
    assert sum(1 for data in streams if answered_queries(data)) > 1000  # the test has teeth
    for data in streams:
        stripped = strip_queries(data)
        assert answered_queries(stripped) == [], data
        assert kept_events(stripped) == kept_events(data), data
        assert strip_queries(stripped) == stripped, data
        if not answered_queries(data):
            assert stripped == data, data


def test_random_bytes_do_not_crash_and_are_idempotent() -> None:
    generator = random.Random(7)
    alphabet = b"\x1b\x07\x18[]P_Z?>=$;0123456789cnpqtu\\\xc2\x9b\x9d\x9c\x90a"
    for _ in range(3000):
        data = bytes(generator.choice(alphabet) for _ in range(generator.randint(0, 60)))
        stripped = strip_queries(data)
        assert strip_queries(stripped) == stripped, data
        assert len(stripped) <= len(data) + 2 * data.count(ESC) + 2 * data.count(b"\xc2"), data
