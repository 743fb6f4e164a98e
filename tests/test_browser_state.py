"""Terminal state and many tabs, in a real Chromium against a real ``python -m wxcode_pty serve``.

What a late tab must get right, seen through xterm.js itself: a tab that attaches after the
replay window has moved past the program's start is still in the program's terminal state
(bracketed paste on, so a multi-line paste stays one paste; the alternate screen, with the
program's current screen on it); with two tabs of different sizes, the one whose size is not
the PTY's says so and can take the size back; and with two tabs attached, a terminal query
gets one answer, not one per tab.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

from . import test_browser
from .processes import PYTHON, Server, free_port
from .test_browser import TIMEOUT_MS, Page, _log_contains, _serve

# The first browser tests' fixtures (one Chromium per module, a context per test), their
# mark, and their skip without Chromium.
browser = test_browser.browser
context = test_browser.context
pytestmark = test_browser.pytestmark

#: More than three times the default replay buffer (64 KiB): a late tab's replay window
#: holds none of what the program wrote first.
FLOOD = 200 * 1024

# The program's helpers: raw mode (every byte read is logged as it came), whole writes.
PROGRAM_HEAD = r"""
import os, select, signal, sys, time, tty

def write(data):
    while data:
        data = data[os.write(1, data):]

tty.setraw(0)
"""

# Turns bracketed paste on once, prints more than FLOOD, then logs every byte it reads.
PASTE_PROGRAM = (
    PROGRAM_HEAD
    + r"""
log = open(sys.argv[1], "ab", buffering=0)
write(b"\x1b[?2004h")
write(b"".join(b"filler %06d %s\r\n" % (i, b"." * 60) for i in range(int(sys.argv[2]) // 70 + 1)))
write(b"ready for a paste\r\n")
while True:
    data = os.read(0, 4096)
    if not data:
        break
    log.write(data)
    write(b"read %d bytes\r\n" % len(data))
"""
)

# A full-screen program: some text on the normal screen, then the alternate screen with a
# frame drawn once (colours, bold, a title) and more than FLOOD of redraws of two lines.
FULLSCREEN_PROGRAM = (
    PROGRAM_HEAD
    + r"""
write(b"on the normal screen\r\n")
write(b"\x1b[?1049h\x1b[H\x1b[2J")
write(b"\x1b[1;1H\x1b[1;37;44m dashboard \x1b[0m")
for row in range(3, 11):
    write(b"\x1b[%d;3H\x1b[%dmrow %d of the frame\x1b[0m" % (row, 30 + row % 8, row))
frames = int(sys.argv[1]) // 40 + 1
redraws = b"".join(
    b"\x1b[13;3H\x1b[1;33mframe %06d\x1b[0m\x1b[14;3Hspinner %s" % (i, b"|/-\\"[i % 4 : i % 4 + 1])
    for i in range(frames)
)
write(redraws)
write(b"\x1b[16;3H\x1b[4;32mall %d frames drawn\x1b[0m\x1b[18;7H" % frames)
while os.read(0, 4096):
    pass
"""
)

# Says the terminal's size at start and on every SIGWINCH; reads (and ignores) input.
SIZE_PROGRAM = (
    PROGRAM_HEAD
    + r"""
def report(*_):
    cols, rows = os.get_terminal_size(0)
    write(b"size %dx%d\r\n" % (cols, rows))

signal.signal(signal.SIGWINCH, report)
report()
while os.read(0, 4096):
    pass
"""
)

# After the first key: asks for device attributes and the cursor position, logs every byte
# it reads for three seconds (far past the server's 150 ms wait for the active tab's
# answer), then says so.
QUERY_PROGRAM = (
    PROGRAM_HEAD
    + r"""
log = open(sys.argv[1], "ab", buffering=0)
write(b"press a key\r\n")
os.read(0, 4096)
write(b"\x1b[c\x1b[6nqueries sent\r\n")
deadline = time.monotonic() + 3
while (left := deadline - time.monotonic()) > 0:
    if select.select([0], [], [], left)[0]:
        log.write(os.read(0, 4096))
write(b"recorded\r\n")
while os.read(0, 4096):
    pass
"""
)

# What the page shows: the active buffer's type, the visible lines with their attributes
# (a run's colours and styles before its text), and the cursor.
SCREEN_CELLS_JS = """() => {
  const t = window.wxcodePty.term;
  const b = t.buffer.active;
  const lines = [];
  for (let y = 0; y < t.rows; y++) {
    const line = b.getLine(b.viewportY + y);
    const plain = '0,-1,0,-1,0,0,0,0';
    let text = '';
    let attrs = plain;
    for (let x = 0; line && x < t.cols; x++) {
      const c = line.getCell(x);
      const now = [c.getFgColorMode(), c.getFgColor(), c.getBgColorMode(), c.getBgColor(),
        c.isBold(), c.isItalic(), c.isUnderline(), c.isInverse()].join(',');
      if (now !== attrs) { text += '{' + now + '}'; attrs = now; }
      text += c.getChars() || ' ';
    }
    text = text.trimEnd();
    if (text.endsWith('{' + plain + '}')) text = text.slice(0, -plain.length - 2);
    lines.push(text);
  }
  return { type: b.type, lines, cursor: [b.cursorX, b.cursorY] };
}"""

# Resolves once xterm.js has parsed everything written so far: after "replayed", the page
# takes input again only then (replayed queries must not be answered into the program).
INPUT_READY_JS = "() => new Promise((resolve) => window.wxcodePty.term.write('', resolve))"

LAST_LINE_JS = """(wanted) => {
  const b = window.wxcodePty.term.buffer.active;
  for (let y = b.length - 1; y >= 0; y--) {
    const text = b.getLine(y).translateToString(true).trimEnd();
    if (text) return text === wanted;
  }
  return false;
}"""

SIZE_NOTICE = "#st-size"
CPR = re.compile(rb"\x1b\[\d+;\d+R")
DA1 = re.compile(rb"\x1b\[\?[\d;]*c")


def _open(
    context: Any, server: Server, project: str, viewport: dict[str, int] | None = None
) -> Page:
    tab = Page(context)
    if viewport is not None:
        tab.page.set_viewport_size(viewport)
    tab.page.goto(f"{server.origin}/?project={project}")
    tab.wait_status("connected")
    return tab


def _size_of(tab: Page) -> tuple[int, int]:
    cols, rows = tab.page.evaluate("() => [window.wxcodePty.term.cols, window.wxcodePty.term.rows]")
    return int(cols), int(rows)


def _size_line(size: tuple[int, int]) -> str:
    """What the size program prints."""
    return f"size {size[0]}x{size[1]}"


def _notice(size: tuple[int, int]) -> str:
    """What a tab says when the PTY has another tab's size."""
    return f"the terminal is {size[0]}\N{MULTIPLICATION SIGN}{size[1]} for another tab"


def _wait_last_line(tab: Page, text: str) -> None:
    tab._wait(LAST_LINE_JS, text, TIMEOUT_MS, f"{text!r} as the last line")


def _session(server: Server, project: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{server.origin}/api/sessions/{project}")
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, Any] = json.load(response)
    return body


def _attached_late(tab: Page) -> None:
    """The tab attached once the program had written more than FLOOD."""
    assert tab.messages("hello")[-1]["offset"] > FLOOD, tab.messages("hello")


def _replayed_a_prelude(tab: Page) -> None:
    """The tab's terminal was put into the program's state by the replay's prelude."""
    replay = tab.messages("replay")[-1]
    assert replay.get("prelude", 0) > 0, replay


def test_a_late_tab_pastes_with_bracketed_paste_on(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    script = tmp_path / "paste.py"
    script.write_text(PASTE_PROGRAM)
    log = tmp_path / "input.log"
    command = f"{PYTHON} {script} {log} {FLOOD}"
    server = _serve(servers, tmp_path, free_port(), "--no-token", "--command", command)

    early = _open(context, server, "paste")
    early.wait_screen("ready for a paste")  # the server has read the whole flood
    early.page.close()

    late = _open(context, server, "paste")
    late.wait_screen("ready for a paste")
    _attached_late(late)
    assert late.page.evaluate("() => window.wxcodePty.term.modes.bracketedPasteMode") is True
    late.page.evaluate(INPUT_READY_JS)

    # A real paste: the clipboard's text, Ctrl+V in the terminal.
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.origin)
    late.page.evaluate(
        "(text) => navigator.clipboard.writeText(text)", "line one\nline two\nline three"
    )
    late.page.evaluate("() => window.wxcodePty.term.focus()")
    late.page.keyboard.press("Control+Shift+V")
    data = _log_contains(log, lambda data: b"\x1b[201~" in data, "the end of the paste")
    assert data == b"\x1b[200~line one\rline two\rline three\x1b[201~", data
    _replayed_a_prelude(late)


def test_a_late_tab_shows_the_full_screen_programs_current_screen(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    script = tmp_path / "fullscreen.py"
    script.write_text(FULLSCREEN_PROGRAM)
    command = f"{PYTHON} {script} {FLOOD}"
    server = _serve(servers, tmp_path, free_port(), "--no-token", "--command", command)

    early = _open(context, server, "screen")
    early.wait_screen("frames drawn")
    late = _open(context, server, "screen")
    late.wait_screen("frames drawn")
    _attached_late(late)

    expected = early.page.evaluate(SCREEN_CELLS_JS)
    shown = late.page.evaluate(SCREEN_CELLS_JS)
    assert expected["type"] == "alternate", expected
    assert shown["type"] == "alternate", "the late tab is not in the alternate screen"
    assert shown["lines"] == expected["lines"], (
        "the late tab shows another screen:\n"
        + "\n".join(expected["lines"])
        + "\n---\n"
        + "\n".join(shown["lines"])
    )
    assert shown["cursor"] == expected["cursor"] == [6, 17]
    _replayed_a_prelude(late)


def test_the_tab_whose_size_is_not_the_ptys_says_so_and_takes_it_back(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    script = tmp_path / "size.py"
    script.write_text(SIZE_PROGRAM)
    command = f"{PYTHON} {script}"
    server = _serve(servers, tmp_path, free_port(), "--no-token", "--command", command)

    big = _open(context, server, "sizes", {"width": 1000, "height": 600})
    big_size = _size_of(big)
    _wait_last_line(big, _size_line(big_size))
    assert big.page.locator(SIZE_NOTICE).is_hidden()

    # The latest tab to attach is the active client: the PTY takes its size.
    small = _open(context, server, "sizes", {"width": 700, "height": 400})
    small_size = _size_of(small)
    assert small_size[0] < big_size[0] and small_size[1] < big_size[1]
    _wait_last_line(big, _size_line(small_size))
    big.page.locator(SIZE_NOTICE).wait_for(state="visible")
    notice = big.page.locator(SIZE_NOTICE).inner_text()
    assert _notice(small_size) in notice, notice
    assert small.page.locator(SIZE_NOTICE).is_hidden()
    assert _size_of(big) == big_size, "showing the notice must not resize the tab's terminal"

    big.page.get_by_role("button", name="use my size").click()
    _wait_last_line(big, _size_line(big_size))
    big.page.locator(SIZE_NOTICE).wait_for(state="hidden")
    small.page.locator(SIZE_NOTICE).wait_for(state="visible")
    notice = small.page.locator(SIZE_NOTICE).inner_text()
    assert _notice(big_size) in notice, notice
    info = _session(server, "sizes")
    assert (info["cols"], info["rows"]) == big_size, info

    # Typing makes a tab the active client too.
    small.page.evaluate(INPUT_READY_JS)
    small.page.evaluate("() => window.wxcodePty.term.focus()")
    small.page.keyboard.type("k")
    _wait_last_line(small, _size_line(small_size))
    small.page.locator(SIZE_NOTICE).wait_for(state="hidden")
    big.page.locator(SIZE_NOTICE).wait_for(state="visible")
    assert _size_of(big) == big_size and _size_of(small) == small_size


def test_two_tabs_give_one_answer_to_each_query(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    script = tmp_path / "queries.py"
    script.write_text(QUERY_PROGRAM)
    log = tmp_path / "input.log"
    command = f"{PYTHON} {script} {log}"
    server = _serve(servers, tmp_path, free_port(), "--no-token", "--command", command)

    tabs = [_open(context, server, "queries") for _ in range(2)]
    for tab in tabs:
        tab.wait_screen("press a key")
        tab.page.evaluate(INPUT_READY_JS)
        # What each tab's terminal sends, answers included.
        tab.page.evaluate(
            "() => { window.sent = []; window.wxcodePty.term.onData((d) => window.sent.push(d)); }"
        )
    tabs[0].page.evaluate("() => window.wxcodePty.term.focus()")
    tabs[0].page.keyboard.type("x")
    for tab in tabs:
        tab.wait_screen("recorded")

    for tab in tabs:
        sent = "".join(tab.page.evaluate("() => window.sent")).encode()
        assert CPR.search(sent) and DA1.search(sent), f"a tab did not answer: {sent!r}"
    data = log.read_bytes()
    assert len(CPR.findall(data)) == 1, f"not one cursor report: {data!r}"
    assert len(DA1.findall(data)) == 1, f"not one device attributes answer: {data!r}"
    assert not DA1.sub(b"", CPR.sub(b"", data)), f"more than the answers: {data!r}"
