"""ReplayBuffer: exact offsets, FIFO eviction, replay from an exact safe boundary (SPEC 6.1)."""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator

import pytest

from wxcode_pty import buffer as buffer_module
from wxcode_pty.buffer import ReplayBuffer, safe_start


def fill(capacity: int, stream: bytes, chunk: int = 4095) -> ReplayBuffer:
    buffer = ReplayBuffer(capacity)
    for i in range(0, len(stream), chunk):
        buffer.append(stream[i : i + chunk])
    return buffer


def cut_at(stream: bytes, cut: int) -> ReplayBuffer:
    """A buffer that holds ``stream[cut:]``, filled in small chunks."""
    return fill(len(stream) - cut, stream, chunk=7)


def test_since_returns_exactly_the_missing_bytes() -> None:
    rng = random.Random(7)
    buffer = ReplayBuffer(1000)
    stream = bytearray()
    for _ in range(300):
        chunk = rng.randbytes(rng.randint(1, 120))
        buffer.append(chunk)
        stream += chunk
        assert len(buffer) <= 1000
        assert buffer.end == len(stream)
        for offset in {buffer.start, buffer.end, rng.randint(buffer.start, buffer.end)}:
            replay = buffer.since(offset)
            assert not replay.truncated
            assert (replay.start, replay.end) == (offset, len(stream))
            assert replay.data == bytes(stream[offset:])


def test_evicted_offset_is_truncated_and_starts_at_a_safe_boundary() -> None:
    stream = b"A" * 60 + b"\x1b[31mred\x1b[0m line\r\n" + b"tail"
    buffer = ReplayBuffer(64)
    buffer.append(stream)
    assert buffer.start > 0
    replay = buffer.since(0)
    assert replay.truncated
    # The cut falls in plain text: nothing is skipped.
    assert replay.start == buffer.start
    assert replay.data == stream[-64:]
    assert replay.end == buffer.end
    assert buffer.since(None) == replay.__class__(replay.start, replay.end, replay.data, False)


def test_chunk_larger_than_capacity_keeps_the_newest_bytes() -> None:
    buffer = ReplayBuffer(10)
    buffer.append(b"0123")
    buffer.append(b"abcdefghijklmnop")
    assert buffer.start == 10 and buffer.end == 20
    assert buffer.since(10).data == b"ghijklmnop"


def test_whole_replay_from_the_first_byte_is_not_cut() -> None:
    buffer = ReplayBuffer(100)
    buffer.append(b"\x80not really utf8 but the start of the stream")
    assert buffer.since(None).data.startswith(b"\x80not")


# -- Text is never left out (SPEC 6.1) ----------------------------------------------------------


def test_a_long_line_cut_by_the_buffer_replays_from_the_cut() -> None:
    # A 20,000-character line, its line break and a prompt, through a 4 KiB buffer: the line
    # is replayed from the cut, not dropped up to its end.
    stream = b"x" * 20_000 + b"\r\n$ "
    buffer = fill(4096, stream)
    replay = buffer.since(None)
    assert (replay.start, replay.end) == (len(stream) - 4096, len(stream))
    assert replay.data == stream[-4096:]
    assert buffer.since(0).data == stream[-4096:]  # a truncated resume too
    # Without the line break yet.
    assert fill(4096, b"x" * 20_000).since(None).data == b"x" * 4096


def test_a_small_buffer_keeps_more_than_the_prompt() -> None:
    stream = b"$ cat big.txt\r\n" + b"0123456789" * 2000 + b"\x1b[0m\r\n$ "
    for capacity in (100, 4096):
        replay = fill(capacity, stream).since(None)
        assert replay.start == len(stream) - capacity
        assert replay.data == stream[-capacity:]


def test_a_long_coloured_line_replays_from_the_first_safe_byte() -> None:
    # Colours and UTF-8 but no line break: only the sequence or character cut by the buffer
    # is skipped.
    unit = "\x1b[38;5;208mh\u00e9llo \u20ac \U0001f600\x1b[0m ".encode()
    stream = unit * 1000
    for capacity in range(4096, 4096 + len(unit)):
        replay = fill(capacity, stream).since(None)
        cut = len(stream) - capacity
        assert cut <= replay.start < cut + len(b"\x1b[38;5;208m")
        assert replay.data == stream[replay.start :]
        replay.data.decode()


SGR = b"\x1b[38;5;208m"


@pytest.mark.parametrize("inside", range(1, len(SGR)))
def test_a_replay_cut_inside_a_csi_starts_after_its_final_byte(inside: int) -> None:
    stream = b"before " + SGR + b"orange text"
    cut = len(b"before ") + inside
    replay = cut_at(stream, cut).since(None)
    assert replay.data == b"orange text"
    assert replay.start == len(stream) - len(b"orange text")


@pytest.mark.parametrize("terminator", [b"\x07", b"\x1b\\", b"\xc2\x9c"])
def test_a_replay_cut_inside_an_osc_title_starts_after_its_terminator(terminator: bytes) -> None:
    title = b"\x1b]0;a long window title \xc2\xab\xe2\x80\xa6\xc2\xbb" + terminator
    stream = b"$ " + title + b"prompt> "
    for inside in range(1, len(title)):
        replay = cut_at(stream, 2 + inside).since(None)
        assert replay.data == b"prompt> ", inside


def test_a_replay_cut_inside_an_osc_ended_by_another_sequence_starts_at_that_one() -> None:
    stream = b"\x1b]0;unterminated title\x1b[1mbold"
    for cut in range(1, len(b"\x1b]0;unterminated title") + 1):
        assert cut_at(stream, cut).since(None).data == b"\x1b[1mbold"


@pytest.mark.parametrize("char", ["\u00e9", "\u20ac", "\U0001f600"])
def test_a_replay_cut_inside_a_utf8_character_starts_after_it(char: str) -> None:
    encoded = char.encode()
    stream = b"ab" + encoded + b"cd"
    for inside in range(1, len(encoded)):
        replay = cut_at(stream, 2 + inside).since(None)
        assert replay.data == b"cd"


def test_a_sequence_that_ended_at_the_cut_loses_nothing() -> None:
    for sequence in (SGR, b"\x1b]0;title\x07", b"\x1b]0;title\x1b\\", b"\x1b(B", b"\x1b7"):
        stream = b"before" + sequence + b"after"
        replay = cut_at(stream, len(b"before") + len(sequence)).since(None)
        assert replay.data == b"after"
        # ... and one that starts at the cut is replayed whole.
        replay = cut_at(stream, len(b"before")).since(None)
        assert replay.data == sequence + b"after"


def test_a_c1_csi_split_by_the_cut_is_skipped() -> None:
    # U+009B, encoded C2 9B, is a CSI to xterm.js; the cut falls between its two bytes, far
    # from any ESC.
    stream = b"x" * 10_000 + b"\xc2\x9b31mred"
    buffer = ReplayBuffer(len(b"\x9b31mred"))
    for i in range(0, len(stream), 1000):
        buffer.append(stream[i : i + 1000])
    assert buffer.since(None).data == b"red"


def test_a_c1_csi_evicted_between_appends_far_from_any_esc_is_followed() -> None:
    buffer = ReplayBuffer(4)
    buffer.append(b"x" * 5000)
    buffer.append(b"\xc2\x9b31")  # U+009B: a CSI
    buffer.append(b"m")  # evicts the C2 alone
    assert buffer.since(None).data == b""
    buffer.append(b"r")  # evicts the 9B
    assert buffer.since(None).data == b"r"
    buffer.append(b"ed")
    assert buffer.since(None).data == b"red"
    # A whole C1 CSI in one evicted stretch of text, pending at the cut.
    buffer = ReplayBuffer(8)
    buffer.append(b"y" * 5000)
    buffer.append(b"yy\xc2\x9b3")
    buffer.append(b"1mgr")
    buffer.append(b"een!")  # evicts y C2 9B 3
    assert buffer.since(None).data == b"green!"
    # A C1 OSC after a sequence that ended, then more of the string than the carry holds.
    buffer = ReplayBuffer(8)
    buffer.append(b"\x1b[0m\xc2\x9d0;")
    buffer.append(b"t" * 5000)
    assert buffer.since(None).data == b""
    buffer.append(b"\x07text")
    assert buffer.since(None).data == b"text"


def test_a_long_unfinished_string_holds_the_replay_back_until_it_ends() -> None:
    buffer = ReplayBuffer(100)
    buffer.append(b"text\x1b]52;c;")
    for _ in range(200):  # 20 KB of clipboard data, far longer than the carry
        buffer.append(b"QUJD" * 25)
        assert buffer.since(None).data == b""  # all of it belongs to the string
    buffer.append(b"\x07after")
    assert buffer.since(None).data == b"after"
    # A sixel image in a DCS string ends at ST, also after any C0 control or BEL inside.
    buffer.append(b"\x1bPq#0;2;0;0;0" + b"~\x07@-\n" * 4000 + b"\x1b\\shown")
    assert buffer.since(None).data == b"shown"


@pytest.mark.parametrize(
    ("before", "data", "expected"),
    [
        # Nothing pending: start at the first byte, after a cut character's continuation bytes.
        (b"", b"plain text", 0),
        (b"", "\u00e9".encode()[1:] + b"bc", 1),
        (b"", "\u20ac".encode()[1:] + b"x", 2),
        (b"\x1b[0mtext", b"more", 0),
        # A pending CSI, OSC, DCS, APC, escape with an intermediate.
        (b"\x1b[38;5;2", b"08mtext", 3),
        (b"\x1b[", b"5;1H\x1b[2Jhello", 4),
        (b"\x1b]0;ti", b"tle\x07text", 4),
        (b"\x1b]0;ti", b"tle\x1b\\text", 5),
        (b"\x1bPq#0", b";2;0;0;0~~\x1b\\text", 12),
        (b"\x1b_Ga=T", b",f=100;AAAA\x1b\\text", 13),
        (b"\x1b(", b"Btext", 1),
        (b"\x1b", b"7text", 1),
        # BEL is data in a DCS; CAN and SUB abort anything.
        (b"\x1bP$q", b"m\x07\x1b\\text", 4),
        (b"\x1b[31", b"\x18text", 1),
        (b"\x1b]0;x", b"\x1atext", 1),
        # An ESC or C1 introducer starts a new sequence, complete in the data: start there.
        (b"\x1b[31", b"\x1b[0mtext", 0),
        (b"\x1b]0;x", b"\xc2\x9b0mtext", 0),
        # A C1 CSI whose first byte was before the cut.
        (b"abc\xc2", b"\x9b31mtext", 4),
        # A character from U+00A0 on ends a CSI in error, but is data in an OSC.
        (b"\x1b[3", "\u00e9text".encode(), 2),
        (b"\x1b]0;", "\u00e9t\x07text".encode(), 4),
        # Still pending at the end: nothing to replay.
        (b"\x1b]0;", b"title without end", 17),
        # Only the last sequence before the cut can be pending.
        (b"\x1b]0;x\x1b[3", b"1mtext", 2),
        (b"\x1b[1\x1b[3", b"1mtext", 2),
        (b"\x1b]0;x\xc2\x9b3", b"1mtext", 2),
        # Bytes xterm.js's decoder drops: an overlong '[' (C1 9B) is no CSI, a lone lead byte
        # and a surrogate neither end a CSI.
        (b"abc\xc1", b"\x9b31mtext", 1),
        (b"\x1b[3\xc1", b"\x9b1mtext", 3),
        (b"\x1b[3\xe2", b"1mtext", 2),
        (b"\x1b[3\xed\xa0", b"\x801mtext", 3),
    ],
)
def test_safe_start(before: bytes, data: bytes, expected: int) -> None:
    assert safe_start(data, before) == expected


def test_replay_never_starts_inside_a_utf8_character() -> None:
    text = ("h\u00e9llo w\u00f6rld \u20ac \U0001f600 " * 200).encode()
    for capacity in range(50, 90):
        buffer = ReplayBuffer(capacity)
        buffer.append(text)
        # Without line breaks or escapes in reach, the replay must still decode cleanly.
        replay = buffer.since(None)
        replay.data.decode("utf-8")
        assert replay.start - buffer.start <= 3


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReplayBuffer(0)


# -- Properties over random streams, splits and capacities ------------------------------------

# Complete tokens: every byte position between two of them is a safe start, and none inside
# one is (the parser is in a sequence, or the decoder in a character).
SEQUENCES = [
    b"\x1b[38;5;208m",
    b"\x1b[0m",
    b"\x1b[?25l",
    b"\x1b[12;40H",
    b"\x1b[2 q",  # with an intermediate
    b"\x1b[3\n1m",  # a C0 control inside, executed by xterm.js
    b"\x1b[31\x18",  # aborted by CAN
    b"\xc2\x9b1;31m",  # C1 CSI
    b"\x1b]0;title\x07",
    b"\x1b]2;h\xc3\xa9llo \xc2\xab\xc2\xbb\x1b\\",
    b"\x1b]8;;https://example.com/\x07",  # a hyperlink: its text is in other tokens
    b"\x1b]8;;\x07",
    b"\xc2\x9d0;c1 title\xc2\x9c",
    b"\x1bPq#0;2;0;0;0#0~~@@\x07-\x1b\\",  # BEL is data in a DCS
    b"\x1bP$qm\x1b\\",
    b"\x1b_Ga=T,f=100;AAAA\x1b\\",
    b"\x1b^privacy message\x1b\\",
    b"\x1b7",
    b"\x1b8",
    b"\x1b=",
    b"\x1bM",
    b"\x1bc",
    b"\x1b\\",
    b"\x1b(B",
    b"\x1b#8",
    b"\x1b%G",
]
LONG_STRINGS = [
    b"\x1b]52;c;" + b"QUJD" * 1500 + b"\x07",
    b"\x1bPq" + b"#1~~~~@@@@-" * 600 + b"\x1b\\",
    b"\x1b_Gf=100;" + b"AAAA" * 1500 + b"\x1b\\",
]
# A string without terminator, ended by the ESC of the sequence after it.
UNTERMINATED = [b"\x1b]0;no end", b"\x1bPqdata", b"\x1b_Gabc", b"\x1b]0;" + b"z" * 5000]
CHARACTERS = [
    *(bytes([c]) for c in b"abcxyz 0123;[]\\P_"),
    b"\r",
    b"\n",
    b"\t",
    b"\x07",
    "\u00e9".encode(),
    "\u00a0".encode(),  # C2 A0: not a C1 control
    "\u00ab".encode(),
    "\u20ac".encode(),
    "\u2500".encode(),
    "\U0001f600".encode(),
]


def token_stream(rng: random.Random, size: int) -> tuple[bytes, list[int]]:
    """A stream of tokens and the offsets between them (including 0 and the end)."""
    tokens: list[bytes] = []
    length = 0
    while length < size:
        roll = rng.random()
        if roll < 0.02:
            # A long stretch of text without an ESC.
            new = [rng.choice(CHARACTERS) for _ in range(rng.randint(2000, 6000))]
        elif roll < 0.04:
            new = [rng.choice(LONG_STRINGS)]
        elif roll < 0.08:
            new = [rng.choice(UNTERMINATED), rng.choice(SEQUENCES[:6])]
        elif roll < 0.4:
            new = [rng.choice(SEQUENCES)]
        else:
            new = [rng.choice(CHARACTERS) for _ in range(rng.randint(1, 30))]
        tokens += new
        length += sum(map(len, new))
    boundaries = [0]
    for token in tokens:
        boundaries.append(boundaries[-1] + len(token))
    return b"".join(tokens), boundaries


def chunks(rng: random.Random, stream: bytes, capacity: int) -> Iterator[bytes]:
    i = 0
    while i < len(stream):
        size = rng.choice([1, 2, 3, rng.randint(1, 64), rng.randint(1, 4096), 2 * capacity])
        yield stream[i : i + size]
        i += size


@pytest.mark.parametrize("carry_max", [None, 1, 7])
@pytest.mark.parametrize("seed", range(6))
def test_replay_starts_at_the_first_token_boundary_after_the_cut(
    seed: int, carry_max: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replayed bytes are a suffix of the stream that starts at the first boundary between
    two tokens at or after the cut: never inside a sequence or a character, and no later than
    the end of the one the cut fell in."""
    if carry_max is not None:  # a tiny carry: its canonical form is taken all the time
        monkeypatch.setattr(buffer_module, "_CARRY_MAX", carry_max)
    rng = random.Random(seed)
    stream, boundaries = token_stream(rng, 60_000)
    capacity = rng.choice([1, 5, 64, 300, 4096, 65536 // 4])
    buffer = ReplayBuffer(capacity)
    end = 0
    for chunk in chunks(rng, stream, capacity):
        buffer.append(chunk)
        end += len(chunk)
        replay = buffer.since(None)
        assert replay.end == end
        assert replay.data == stream[replay.start : end]
        if buffer.start == 0:
            assert replay.start == 0
            continue
        expected = min(boundaries[bisect.bisect_left(boundaries, buffer.start)], end)
        if expected == end > buffer.start and stream[end - 1] == 0x1B:
            # The buffer ends with the ESC of an ST whose string the cut fell in: the ESC
            # starts a new sequence as far as anyone can tell yet.
            expected = end - 1
        assert replay.start == expected, (buffer.start, stream[buffer.start - 20 : end])
        assert buffer.since(buffer.start - 1) == replay.__class__(
            replay.start, end, replay.data, True
        )


# An independent model of xterm.js: its UTF-8 decoder (Utf8ToUtf32.decode) written out, then
# one transition per code point, over the whole stream at once.
def xterm_steps(data: bytes) -> Iterator[tuple[int, int, int | None]]:
    """(start, end, code point) per step of the decoder; None for bytes it drops."""
    i = 0
    while i < len(data):
        lead = data[i]
        if lead < 0x80:
            yield i, i + 1, lead
            i += 1
            continue
        if lead & 0xE0 == 0xC0:
            size, code = 2, lead & 0x1F
        elif lead & 0xF0 == 0xE0:
            size, code = 3, lead & 0x0F
        elif lead & 0xF8 == 0xF0:
            size, code = 4, lead & 0x07
        else:
            yield i, i + 1, None
            i += 1
            continue
        j = i + 1
        while j < i + size and j < len(data) and data[j] & 0xC0 == 0x80:
            code = code << 6 | data[j] & 0x3F
            j += 1
        if j == len(data) and j < i + size:
            yield i, j, -2  # unfinished at the end
            return
        if j < i + size:
            yield i, j, None  # wrong continuation: read data[j] afresh
        elif size == 2 and code < 0x80:
            yield i, i + 1, None  # overlong: read the continuation afresh
            j = i + 1
        elif (size == 3 and (code < 0x800 or 0xD800 <= code <= 0xDFFF or code == 0xFEFF)) or (
            size == 4 and not 0x10000 <= code <= 0x10FFFF
        ):
            yield i, j, None
        else:
            yield i, j, code
        i = j


INTRODUCERS = {0x1B, 0x90, 0x98, 0x9B, 0x9D, 0x9E, 0x9F}


class Model:
    """Where a replay of ``stream[cut:end]`` may start: the first step at or after the cut in
    the ground state, or at an introducer (after an ST); ``end`` if the sequence never ends."""

    def __init__(self, stream: bytes) -> None:
        # The parser's table is the one thing shared with the code under test: a transcription
        # of xterm.js 6.0.0's VT500_TRANSITION_TABLE, compared with the original entry by entry
        # when written, and spot-checked below.
        table = buffer_module._TABLE
        self.stream = stream
        self.steps: list[tuple[int, int, int | None, int]] = []
        state = 0
        for start, end, code in xterm_steps(stream):
            self.steps.append((start, end, code, state))
            if code is not None and code >= 0:
                state = table[state][min(code, 0xA0)]
        self.starts = [step[0] for step in self.steps]

    def start(self, cut: int, end: int) -> int:
        for k in range(bisect.bisect_left(self.starts, cut), len(self.steps)):
            start, stop, code, state = self.steps[k]
            if start >= end:
                break
            if state == 0:
                return start
            if stop > end:  # unfinished in what the buffer holds so far
                break
            if code in INTRODUCERS:
                if self.stream[start : start + 2] == b"\x1b\\" and start + 2 <= end:
                    return start + 2
                return start
        return end


def skip_continuations(data: bytes, i: int) -> int:
    while i < len(data) and 0x80 <= data[i] <= 0xBF:
        i += 1
    return i


NOISE = b"\x1b\x1b\x1b\x07\x18\x1a\\[]P_X^;0123456789m\xc2\xc2\x9b\x9c\x9d\x90\x80\xbf\xa0\xe2\xf0\xff\n\xc3"
# Overlong, surrogate, BOM, beyond U+10FFFF: dropped by xterm.js's decoder.
INVALID = [
    b"\xc1\x9b",
    b"\xc0\x80",
    b"\xe0\x81\x9b",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\xf4\x90\x80\x80",
]


def noisy_stream(rng: random.Random, size: int) -> bytes:
    parts: list[bytes] = []
    length = 0
    while length < size:
        roll = rng.random()
        if roll < 0.25:
            part = bytes(rng.choice(NOISE) for _ in range(rng.randint(1, 12)))
        elif roll < 0.3:
            part = rng.choice(INVALID)
        elif roll < 0.33:
            part = rng.choice(LONG_STRINGS)
        elif roll < 0.35:
            part = b"".join(rng.choice(CHARACTERS) for _ in range(rng.randint(2000, 5000)))
        elif roll < 0.7:
            part = rng.choice(SEQUENCES + UNTERMINATED)
        else:
            part = b"".join(rng.choice(CHARACTERS) for _ in range(rng.randint(1, 20)))
        parts.append(part)
        length += len(part)
    return b"".join(parts)


@pytest.mark.parametrize("carry_max", [None, 1, 9])
@pytest.mark.parametrize("seed", range(6))
def test_replay_start_matches_a_model_of_xterm_js_on_noisy_streams(
    seed: int, carry_max: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random bytes among the tokens: invalid UTF-8, C1 controls, stray ESCs, BELs, CANs."""
    if carry_max is not None:
        monkeypatch.setattr(buffer_module, "_CARRY_MAX", carry_max)
    rng = random.Random(1000 + seed)
    stream = noisy_stream(rng, 40_000)
    capacity = rng.choice([1, 3, 50, 700, 5000])
    model = Model(stream)
    buffer = ReplayBuffer(capacity)
    end = 0
    for chunk in chunks(rng, stream, capacity):
        buffer.append(chunk)
        end += len(chunk)
        replay = buffer.since(None)
        assert replay.data == stream[replay.start : end]
        if buffer.start == 0:
            continue
        expected = model.start(buffer.start, end)
        # Continuation bytes right after the start are dropped by xterm.js either way; the
        # replay may or may not include them.
        assert skip_continuations(stream[:end], replay.start) == skip_continuations(
            stream[:end], expected
        ), (buffer.start, stream[buffer.start - 16 : buffer.start + 16])
        assert replay.start >= expected


def test_the_parser_table_follows_the_grammar_of_xterm_js() -> None:
    table = buffer_module._TABLE
    ground, escape, csi_entry, csi_param, apc, osc, dcs, dcs_data = 0, 1, 3, 4, 7, 8, 9, 13
    for row in table:
        assert row[0x1B] == escape  # every ESC starts a new sequence
        assert row[0x18] == row[0x1A] == ground  # CAN and SUB abort
        assert (row[0x9B], row[0x9D], row[0x90], row[0x9F]) == (csi_entry, osc, dcs, apc)
        assert row[0x9C] == ground  # ST
    assert (table[escape][ord("[")], table[escape][ord("]")], table[escape][ord("P")]) == (
        csi_entry,
        osc,
        dcs,
    )
    assert table[csi_param][ord(";")] == table[csi_param][ord("\n")] == csi_param
    assert table[csi_param][ord("m")] == table[csi_param][0xA0] == ground
    assert table[osc][0x07] == ground and table[osc][0xA0] == table[osc][ord("x")] == osc
    assert table[dcs_data][0x07] == dcs_data  # BEL is data in a DCS
    assert table[apc][0x07] == apc and table[apc][0xA0] == ground


def test_each_canonical_carry_leaves_the_parser_in_its_state() -> None:
    canonical = buffer_module._CANONICAL
    for state, carry in enumerate(canonical):
        assert buffer_module._run(carry, len(carry)) == (len(carry), state)
        assert buffer_module._canonical(carry) == carry
        assert buffer_module._canonical(carry + b"\xe2\x82") == carry + b"\xe2\x82"


def test_the_carry_is_a_slice_of_the_evicted_bytes_or_a_canonical_form() -> None:
    # Output with an ESC in every evicted stretch keeps a slice of it as the carry.
    buffer = ReplayBuffer(64)
    buffer.append(b"\x1b[1mbold\x1b[0m")
    buffer.append(b"x" * 60)
    assert bytes(buffer._carry) == b"\x1b[1mbold"
    # A stretch without ESC past the limit is reduced to the parser's state.
    buffer.append(b"y" * 5000)
    assert buffer._carry == b""
    buffer.append(b"\x1b]0;" + b"t" * 5000)
    assert buffer._carry == b"\x1b]"
