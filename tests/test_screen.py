"""``ScreenModel``: snapshots that redraw the program's screen, and the bounded cost of keeping it.

A snapshot is checked the way a browser would use it: written into a fresh terminal of the same
size, it must show what a terminal that saw the whole stream shows (text, colours, cursor,
scrollback). The reference terminals here are plain ``avt.Vt`` instances, outside the model.
"""

from __future__ import annotations

import asyncio
import time

import avt
import pytest

from wxcode_pty.screen import ScreenModel

COLS, ROWS = 60, 12
ESC = "\x1b"
#: Claude's prompt mark.
PROMPT = "\u276f"


def terminal(data: bytes, cols: int = COLS, rows: int = ROWS, scrollback: int = 1000) -> avt.Vt:
    vt = avt.Vt(cols, rows, scrollback_limit=scrollback)
    vt.feed_str(data.decode())
    return vt


def screen(vt: avt.Vt) -> list[str]:
    return [line.text.rstrip() for line in vt.view()]


def history(vt: avt.Vt) -> list[str]:
    """The scrollback lines, oldest first."""
    lines = vt.lines()
    return [line.text.rstrip() for line in lines[: len(lines) - vt.size[1]]]


def cells(vt: avt.Vt) -> list[list[tuple[str, str]]]:
    """Each visible cell's character and pen, for comparing colours and attributes."""
    return [[(cell.char, pen_text(cell.pen)) for cell in line.cells] for line in vt.view()]


def pen_text(pen: avt.Pen) -> str:
    flags = (pen.bold, pen.faint, pen.italic, pen.underline, pen.inverse, pen.strikethrough)
    return f"{pen.foreground!r}/{pen.background!r}/{flags}"


def cursor(vt: avt.Vt) -> tuple[int, int, bool]:
    return vt.cursor.row, vt.cursor.col, vt.cursor.visible


def model_fed(data: bytes, cols: int = COLS, rows: int = ROWS, **kwargs: int) -> ScreenModel:
    model = ScreenModel(cols, rows, **kwargs)
    for i in range(0, len(data), 4096):
        model.feed(data[i : i + 4096])
    return model


def snapshot_of(model: ScreenModel, history_bytes: bytes = b"") -> bytes:
    snap = model.snapshot(lambda: history_bytes)
    assert snap is not None
    return snap


def assert_same_terminal(snap: bytes, expected: avt.Vt) -> None:
    cols, rows = expected.size
    got = terminal(snap, cols, rows)
    assert screen(got) == screen(expected)
    assert cells(got) == cells(expected)
    assert cursor(got) == cursor(expected)


# -- what Claude's TUI does ------------------------------------------------------------------


def conversation() -> bytes:
    """A full-screen draw in Ink's manner: a header, a conversation, a prompt box, a spinner."""
    out = [f"{ESC}[?25l{ESC}[2J{ESC}[H"]
    out.append(f"{ESC}[38;2;215;119;87m✻{ESC}[39m {ESC}[1mWelcome to Claude Code{ESC}[22m\r\n")
    out.append(f"{ESC}[38;5;246m> explain the replay buffer{ESC}[39m\r\n\r\n")
    for i in range(6):
        out.append(f"  ● Point {i}: offsets count bytes {ESC}[3msince the start{ESC}[23m\r\n")
    out.append(f"{ESC}[48;2;40;40;40m{PROMPT} {ESC}[49m\r\n")
    out.append("· Thinking… (0s · esc to interrupt)\r\n")
    return "".join(out).encode()


def spinner_frame(k: int) -> str:
    """One redraw of the spinner line, as Claude writes it: move up, redraw, move back."""
    glyph = "·✢*✶✻✽"[k % 6]
    return (
        f"{ESC}[1A\r{ESC}[2K{ESC}[38;2;215;{119 + k % 40};87m{glyph}{ESC}[39m "
        f"Thinking… ({k}s · esc to interrupt)\r\n"
    )


def spinner_redraws(size: int) -> bytes:
    """Redraws of the spinner, at least ``size`` bytes, ending with the frame of 9999 seconds."""
    out = bytearray()
    k = 1
    while len(out) < size:
        out += spinner_frame(k).encode()
        k += 1
    return bytes(out + spinner_frame(9999).encode())


def test_a_long_spinner_does_not_hide_the_conversation() -> None:
    data = conversation() + spinner_redraws(200 * 1024)
    model = model_fed(data)
    snap = snapshot_of(model)
    # The snapshot is the screen, not the last 64 KiB of redraws.
    assert len(snap) < 4096
    expected = terminal(data)
    assert_same_terminal(snap, expected)
    shown = screen(terminal(snap))
    assert shown[0] == "✻ Welcome to Claude Code"
    assert shown[1] == "> explain the replay buffer"
    assert shown[3] == "  ● Point 0: offsets count bytes since the start"
    assert shown[9] == PROMPT
    assert shown[10] == "✶ Thinking… (9999s · esc to interrupt)"
    assert cursor(terminal(snap))[:2] == (11, 0)
    # Claude hides the cursor: so does the snapshot.
    assert cursor(terminal(snap))[2] is False


def test_colours_and_attributes_survive() -> None:
    data = (
        f"{ESC}[38;5;196mred{ESC}[48;5;21mblue{ESC}[0m {ESC}[38;2;10;20;30;48;2;200;100;50mrgb"
        f"{ESC}[0m {ESC}[1;3;4;7;9mall{ESC}[0m {ESC}[2mdim{ESC}[0m {ESC}[91;102mbright{ESC}[0m"
        f" {ESC}[33mopen pen"
    ).encode()
    snap = snapshot_of(model_fed(data))
    expected = terminal(data)
    assert_same_terminal(snap, expected)
    # Blue kept its own component: the snapshot uses semicolons, not avt's colon form.
    assert b"38;2;10;20;30" in snap and b":" not in snap
    # The program's pen is still in force for what it writes next.
    after = terminal(snap + b"X")
    assert cells(after) == cells(terminal(data + b"X"))


def test_wide_characters() -> None:
    data = ("世界你好 🎉🚀 テキスト\r\n" + "a" * (COLS - 1) + "世\r\n" + "宽" * 40).encode()
    snap = snapshot_of(model_fed(data))
    expected = terminal(data)
    assert_same_terminal(snap, expected)
    assert screen(terminal(snap))[0] == "世界你好 🎉🚀 テキスト"


def test_scrollback_comes_before_the_screen() -> None:
    lines = [f"{ESC}[3{i % 8}mline {i}{ESC}[0m" for i in range(100)]
    data = "\r\n".join(lines).encode()
    model = model_fed(data, scrollback=50)
    snap = snapshot_of(model)
    got = terminal(snap)
    expected = terminal(data)
    assert_same_terminal(snap, expected)
    # 100 lines on 12 rows: 88 went up, of which the model keeps 50.
    assert history(got) == [f"line {i}" for i in range(38, 88)]
    assert screen(got) == [f"line {i}" for i in range(88, 100)]
    assert snap.index(b"line 38") < snap.index(b"line 87") < snap.index(b"line 88")


def test_a_short_history_still_leaves_the_screen_in_place() -> None:
    data = "\r\n".join(f"row {i}" for i in range(ROWS + 3)).encode()
    snap = snapshot_of(model_fed(data))
    got = terminal(snap)
    assert history(got) == ["row 0", "row 1", "row 2"]
    assert_same_terminal(snap, terminal(data))


def test_a_mostly_blank_screen_under_scrollback() -> None:
    # The screen's blank rows are not written out: the screen must still start at the top.
    data = ("\r\n".join(f"old {i}" for i in range(30)) + f"{ESC}[2J{ESC}[Htop").encode()
    snap = snapshot_of(model_fed(data))
    assert_same_terminal(snap, terminal(data))
    got = terminal(snap)
    assert screen(got)[0] == "top"
    assert history(got)[-1] == "old 17"


def test_alternate_screen_and_scroll_region() -> None:
    data = (
        "shell prompt $ vim\r\n"
        f"{ESC}[?1049h{ESC}[H{ESC}[2J{ESC}[3;8r{ESC}[8;1H"
        + "".join(f"\nregion {i}" for i in range(10))
        + f"{ESC}[1;1Htitle{ESC}[12;1H-- INSERT --{ESC}[5;3H"
    ).encode()
    snap = snapshot_of(model_fed(data))
    assert_same_terminal(snap, terminal(data))
    # Output after the snapshot lands as it would have: inside the scroll region, and when the
    # program leaves the alternate screen the shell's screen comes back.
    more = b"\n\n\n\n\n\nmore" + f"{ESC}[r{ESC}[?1049l".encode() + b"back"
    assert_same_terminal(snap + more, terminal(data + more))
    assert screen(terminal(snap + more))[0] == "shell prompt $ vim"


def test_soft_wrapped_lines_and_utf8_split_across_feeds() -> None:
    text = ("é世🎉" * 30).encode()
    model = ScreenModel(COLS, ROWS)
    for byte in range(len(text)):  # every UTF-8 sequence cut in every possible place
        model.feed(text[byte : byte + 1])
        model.drain(1)
    assert_same_terminal(snapshot_of(model), terminal(text))


# -- bounded cost ----------------------------------------------------------------------------


def test_feed_only_queues() -> None:
    model = ScreenModel(COLS, ROWS)
    data = conversation()
    model.feed(data)
    assert model.pending == len(data)
    blank = snapshot_of(ScreenModel(COLS, ROWS))
    # Nothing parsed yet; the snapshot parses the rest first.
    assert snapshot_of(model) != blank
    assert model.pending == 0


def test_drain_never_exceeds_its_budget() -> None:
    data = conversation() + spinner_redraws(100 * 1024)
    model = model_fed(data)
    total = 0
    while model.pending:
        before = model.pending
        done = model.drain(3000)
        assert 0 < done <= 3000
        assert model.pending == before - done
        total += done
    assert total == len(data)
    assert model.drain(3000) == 0
    assert_same_terminal(snapshot_of(model), terminal(data))


def test_a_flood_makes_the_model_stale_and_a_rebuild_restores_it() -> None:
    model = ScreenModel(COLS, ROWS, pending_limit=64 * 1024)
    flood = "".join(f"flood line {i}\r\n" for i in range(20000)).encode()
    for i in range(0, len(flood), 4096):
        model.feed(flood[i : i + 4096])
    assert model.stale
    assert model.pending == 0
    model.feed(b"dropped")
    assert model.pending == 0
    # What the replay buffer still holds (its last 64 KiB), cut at a line as buffer.since does.
    window = flood[-65536:]
    window = window[window.index(b"\n") + 1 :]
    snap = model.snapshot(lambda: window)
    assert snap is not None
    assert not model.stale
    shown = screen(terminal(snap))
    assert shown[-2] == "flood line 19999"
    assert shown[0] == f"flood line {19999 - ROWS + 2}"
    # Live again: further output is parsed.
    model.feed(b"after")
    assert screen(terminal(snapshot_of(model)))[-1] == "after"


def test_rebuild_replaces_what_was_queued() -> None:
    model = ScreenModel(COLS, ROWS)
    model.feed(b"old output that the history already holds\r\n")
    model.rebuild(b"the history\r\nends here")
    assert model.pending == 0
    assert screen(terminal(snapshot_of(model)))[:2] == ["the history", "ends here"]


def test_resize_applies_between_the_bytes_around_it() -> None:
    model = ScreenModel(20, 5)
    model.feed(b"x" * 30 + b"\r\n")
    model.resize(40, 6)
    model.feed(b"y" * 30)
    assert (model.cols, model.rows) == (40, 6)
    snap = snapshot_of(model)
    reference = avt.Vt(20, 5, scrollback_limit=1000)
    reference.feed_str("x" * 30 + "\r\n")
    reference.resize(40, 6)
    reference.feed_str("y" * 30)
    assert reference.size == (40, 6)
    assert_same_terminal(snap, reference)
    # The y line was written 40 wide: one line, not two.
    assert "y" * 30 in screen(terminal(snap, 40, 6))


def test_resize_while_stale_is_used_by_the_rebuild() -> None:
    model = ScreenModel(20, 5, pending_limit=10)
    model.feed(b"more than ten bytes")
    assert model.stale
    model.resize(30, 4)
    snap = model.snapshot(lambda: b"z" * 25)
    assert snap is not None
    assert screen(terminal(snap, 30, 4))[0] == "z" * 25


def test_snapshot_of_a_large_screen_is_bounded() -> None:
    data = ("w" * 300 + "\r\n").encode() * 2000
    model = model_fed(data, cols=300, rows=100, scrollback=200, pending_limit=len(data))
    snap = snapshot_of(model)
    # 300 lines of 300 cells at most, plus a few bytes per line.
    assert len(snap) < 300 * 310
    assert len(history(terminal(snap, 300, 100))) == 200


async def test_the_background_task_keeps_up_and_yields() -> None:
    model = ScreenModel(COLS, ROWS, slice_bytes=4096, cpu_share=0.5)
    data = conversation() + spinner_redraws(64 * 1024)
    task = asyncio.create_task(model.run(lambda: b""))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    try:
        for i in range(0, len(data), 4096):
            model.feed(data[i : i + 4096])
        deadline = time.monotonic() + 10
        # Less than a slice is left for a snapshot to parse (no task switch per small read).
        while model.pending >= 4096 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert model.pending < 4096
        # The loop ran between slices: at least once per 4 KiB slice.
        assert ticks >= len(data) // 4096 - 1
        assert_same_terminal(snapshot_of(model), terminal(data))
    finally:
        task.cancel()
        ticking.cancel()
        await asyncio.gather(task, ticking, return_exceptions=True)


async def test_the_background_task_rebuilds_when_the_flood_ends() -> None:
    model = ScreenModel(COLS, ROWS, pending_limit=8192)
    window = b"last screen\r\nof the flood"
    rebuilt = asyncio.Event()

    def history_source() -> bytes:
        rebuilt.set()
        return window

    task = asyncio.create_task(model.run(history_source))
    try:
        model.feed(b"f" * 10000)
        assert model.stale
        await asyncio.wait_for(rebuilt.wait(), timeout=5)
        assert not model.stale
        model.feed(b"!")
        deadline = time.monotonic() + 5
        while model.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert screen(terminal(snapshot_of(model)))[:2] == ["last screen", "of the flood!"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_catch_up_leaves_at_most_one_slice() -> None:
    model = model_fed(spinner_redraws(100 * 1024), slice_bytes=8192)
    await model.catch_up()
    assert model.pending <= 8192


@pytest.mark.parametrize(("cols", "rows"), [(0, 0), (1, 1), (-5, 1)])
def test_degenerate_sizes_are_clamped(cols: int, rows: int) -> None:
    # avt fails on a wide character in one column; the model is never that narrow.
    model = ScreenModel(cols, rows)
    assert (model.cols, model.rows) == (2, 1)
    model.feed("世界🎉 end".encode())
    model.drain(1000)
    assert not model.stale
    assert screen(terminal(snapshot_of(model), 2, 1)) == ["nd"]
