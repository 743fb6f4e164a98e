"""Every tab true to the program (SPEC 6.1, 6.5, R13, R14), at the protocol level: a tab that
attaches late is first put into the terminal state the program set once (the prelude), sees
the program's current screen rather than a window of redraws, and a terminal query gets one
answer however many tabs are attached."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import avt

from wxcode_pty import ShellCommand
from wxcode_pty.termstate import TerminalState

from .conftest import Plugin, py

Factory = Callable[..., Awaitable[Plugin]]

#: Modes set once (bracketed paste, focus, colour-scheme reports, hidden cursor), then much
#: more output than the replay buffer holds, then a ready mark.
SETS_MODES_ONCE = py(
    "import sys, tty; tty.setraw(0); w = sys.stdout.buffer.write\n"
    "w(b'\\x1b[?2004h\\x1b[?1004h\\x1b[?2031h\\x1b[?25l')\n"
    "for n in range(20000): w(b'line %d of a long log\\r\\n' % n)\n"
    "w(b'READY'); sys.stdout.flush()\n"
    "sys.stdin.read(1)\n"
)


async def test_a_late_tab_gets_the_modes_set_before_its_window(plugin_factory: Factory) -> None:
    """R13: the prelude turns on what the program turned on before the window; it does not
    move the stream's offsets, and a tab that resumes with ``since`` gets no prelude."""
    plugin = await plugin_factory(command=ShellCommand(SETS_MODES_ONCE))
    first = await plugin.attach("p1")
    await first.read_until(b"READY", timeout=30)
    late = await plugin.attach("p1")
    assert late.replay["prelude"] > 0
    prelude = late.replay_bytes[: late.replay["prelude"]]
    state = TerminalState()
    state.feed(prelude)
    assert {2004, 1004, 2031} <= state.modes and 25 not in state.modes
    assert late.offset == late.hello["offset"] == first.offset
    assert b"READY" in late.replay_bytes  # the screen as it is now
    again = await plugin.attach("p1", since=late.offset, session=late.hello["session_id"])
    assert again.replay["prelude"] == 0 and again.replay_bytes == b""


async def test_a_late_tab_sees_the_screen_not_a_window_of_redraws(plugin_factory: Factory) -> None:
    """A program draws a screen once, then only redraws a spinner for far more than the window:
    a late tab gets that screen (what an early tab shows), not fragments of the spinner."""
    program = py(
        "import sys, time, tty, itertools; tty.setraw(0); w = sys.stdout.buffer.write\n"
        "w(b'\\x1b[2J\\x1b[H\\x1b[1;32mTITLE OF THE CONVERSATION\\x1b[0m\\r\\n')\n"
        "w(b'the first answer, in full\\r\\n\\r\\n')\n"
        "for n, c in zip(range(30000), itertools.cycle('|/-\\\\')):\n"
        "    w(b'\\r' + c.encode() + b' working')\n"
        "    if n % 300 == 0: sys.stdout.flush(); time.sleep(0.002)  # a spinner's pace\n"
        "w(b'\\r DONE   '); sys.stdout.flush()\n"
        "sys.stdin.read(1)\n"
    )
    plugin = await plugin_factory(command=ShellCommand(program))
    first = await plugin.attach("p1", cols=80, rows=24)
    await first.read_until(b"DONE", timeout=30)
    late = await plugin.attach("p1", cols=80, rows=24)
    assert late.replay["from"] == late.replay["to"] == late.offset  # a snapshot, no raw bytes
    # What the late tab's (fresh) terminal shows equals what the early tab's shows.
    seen_early, seen_late = avt.Vt(80, 24), avt.Vt(80, 24)
    seen_early.feed_str(bytes(first.output).decode(errors="replace"))
    seen_late.feed_str(late.replay_bytes.decode(errors="replace"))
    lines = [line.text.rstrip() for line in seen_late.view()]
    assert lines[0] == "TITLE OF THE CONVERSATION" and lines[1] == "the first answer, in full"
    assert lines == [line.text.rstrip() for line in seen_early.view()]
    late_cursor, early_cursor = seen_late.cursor, seen_early.cursor
    assert (late_cursor.row, late_cursor.col) == (early_cursor.row, early_cursor.col)
    # Live output goes on right after the snapshot.
    await late.ws.send_bytes(b"x")
    assert (await first.next()).kind in ("bytes", "closed", "exit")


async def test_one_answer_per_question_from_three_tabs(
    plugin_factory: Factory, tmp_path: Path
) -> None:
    """R14: three tabs answer the program's device-attributes and cursor-position queries; the
    program reads exactly one answer to each. A key shaped like an answer, sent when no query
    waits, is not dropped."""
    record = tmp_path / "input"
    program = py(
        "import os, sys, tty, time; tty.setraw(0)\n"
        f"out = open({str(record)!r}, 'wb', buffering=0)\n"
        "os.write(1, b'ASK\\x1b[c\\x1b[6n')\n"
        "while True: out.write(os.read(0, 4096))\n"
    )
    plugin = await plugin_factory(command=ShellCommand(program))
    tabs = [await plugin.attach("p1") for _ in range(3)]
    for tab in tabs:
        await tab.read_until(b"ASK")
    # Each tab answers as xterm.js would (the last to attach is the active one)...
    for tab in tabs:
        await tab.ws.send_bytes(b"\x1b[?1;2c")
        await tab.ws.send_bytes(b"\x1b[1;4R")

    def received() -> bytes:
        return record.read_bytes() if record.exists() else b""

    async with asyncio.timeout(10):
        while b"\x1b[?1;2c" not in received() or b"\x1b[1;4R" not in received():
            await asyncio.sleep(0.02)
    # ... then Shift+F3, which looks like a cursor report: with no query waiting, a key.
    await tabs[0].ws.send_bytes(b"\x1b[1;2R")
    await tabs[0].ws.send_bytes(b"END")
    async with asyncio.timeout(10):
        while b"END" not in received():
            await asyncio.sleep(0.02)
    got = received()
    assert got.count(b"\x1b[?1;2c") == 1, got
    assert got.count(b"\x1b[1;4R") == 1, got
    assert got.endswith(b"\x1b[1;2REND"), got


async def test_focus_reports_come_only_from_the_active_tab(
    plugin_factory: Factory, tmp_path: Path
) -> None:
    record = tmp_path / "input"
    program = py(
        "import os, sys, tty; tty.setraw(0)\n"
        f"out = open({str(record)!r}, 'wb', buffering=0)\n"
        "os.write(1, b'\\x1b[?1004hREADY')\n"
        "while True: out.write(os.read(0, 4096))\n"
    )
    plugin = await plugin_factory(command=ShellCommand(program))
    a = await plugin.attach("p1")
    b = await plugin.attach("p1")  # the active one
    await b.read_until(b"READY")
    await a.ws.send_bytes(b"\x1b[I")  # a gains focus, but b is active: dropped
    await b.ws.send_bytes(b"\x1b[O")
    await b.ws.send_str(json.dumps({"type": "input", "data": "END"}))
    async with asyncio.timeout(10):
        while b"END" not in (record.read_bytes() if record.exists() else b""):
            await asyncio.sleep(0.02)
    assert record.read_bytes() == b"\x1b[OEND"


async def test_a_late_tab_in_the_alternate_screen_gets_the_main_screen_back_on_leaving(
    plugin_factory: Factory,
) -> None:
    """A full-screen program, joined late while it is in the alternate screen: the tab shows
    its screen, and when the program leaves it, the main screen from before comes back."""
    program = py(
        "import sys, time, tty; tty.setraw(0); w = sys.stdout.buffer.write\n"
        "w(b'MAIN SCREEN TEXT\\r\\n$ ')\n"
        "w(b'\\x1b[?1049h\\x1b[2J\\x1b[HFULL SCREEN PROGRAM')\n"
        "for n in range(12000):\n"
        "    w(b'\\x1b[5;1Hstatus %05d' % n)\n"
        "    if n % 200 == 0: sys.stdout.flush(); time.sleep(0.002)\n"
        "w(b'\\x1b[6;1HREADY'); sys.stdout.flush()\n"
        "sys.stdin.read(1)\n"
        "w(b'\\x1b[?1049l'); sys.stdout.flush()\n"
        "sys.stdin.read(1)\n"
    )
    plugin = await plugin_factory(command=ShellCommand(program))
    first = await plugin.attach("p1", cols=80, rows=24)
    await first.read_until(b"READY", timeout=30)
    late = await plugin.attach("p1", cols=80, rows=24)
    assert late.replay["from"] == late.replay["to"]  # the screen, not the window
    seen = avt.Vt(80, 24)
    seen.feed_str(late.replay_bytes.decode(errors="replace"))
    lines = [line.text.rstrip() for line in seen.view()]
    assert lines[0] == "FULL SCREEN PROGRAM" and lines[5] == "READY", lines[:6]
    late.output.clear()
    await late.ws.send_bytes(b"q")
    await late.read_until(b"\x1b[?1049l")
    seen.feed_str(bytes(late.output).decode(errors="replace"))
    lines = [line.text.rstrip() for line in seen.view()]
    assert lines[:2] == ["MAIN SCREEN TEXT", "$"], lines[:3]
