"""The page people work in all day, in a real Chromium against a real ``python -m wxcode_pty
serve``: Claude's state in the status bar and the tab title, browser notifications when a
hidden tab's Claude needs the user or finishes a long turn, links, find, OSC 52 copies, and a
font size that is remembered.

Claude is played by tests/fake_claude/claude (turns at once) and tests/programs/claude_turns.py
(a turn that asks for permission, and turns of a given length); both run the hooks the server
injects, so the states come from the server exactly as they would for Claude.

The browser APIs a headless browser cannot show (a notification, another tab opening, the tab
being hidden) are observed by init scripts that record the calls the page makes.

Set ``WXCODE_PTY_SCREENSHOT_DIR=docs`` to refresh docs/screenshot-find.png;
scripts/screenshot-claude.py makes docs/screenshot-claude.png with the real Claude CLI.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from . import test_browser
from .claude_cli import FAKE_CLAUDE
from .processes import PROMPT, REPO, SHELL, Server, free_port
from .test_browser import Page, _serve

browser = test_browser.browser
context = test_browser.context
pytestmark = test_browser.pytestmark

CLAUDE_TURNS = REPO / "tests" / "programs" / "claude_turns.py"
PERMISSION = "Claude needs your permission to use Bash"

# Records what the page does with browser APIs a headless browser cannot show: notifications
# (kept, with their options and click handlers), window.focus and window.open; and lets a
# test say whether the tab is hidden (document.visibilityState), then tell the page.
OBSERVE_JS = """
(() => {
  const Real = window.Notification;
  window.__notes = [];
  window.__asked = 0;
  window.__focused = 0;
  window.__opened = [];
  window.__visibility = 'visible';
  class Recorded {
    constructor(title, options) {
      this.title = title;
      this.options = options || {};
      this.closed = false;
      this.onclick = null;
      window.__notes.push(this);
    }
    close() { this.closed = true; }
    static get permission() {
      return window.__permission || (Real ? Real.permission : 'denied');
    }
    static requestPermission() {
      window.__asked += 1;
      window.__permission = 'granted';
      return Promise.resolve('granted');
    }
  }
  window.Notification = Recorded;
  const focus = window.focus.bind(window);
  window.focus = () => { window.__focused += 1; focus(); };
  window.open = (...args) => { window.__opened.push(args); return null; };
  Object.defineProperty(Document.prototype, 'visibilityState', {
    configurable: true, get() { return window.__visibility; },
  });
  Object.defineProperty(Document.prototype, 'hidden', {
    configurable: true, get() { return window.__visibility === 'hidden'; },
  });
})();
"""
SET_VISIBILITY_JS = """(state) => {
  window.__visibility = state;
  document.dispatchEvent(new Event('visibilitychange'));
}"""
NOTES_JS = "() => window.__notes.map((n) => ({title: n.title, body: n.options.body, tag: n.options.tag, closed: n.closed}))"


def _observed(context: Any) -> Page:
    context.add_init_script(OBSERVE_JS)
    return Page(context)


def _claude_server(
    servers: list[Server], tmp_path: Path, claude: Path, monkeypatch: pytest.MonkeyPatch
) -> Server:
    # The server passes its CLAUDE_CONFIG_DIR on to Claude: the stand-ins' files stay here.
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude-config"))
    return _serve(servers, tmp_path, free_port(), "--no-token", "--claude", str(claude))


def _type(term: Page, line: str) -> None:
    term.page.evaluate("() => window.wxcodePty.term.focus()")
    term.page.keyboard.type(line)
    term.page.keyboard.press("Enter")


def _wait_state(term: Page, state: str, count: int = 1) -> None:
    """Until the page has been told ``state`` ``count`` times and shows it."""
    term._wait(
        "([state, count]) => { const c = window.wxcodePty.state().claudeState;"
        " return c !== null && c.state === state && window.__states"
        " && window.__states.filter((s) => s === state).length >= count; }",
        [state, count],
        test_browser.TIMEOUT_MS,
        f"Claude {state} (x{count})",
    )


def _work_text(term: Page) -> str:
    text: str = term.page.locator("#st-work").inner_text()
    return text


# Every state the page is told, in order (read by _wait_state).
RECORD_STATES_JS = """
(() => {
  window.__states = [];
  const Real = window.WebSocket;
  window.WebSocket = class extends Real {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (event) => {
        if (typeof event.data !== 'string') return;
        try {
          const msg = JSON.parse(event.data);
          if (msg.type === 'claude_state') window.__states.push(msg.state);
        } catch (err) { /* not JSON */ }
      });
    }
  };
})();
"""


def _open(context: Any, server: Server, project: str) -> Page:
    context.add_init_script(OBSERVE_JS)
    context.add_init_script(RECORD_STATES_JS)
    term = Page(context)
    term.page.goto(f"{server.origin}/?project={project}")
    term.wait_status("connected")
    return term


def test_status_bar_and_title_follow_claudes_turn(
    context: Any, servers: list[Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _claude_server(servers, tmp_path, FAKE_CLAUDE, monkeypatch)
    term = _open(context, server, "turns")
    term.wait_screen("> ")
    _wait_state(term, "ready")
    assert re.fullmatch(r"Claude ready · \d+s", _work_text(term)), _work_text(term)
    assert term.page.title() == "turns · wxcode-pty"
    # Each text the state field shows, in order.
    term.page.evaluate(
        """() => {
      window.__shown = [];
      const el = document.getElementById('st-work');
      new MutationObserver(() => window.__shown.push(el.textContent))
        .observe(el, {childList: true, characterData: true, subtree: true});
    }"""
    )

    _type(term, "hello there")
    term.wait_screen("you said: hello there")
    _wait_state(term, "ready", count=2)
    assert "working" in term.page.evaluate("() => window.__states"), term.controls
    shown: list[str] = term.page.evaluate("() => window.__shown")
    assert any(re.fullmatch(r"Claude working · \d+s", text) for text in shown), shown
    assert re.fullmatch(r"Claude ready · \d+s", shown[-1]), shown
    assert term.page.locator("#st-work").get_attribute("data-state") == "ready"
    assert not term.page.title().startswith("●")

    # The duration counts from the server's "since", and goes on counting.
    since = term.state()["claudeState"]["since"]
    term.page.wait_for_function(
        "(since) => { const m = /· (\\d+)s$/.exec(document.getElementById('st-work').textContent);"
        " return m !== null && Number(m[1]) >= 2 && Date.now() / 1000 - since >= 2; }",
        arg=since,
        timeout=10_000,
    )


def test_waiting_shows_its_detail_and_marks_the_tab(
    context: Any, servers: list[Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _claude_server(servers, tmp_path, CLAUDE_TURNS, monkeypatch)
    term = _open(context, server, "waits")
    term.wait_screen("type ask")
    _wait_state(term, "ready")
    # The program's own title (OSC 0), then the project.
    assert term.page.title() == "Claude stand-in · waits · wxcode-pty"

    _type(term, "ask")
    term.wait_screen("Allow Bash?")
    _wait_state(term, "waiting")
    assert re.fullmatch(rf"Claude waiting: {PERMISSION} · \d+s", _work_text(term)), _work_text(term)
    assert term.page.locator("#st-work").get_attribute("data-state") == "waiting"
    assert term.page.title() == "● Claude stand-in · waits · wxcode-pty"

    # Answered: working, then ready; the mark goes.
    _type(term, "y")
    term.wait_screen("answered y")
    _wait_state(term, "ready", count=2)
    assert term.page.evaluate("() => window.__states")[-3:] == ["waiting", "working", "ready"]
    assert term.page.title() == "Claude stand-in · waits · wxcode-pty"
    assert re.fullmatch(r"Claude ready · \d+s", _work_text(term)), _work_text(term)


def test_a_shell_shows_no_claude_state_and_no_notify_button(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    server = _serve(servers, tmp_path, free_port(), "--no-token", "--command", SHELL)
    term = _open(context, server, "shell")
    term.wait_screen(PROMPT)
    term.run("printf '\\033]2;%s\\007' my-title", PROMPT)
    term.page.wait_for_function("() => document.title === 'my-title · shell · wxcode-pty'")
    assert term.page.locator("#st-work").is_hidden()
    assert term.page.locator("#st-notify").is_hidden()


def _screenshot(term: Page, name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    term.page.screenshot(path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("WXCODE_PTY_SCREENSHOT_DIR")
    if target:
        destination = REPO / target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)


def _notes(term: Page) -> list[dict[str, Any]]:
    notes: list[dict[str, Any]] = term.page.evaluate(NOTES_JS)
    return notes


def test_a_hidden_tab_is_notified_when_claude_waits_or_ends_a_long_turn(
    context: Any, servers: list[Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _claude_server(servers, tmp_path, CLAUDE_TURNS, monkeypatch)
    context.grant_permissions(["notifications"], origin=server.origin)
    term = _open(context, server, "notes")
    term.wait_screen("type ask")
    _wait_state(term, "ready")
    # Permission is granted already: nothing to ask for.
    assert term.page.locator("#st-notify").is_hidden()

    # A visible tab: the user sees the state change, no notification.
    _type(term, "ask")
    _wait_state(term, "waiting")
    _type(term, "y")
    _wait_state(term, "ready", count=2)
    assert _notes(term) == []

    # Hidden: Claude needs the user.
    term.page.evaluate(SET_VISIBILITY_JS, "hidden")
    _type(term, "ask")
    _wait_state(term, "waiting", count=2)
    term.page.wait_for_function("() => window.__notes.length >= 1")
    first = _notes(term)
    assert first == [
        {
            "title": "notes · wxcode-pty",
            "body": PERMISSION,
            "tag": "wxcode-pty:notes",
            "closed": False,
        }
    ]
    # Clicking it brings the tab forward and closes it.
    term.page.evaluate("() => window.__notes[0].onclick(new Event('click'))")
    assert term.page.evaluate("() => window.__focused") == 1
    assert _notes(term)[0]["closed"] is True

    # A short turn ends while hidden: not worth a notification.
    _type(term, "y")
    _wait_state(term, "ready", count=3)
    _type(term, "quick")
    _wait_state(term, "ready", count=4)
    assert len(_notes(term)) == 1, _notes(term)

    # A long turn ends while hidden.
    _type(term, "slow 6")
    _wait_state(term, "ready", count=5)
    term.page.wait_for_function("() => window.__notes.length >= 2")
    notes = _notes(term)
    assert len(notes) == 2, notes
    assert re.fullmatch(r"Claude finished \(\d+s\)", notes[1]["body"]), notes
    # Seen again: the notification is closed, it has nothing more to say.
    term.page.evaluate(SET_VISIBILITY_JS, "visible")
    assert _notes(term)[1]["closed"] is True
    # Reloading in the waiting state tells the page the state again: no notification.
    term.page.evaluate(SET_VISIBILITY_JS, "hidden")
    _type(term, "ask")
    _wait_state(term, "waiting", count=3)
    term.page.wait_for_function("() => window.__notes.length >= 3")
    term.page.reload()
    term.wait_status("connected")
    term.page.evaluate(SET_VISIBILITY_JS, "hidden")
    _wait_state(term, "waiting")
    assert _notes(term) == [], "attaching is not a change of state"


def test_permission_is_asked_for_only_on_a_click(
    context: Any, servers: list[Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _claude_server(servers, tmp_path, CLAUDE_TURNS, monkeypatch)
    context.add_init_script("window.__permission = 'default';")
    term = _open(context, server, "ask")
    term.wait_screen("type ask")
    _wait_state(term, "ready")
    button = term.page.locator("#st-notify")
    button.wait_for(state="visible")
    assert term.page.evaluate("() => window.__asked") == 0, "never asked on load"
    button.click()
    button.wait_for(state="hidden")
    assert term.page.evaluate("() => window.__asked") == 1
    # Now granted, a hidden tab is told.
    term.page.evaluate(SET_VISIBILITY_JS, "hidden")
    _type(term, "ask")
    _wait_state(term, "waiting")
    term.page.wait_for_function("() => window.__notes.length === 1")


def _shell(context: Any, servers: list[Server], tmp_path: Path, project: str) -> Page:
    server = _serve(servers, tmp_path, free_port(), "--no-token", "--command", SHELL)
    term = _open(context, server, project)
    term.wait_screen(PROMPT)
    return term


# The viewport position (in CSS pixels) of the middle of cell (col, row of the viewport).
CELL_JS = """([col, row]) => {
  const t = window.wxcodePty.term;
  const box = t.element.querySelector('.xterm-screen').getBoundingClientRect();
  const w = box.width / t.cols, h = box.height / t.rows;
  return [box.left + (col + 0.5) * w, box.top + (row + 0.5) * h];
}"""
# The viewport row and column where ``needle`` is printed on a line of its own.
FIND_JS = """(line) => {
  const b = window.wxcodePty.term.buffer.active;
  for (let y = b.length - 1; y >= 0; y--) {
    const text = b.getLine(y).translateToString(true).trimEnd();
    if (text === line) return y - b.viewportY;
  }
  return null;
}"""


def test_a_printed_url_is_a_link_that_opens_a_new_tab(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    term = _shell(context, servers, tmp_path, "links")
    # The command line holds no whole URL: only the output does.
    term.run("echo see https://example.test/docs/$((6*7))?q=a here", "docs/42")
    row = term.page.evaluate(FIND_JS, "see https://example.test/docs/42?q=a here")
    assert row is not None, term.screen()
    x, y = term.page.evaluate(CELL_JS, [10, row])
    term.page.mouse.move(x, y)
    # The link provider underlines it and the pointer becomes a hand.
    term.page.wait_for_function(
        "() => document.querySelector('.xterm-screen').classList.contains('xterm-cursor-pointer')"
    )
    term.page.mouse.click(x, y)
    term.page.wait_for_function("() => window.__opened.length === 1")
    opened = term.page.evaluate("() => window.__opened")
    assert opened == [["https://example.test/docs/42?q=a", "_blank", "noopener,noreferrer"]]

    # Plain text is not a link.
    x, y = term.page.evaluate(CELL_JS, [1, row])
    term.page.mouse.move(x, y)
    term.page.wait_for_function(
        "() => !document.querySelector('.xterm-screen').classList.contains('xterm-cursor-pointer')"
    )
    term.page.mouse.click(x, y)
    assert term.page.evaluate("() => window.__opened.length") == 1


def test_find_reaches_into_the_scrollback(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    term = _shell(context, servers, tmp_path, "find")
    term.run("echo Needle-$((40+2))-Early", "Needle-42-Early")
    term.run("seq -f 'filler line %g' 1 300", "filler line 300")
    term.wait_screen(PROMPT)
    scrolled = (
        "() => { const b = window.wxcodePty.term.buffer.active; return b.viewportY < b.baseY; }"
    )
    assert term.page.evaluate(scrolled) is False
    assert term.page.evaluate(FIND_JS, "Needle-42-Early") < 0, "the needle is in the scrollback"

    # Ctrl+Shift+F is the page's: the find box opens and the program gets nothing.
    term.page.evaluate("() => window.wxcodePty.term.focus()")
    term.page.keyboard.press("Control+Shift+F")
    box = term.page.locator("#search-text")
    box.wait_for(state="visible")
    assert term.page.evaluate("() => document.activeElement.id") == "search-text"
    box.type("needle-42")
    term.page.keyboard.press("Enter")
    term.page.wait_for_function(f"() => ({scrolled})()")
    assert term.page.evaluate("() => window.wxcodePty.term.getSelection()") == "Needle-42"
    row = term.page.evaluate(FIND_JS, "Needle-42-Early")
    assert row is not None and 0 <= row < term.page.evaluate("() => window.wxcodePty.term.rows")
    term.page.wait_for_function(
        "() => document.getElementById('search-count').textContent === '1 of 1'"
    )
    _screenshot(term, "screenshot-find.png", tmp_path)

    # Matching case, the lower-case text is not there.
    term.page.locator("#search-case").click()
    term.page.wait_for_function(
        "() => document.getElementById('search-count').textContent === 'no matches'"
    )
    assert term.page.locator("#search").get_attribute("data-found") == "none"
    term.page.locator("#search-case").click()

    # Previous and next go through several matches.
    box.fill("filler line 29")
    term.page.keyboard.press("Enter")
    term.page.wait_for_function(
        "() => / of 11$/.test(document.getElementById('search-count').textContent)"
    )
    before = term.page.locator("#search-count").inner_text()
    term.page.keyboard.press("Shift+Enter")
    term.page.wait_for_function(
        "(before) => document.getElementById('search-count').textContent !== before", arg=before
    )

    # Escape closes it and gives the keyboard back to the terminal.
    term.page.keyboard.press("Escape")
    term.page.locator("#search").wait_for(state="hidden")
    term.run("echo typed-$((1+1))", "typed-2")


def test_osc_52_puts_text_on_the_clipboard_once(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    term = _shell(context, servers, tmp_path, "copy")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    read = "() => navigator.clipboard.readText()"
    term.page.evaluate("() => navigator.clipboard.writeText('before')")
    # "sent-2" is in the output only, after the copy.
    term.run(
        "printf '\\033]52;c;%s\\007' $(printf 'copied by the program' | base64);"
        " echo sent-$((1+1))",
        "sent-2",
    )
    _wait_clipboard(term, "copied by the program")

    # The user copies something else; a reload replays the old copy, which must not win.
    term.page.evaluate("() => navigator.clipboard.writeText('the user copied this')")
    term.page.reload()
    term.wait_status("connected")
    term.wait_screen("sent-2")
    term.page.evaluate("() => new Promise((resolve) => window.wxcodePty.term.write('', resolve))")
    assert term.page.evaluate(read) == "the user copied this"

    # A program asking to read the clipboard (OSC 52 "?") gets an empty answer.
    term.run(
        "stty -echo; printf '\\033]52;c;?\\007'; IFS= read -r -t 2 -d $'\\a' answer;"
        ' stty echo; echo "answer=[${answer#*52;c;}]"',
        "answer=[",
    )
    term.wait_screen("answer=[]")


def _wait_clipboard(term: Page, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (now := term.page.evaluate("() => navigator.clipboard.readText()")) != text:
        assert time.monotonic() < deadline, f"the clipboard holds {now!r}, not {text!r}"
        time.sleep(0.05)


def test_font_size_is_remembered_across_a_reload(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    term = _shell(context, servers, tmp_path, "font")
    size = "() => window.wxcodePty.term.options.fontSize"
    cols = "() => window.wxcodePty.term.cols"
    assert term.page.evaluate(size) == 14
    before = term.page.evaluate(cols)
    term.page.locator("#st-font-up").click()
    term.page.locator("#st-font-up").click()
    assert term.page.evaluate(size) == 16
    # Bigger cells: fewer columns, and the PTY takes the new size.
    term.page.wait_for_function(f"(before) => ({cols})() < before", arg=before)
    narrower = term.page.evaluate(cols)
    term.page.wait_for_function(
        "(c) => { const p = window.wxcodePty.state().ptySize; return p !== null && p.cols === c; }",
        arg=narrower,
    )
    term.run("tput cols", str(narrower))

    term.page.reload()
    term.wait_status("connected")
    assert term.page.evaluate(size) == 16
    assert term.page.evaluate(cols) == narrower
    term.page.locator("#st-font-down").click()
    assert term.page.evaluate(size) == 15
    assert term.page.evaluate("() => localStorage.getItem('wxcode-pty.fontSize')") == "15"

    # A stored value out of range is not used.
    term.page.evaluate("() => localStorage.setItem('wxcode-pty.fontSize', '400')")
    term.page.reload()
    term.wait_status("connected")
    assert term.page.evaluate(size) == 14
