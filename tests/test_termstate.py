"""TerminalState and TerminalTimeline: the state a program sets once, and the prelude for it.

Besides examples, random streams built from sequence fragments check three properties: a fresh
state fed the prelude equals the state, a stream split anywhere gives the same state as the
whole, and the timeline's state at any offset of its window equals a state fed the stream up to
that offset.
"""

from __future__ import annotations

import random
import time

import pytest

from wxcode_pty.buffer import ReplayBuffer
from wxcode_pty.termstate import TerminalState, TerminalTimeline

FRESH = TerminalState()
CLAUDE_STARTUP = b"\x1b[?2004h\x1b[?1004h\x1b[?2031h\x1b[?25l\x1b[>0q"

# Modes that are only on or off, and whether a fresh terminal has them on.
FLAG_MODES = {
    1: False,
    6: False,
    7: True,
    25: True,
    45: False,
    66: False,
    1004: False,
    1005: False,
    1015: False,
    2004: False,
    2026: False,
    2031: False,
}

FRAGMENTS = [
    *(b"\x1b[?%d%s" % (mode, final) for mode in FLAG_MODES for final in (b"h", b"l")),
    b"\x1b[?1049h",
    b"\x1b[?1049l",
    b"\x1b[?47h",
    b"\x1b[?1047h",
    b"\x1b[?1047l",
    b"\x1b[?1000;1006h",
    b"\x1b[?1002h",
    b"\x1b[?1003l",
    b"\x1b[?1016h",
    b"\x1b[?1006l",
    b"\x1b[?9h",
    b"\x1b[?2004;1049;25l",
    b"\x1b=",
    b"\x1b>",
    b"\x1b[>1u",
    b"\x1b[>5u",
    b"\x1b[>u",
    b"\x1b[<u",
    b"\x1b[<2u",
    b"\x1b[=3u",
    b"\x1b[=4;2u",
    b"\x1b[=1;3u",
    b"\x1b[>4;2m",
    b"\x1b[>4;1m",
    b"\x1b[>4m",
    b"\x1b[>m",
    b"\x1b[3;20r",
    b"\x1b[r",
    b"\x1b[5r",
    b"\x1b[10;4r",
    b"\x1b[2 q",
    b"\x1b[5 q",
    b"\x1b[0 q",
    b"\x1b[ q",
    b"\x1b[7 q",
    b"\x1b[8 q",
    b"\x1b[!p",
    b"\x1bc",
    b"\x1b]0;t\xc3\xa9st\x07",
    b"\x1b]2;two\x1b\\",
    b"\x1b]2;\x07",
    b"\x1b]1;icon only\x07",
    b"\x1b]2;ended by the next ESC",
    b"\xc2\x9b?2004h",
    b"\xc2\x9d2;c1 title\xc2\x9c",
    # Output that changes nothing followed.
    b"hello ",
    "│ ✻ é ".encode(),
    b"\xc2\xa0",
    b"\x1b[31mred\x1b[0m",
    b"\x1b[2K\x1b[1A\x1b[G",
    b"\x1b[38;2;255;100;0m",
    b"\r\n",
    b"\x1b[6n",
    b"\x1b[?2026$p",
    b"\x1b[>0q",
    b"\x1b]8;;https://example.com\x1b\\",
    b"\x1bP$qm\x1b\\",
    # Sequences left unfinished, then abandoned by what follows.
    b"\x1b[?20",
    b"\x1b",
    b"\x1b]2;cut",
    b"\x1b[>4;",
    b"\xc2",
]


def fed(*chunks: bytes) -> TerminalState:
    state = TerminalState()
    for chunk in chunks:
        state.feed(chunk)
    return state


def random_stream(rng: random.Random, fragments: int) -> bytes:
    return b"".join(rng.choice(FRAGMENTS) for _ in range(fragments))


def random_chunks(rng: random.Random, data: bytes) -> list[bytes]:
    chunks = []
    position = 0
    while position < len(data):
        size = rng.choice((1, 2, 3, rng.randint(1, 40), rng.randint(1, 400)))
        chunks.append(data[position : position + size])
        position += size
    return chunks


# -- modes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(FLAG_MODES))
def test_flag_mode_set_and_reset(mode: int) -> None:
    default_on = FLAG_MODES[mode]
    changed = fed(b"\x1b[?%d%s" % (mode, b"l" if default_on else b"h"))
    assert (mode in changed.modes) is not default_on
    assert changed != FRESH
    back = fed(b"\x1b[?%d%s" % (mode, b"l" if default_on else b"h"))
    back.feed(b"\x1b[?%d%s" % (mode, b"h" if default_on else b"l"))
    assert back == FRESH


def test_fresh_state_defaults() -> None:
    assert FRESH.modes == {7, 25}
    assert FRESH.prelude() == b""


def test_several_modes_in_one_sequence() -> None:
    state = fed(b"\x1b[?1049;1002;1006;2004;25;7l")  # l: all reset, the fresh ones stay off
    assert state.modes == frozenset()
    state = fed(b"\x1b[?1049;1002;1006;2004h")
    assert state.alt_screen == 1049
    assert state.mouse_protocol == 1002
    assert state.mouse_encoding == 1006
    assert state.modes == {7, 25, 2004}


def test_keypad_mode_by_escape_and_by_decnkm() -> None:
    assert 66 in fed(b"\x1b=").modes
    assert fed(b"\x1b=\x1b>") == FRESH
    assert fed(b"\x1b[?66h") == fed(b"\x1b=")
    assert fed(b"\x1b=\x1b[?66l") == FRESH


def test_mouse_protocols_and_encodings_replace_each_other() -> None:
    state = fed(b"\x1b[?1000h\x1b[?1003h")
    assert state.mouse_protocol == 1003
    # As in xterm.js, turning off any protocol turns the mouse off.
    state.feed(b"\x1b[?1000l")
    assert state.mouse_protocol == 0
    state.feed(b"\x1b[?1006h\x1b[?1016h")
    assert state.mouse_encoding == 1016
    state.feed(b"\x1b[?1006l")
    assert state.mouse_encoding == 0


def test_alternate_screen_enter_and_leave() -> None:
    state = fed(b"\x1b[?1049h\x1b[?47h")
    assert state.alt_screen == 1049  # the mode that showed it
    state.feed(b"\x1b[?47l")
    assert state == FRESH
    assert fed(b"\x1b[?1047h").alt_screen == 1047


def test_other_dec_modes_and_ansi_modes_are_not_followed() -> None:
    assert fed(b"\x1b[?12h\x1b[?1048h\x1b[?9001h\x1b[4h\x1b[20h\x1b[?3h") == FRESH


# -- keyboard, scroll region, cursor, title --------------------------------------------------


def test_kitty_push_pop_and_set() -> None:
    state = TerminalState()
    steps = [
        (b"\x1b[>1u\x1b[>3u", (3, (0, 1))),
        (b"\x1b[<u", (1, (0,))),
        (b"\x1b[=4;2u", (5, (0,))),  # or
        (b"\x1b[=1;3u", (4, (0,))),  # and not
        (b"\x1b[=2u", (2, (0,))),  # set
        # Popping the last entry (or more than there are) leaves no flags, as in xterm.js.
        (b"\x1b[<5u", (0, ())),
        (b"\x1b[=5u\x1b[>1u", (1, (5,))),
        (b"\x1b[<u", (0, ())),  # not 5: the stack is empty
    ]
    for sequences, keyboard in steps:
        state.feed(sequences)
        assert state.main_keyboard == keyboard, sequences
    assert state == FRESH


def test_kitty_stack_is_bounded() -> None:
    state = fed(b"".join(b"\x1b[>%du" % n for n in range(1, 41)))
    flags, stack = state.main_keyboard
    assert flags == 40
    assert stack == tuple(range(24, 40))
    assert fed(state.prelude()) == state


def test_kitty_flags_belong_to_each_screen() -> None:
    state = fed(b"\x1b[>1u\x1b[?1049h")
    assert (state.main_keyboard, state.alt_keyboard) == ((1, (0,)), (0, ()))
    state.feed(b"\x1b[>8u\x1b[?1049l")
    assert (state.main_keyboard, state.alt_keyboard) == ((1, (0,)), (8, (0,)))
    assert fed(state.prelude()) == state


def test_modify_other_keys() -> None:
    assert fed(b"\x1b[>4;2m").modify_other_keys == 2
    assert fed(b"\x1b[>4;2m\x1b[>4m") == FRESH
    assert fed(b"\x1b[>4;2m\x1b[>m") == FRESH
    assert fed(b"\x1b[>4;2m\x1b[>1;3m").modify_other_keys == 2  # another resource
    # Claude's exit: modifyOtherKeys and the kitty flags back.
    assert fed(b"\x1b[>4;1m\x1b[>1u", b"\x1b[>4m\x1b[<u") == FRESH


def test_scroll_region() -> None:
    assert fed(b"\x1b[3;20r").main_region == (3, 20)
    assert fed(b"\x1b[5r").main_region == (5, 0)
    assert fed(b"\x1b[3;20r\x1b[r") == FRESH
    assert fed(b"\x1b[3;20r\x1b[1;0r") == FRESH
    assert fed(b"\x1b[3;20r\x1b[10;4r").main_region == (3, 20)  # refused, as xterm.js does
    assert fed(b"\x1b[3;20r\x1b[4;4r").main_region == (3, 20)


def test_scroll_region_belongs_to_each_screen() -> None:
    state = fed(b"\x1b[2;10r\x1b[?1049h\x1b[5;6r")
    assert (state.main_region, state.alt_region) == ((2, 10), (5, 6))
    assert fed(state.prelude()) == state
    # Leaving clears the alternate screen, its region with it.
    state.feed(b"\x1b[?1049l")
    assert (state.main_region, state.alt_region) == ((2, 10), None)


@pytest.mark.parametrize(
    ("sequences", "style"),
    [
        (b"\x1b[2 q", 2),
        (b"\x1b[6 q", 6),
        (b"\x1b[2 q\x1b[ q", 0),  # no parameter is 0 to xterm.js's parser
        (b"\x1b[5 q\x1b[0 q", 0),
        # Beyond 6 xterm.js keeps the shape and takes blinking from the parity.
        (b"\x1b[4 q\x1b[7 q", 3),
        (b"\x1b[5 q\x1b[8 q", 6),
        (b"\x1b[9 q", 7),
        (b"\x1b[10 q", 8),
    ],
)
def test_cursor_style(sequences: bytes, style: int) -> None:
    state = fed(sequences)
    assert state.cursor_style == style
    assert fed(state.prelude()) == state


@pytest.mark.parametrize(
    ("sequence", "title"),
    [
        (b"\x1b]0;zero\x07", b"zero"),
        (b"\x1b]2;two\x1b\\", b"two"),
        (b"\x1b]02;leading zero\x07", b"leading zero"),
        (b"\x1b]2;ended by a sequence\x1b[m", b"ended by a sequence"),
        (b"\x1b]2;\xe2\x9c\xb3 Claude\x07", "✳ Claude".encode()),
        (b"\x1b]2;con\ttrols\x01\x07", b"controls"),
        (b"\x1b]2\x07", b""),
        (b"\xc2\x9d2;c1\xc2\x9c", b"c1"),
    ],
)
def test_title(sequence: bytes, title: bytes) -> None:
    state = fed(b"\x1b]2;old\x07" + sequence)
    assert state.title == title
    assert fed(state.prelude()) == state


@pytest.mark.parametrize(
    "sequence",
    [
        b"\x1b]1;icon name\x07",
        b"\x1b]20;twenty\x07",
        b"\x1b]22;x\x07",
        b"\x1b];no number\x07",
        b"\x1b]\x01;only a control\x07",
        b"\x1b]2;aborted\x18",
        b"\x1b]2;unfinished",
    ],
)
def test_not_a_title(sequence: bytes) -> None:
    assert fed(b"\x1b]2;old\x07" + sequence).title == b"old"


def test_long_title_is_kept_to_whole_characters() -> None:
    title = "✳".encode() * 2000
    state = fed(b"x" * 10, b"\x1b]2;" + title + b"\x07")
    assert 1000 <= len(state.title) <= 1024
    assert state.title == title[: len(state.title)]
    state.title.decode()  # no character cut in two
    assert fed(state.prelude()) == state


# -- resets ----------------------------------------------------------------------------------


EVERYTHING = (
    b"\x1b[?1;6;45;1004;1005;1015;2004;2026;2031h\x1b[?7;25l\x1b="
    b"\x1b[?1002;1006h\x1b[>4;2m\x1b[>1u\x1b[3;9r\x1b[4 q\x1b]2;title\x07\x1b[?1049h\x1b[>2u\x1b[2;5r"
)


def test_soft_reset_resets_what_xterm_js_resets() -> None:
    state = fed(EVERYTHING, b"\x1b[!p")
    expected = TerminalState(
        modes=frozenset({7, 25, 1005, 1015}),
        alt_screen=1049,
        mouse_protocol=1002,
        mouse_encoding=1006,
        modify_other_keys=2,
        main_region=(3, 9),  # only the shown screen's region
        title=b"title",
    )
    assert state == expected


def test_full_reset_resets_everything_but_the_title() -> None:
    assert fed(EVERYTHING, b"\x1bc") == TerminalState(title=b"title")


# -- the parser ------------------------------------------------------------------------------


def test_controls_inside_a_sequence_are_executed_and_it_goes_on() -> None:
    assert 2004 in fed(b"\x1b\n[?20\r04h").modes
    assert fed(b"\x1b[\x08>1u").main_keyboard == (1, (0,))


def test_cancelled_or_interrupted_sequences_do_nothing() -> None:
    assert fed(b"\x1b[?20\x1804h") == FRESH  # CAN
    assert fed(b"\x1b[?20\x1a04h") == FRESH  # SUB
    assert fed(b"\x1b[?20\x1b[?1h").modes == {1, 7, 25}  # ESC starts another
    assert fed(b"\x1b[?2004$h") == FRESH  # an intermediate makes it another function
    assert fed(b"\x1b[1?2004h") == FRESH  # a prefix after a parameter is refused


def test_text_that_only_looks_like_sequences() -> None:
    assert fed(b"[?2004h =c [>1u [3;4r [2 q ]2;x\x07 \xc2\xa0\xc2") == FRESH


def test_c1_introducers() -> None:
    assert 2004 in fed(b"\xc2\x9b?2004h").modes
    assert 2004 in fed(b"\xc2", b"\x9b?2004h").modes
    assert fed(b"\xc2\x9b?2004h\xc2\x9b?2004l") == FRESH


def test_huge_parameters_do_not_fail() -> None:
    state = fed(b"\x1b[?" + b"9" * 5000 + b"h\x1b[>" + b"7" * 5000 + b"u\x1b[" + b"1" * 30 + b" q")
    assert state.main_keyboard == (0x7FFFFFFF, (0,))
    assert state.cursor_style == 7  # 2**31 - 1: odd, blinking
    assert fed(state.prelude()) == state


def test_every_split_in_two_gives_the_same_state() -> None:
    data = EVERYTHING + b"text \xc2\x9b?66h\x1b]0;\xe2\x9c\xb3 done\x1b\\\x1b[<u\x1b[!p\x1b[?2004h"
    whole = fed(data)
    assert whole != FRESH
    for cut in range(len(data) + 1):
        assert fed(data[:cut], data[cut:]) == whole, cut


def test_byte_by_byte_gives_the_same_state() -> None:
    rng = random.Random(3)
    for _ in range(50):
        data = random_stream(rng, 30)
        assert fed(*(data[i : i + 1] for i in range(len(data)))) == fed(data)


def test_random_chunks_give_the_same_state() -> None:
    rng = random.Random(4)
    for _ in range(300):
        data = random_stream(rng, 40)
        assert fed(*random_chunks(rng, data)) == fed(data)


def test_unfinished_sequences_carried_over_are_bounded() -> None:
    state = fed(b"\x1b]2;" + b"t" * 100_000)
    state.feed(b"t" * 100_000)
    state.feed(b"\x07")
    assert state.title == b""  # longer than the carried tail: not followed
    # The same title in one read is followed, and kept to the limit.
    assert len(fed(b"\x1b]2;" + b"t" * 4000 + b"\x07").title) == 1024


def test_adversarial_output_stays_linear() -> None:
    for data in (
        b"\x1b[" + b"1;" * 200_000,
        b"\x1b]2;" + b"0" * 400_000,
        b"\x1b" * 400_000,
        b"\x1b]" + b"2" * 400_000,
        b"\x1b[?" * 130_000,
    ):
        started = time.perf_counter()
        fed(data, b"x")
        assert time.perf_counter() - started < 1.0


# -- the prelude -----------------------------------------------------------------------------


def test_prelude_round_trip_on_random_streams() -> None:
    rng = random.Random(5)
    changed = 0
    for _ in range(500):
        state = fed(random_stream(rng, rng.randint(1, 60)))
        changed += state != FRESH
        prelude = state.prelude()
        assert fed(prelude) == state, prelude
    assert changed > 400


def test_prelude_order() -> None:
    state = fed(
        b"\x1b[>1u\x1b[2;10r\x1b[?1049h\x1b[?2004;1000h\x1b[>3u\x1b[4;5r\x1b[?25l\x1b]2;t\x07"
    )
    prelude = state.prelude()
    # The normal screen's own state, the alternate screen, its own state, then the rest.
    assert prelude == (
        b"\x1b[=0u\x1b[>1u\x1b[2;10r"
        b"\x1b[?1049h"
        b"\x1b[=0u\x1b[>3u\x1b[4;5r"
        b"\x1b[?2004;1000h\x1b[?25l\x1b]2;t\x07"
    )
    assert fed(prelude) == state


def test_prelude_visits_the_alternate_screen_for_its_keyboard_flags() -> None:
    state = fed(b"\x1b[?1049h\x1b[>5u\x1b[?1049l")
    assert state.prelude() == b"\x1b[?1047h\x1b[=0u\x1b[>5u\x1b[?1047l"
    assert fed(state.prelude()) == state


def test_claude_startup_then_more_output_than_the_buffer_holds() -> None:
    buffer = ReplayBuffer(65536)
    timeline = TerminalTimeline(65536)
    rng = random.Random(6)
    chunks = [CLAUDE_STARTUP]
    size = len(CLAUDE_STARTUP)
    while size < 200 * 1024:
        line = b"\x1b[2K\x1b[38;2;%d;0;0m%s\x1b[39m\r\n" % (rng.randrange(256), b"w" * 70)
        frame = b"\x1b[?2026h" + line * rng.randint(1, 20) + b"\x1b[?2026l"
        chunks.append(frame)
        size += len(frame)
    for chunk in chunks:
        buffer.append(chunk)
        timeline.feed(chunk)
    assert timeline.end == buffer.end
    replay = buffer.since(None)
    assert replay.start > len(CLAUDE_STARTUP)
    assert b"\x1b[?2004h" not in replay.data
    prelude = timeline.prelude(replay.start)
    # Synchronized output is on when the replay starts inside a frame.
    stream = b"".join(chunks)
    inside = stream.rfind(b"\x1b[?2026h", 0, replay.start) > stream.rfind(
        b"\x1b[?2026l", 0, replay.start
    )
    modes = b"1004;2004;2026;2031" if inside else b"1004;2004;2031"
    assert prelude == b"\x1b[?%sh\x1b[?25l" % modes
    client = fed(prelude)
    assert {1004, 2004, 2031} <= client.modes
    assert 25 not in client.modes
    # The replay then starts between frames or inside one; what it sets on top is its own.
    assert fed(prelude, replay.data) == timeline.state_at(replay.end)


# -- the timeline ----------------------------------------------------------------------------


def test_timeline_state_at_offsets() -> None:
    timeline = TerminalTimeline(1000)
    timeline.feed(b"abc\x1b[?2004h")  # ends at 11
    timeline.feed(b"x" * 100 + b"\x1b[?1")
    timeline.feed(b"049h" + b"y" * 10)  # ends at 111 + 8
    timeline.feed(b"\x1b[?2004l")
    assert timeline.end == 11 + 104 + 14 + 8
    assert timeline.state_at(3) == FRESH
    assert timeline.state_at(10) == FRESH  # inside the sequence: not in force yet
    assert timeline.state_at(11).modes == {7, 25, 2004}
    assert timeline.state_at(118).alt_screen == 0
    assert timeline.state_at(119).alt_screen == 1049
    assert timeline.state_at(timeline.end) == TerminalState(alt_screen=1049)
    assert timeline.prelude(50) == b"\x1b[?2004h"


def test_timeline_matches_a_state_fed_up_to_each_offset_of_its_window() -> None:
    rng = random.Random(7)
    for _ in range(40):
        data = random_stream(rng, 120)
        window = rng.randint(1, len(data))
        timeline = TerminalTimeline(window, max_changes=10_000)
        for chunk in random_chunks(rng, data):
            timeline.feed(chunk)
        assert timeline.end == len(data)
        for offset in range(len(data) - window, len(data) + 1):
            # A sequence ends at its last byte, or, for an OSC string that the next ESC ends,
            # where that ESC starts. That ESC or else CAN (which abandons what is unfinished)
            # makes a state fed up to the offset take what ends there, and nothing more.
            end = b"\x1b" if data[offset : offset + 1] == b"\x1b" else b"\x18"
            assert timeline.state_at(offset) == fed(data[:offset] + end), offset


def test_timeline_folds_what_leaves_the_window() -> None:
    timeline = TerminalTimeline(100)
    timeline.feed(b"\x1b[?2004h" + b"x" * 200)
    assert timeline.state_at(150).modes == {7, 25, 2004}
    assert timeline.state_at(0).modes == {7, 25, 2004}  # before the window: its start
    timeline.feed(b"\x1b[?2004l" + b"x" * 50)
    assert timeline.state_at(timeline.end - 60) == TerminalState(modes=frozenset({7, 25, 2004}))
    assert timeline.state_at(timeline.end) == FRESH


def test_timeline_memory_is_bounded() -> None:
    timeline = TerminalTimeline(10_000_000, max_changes=100)
    for _ in range(1000):
        timeline.feed(b"\x1b[?25l\x1b[?25h")
    timeline.feed(b"\x1b[?2004h")
    assert len(timeline._changes) <= 100
    assert timeline.state_at(timeline.end).modes == {7, 25, 2004}


def test_timeline_starting_later_in_a_stream() -> None:
    timeline = TerminalTimeline(100, start=5000)
    timeline.feed(b"\x1b[?1h")
    assert timeline.end == 5005
    assert timeline.state_at(5004) == FRESH
    assert 1 in timeline.state_at(5005).modes


def test_timeline_rejects_bad_limits() -> None:
    with pytest.raises(ValueError):
        TerminalTimeline(0)
    with pytest.raises(ValueError):
        TerminalTimeline(10, max_changes=0)
