"""The page when things go wrong or the screen is small, in a real Chromium against a real
server: an overlay that says why the page is disconnected and when it tries again; an exit
that waits for the user; a missing token said in words the user can act on; a page
that stops typing when the server refuses this user's input; the chooser's live list of
sessions with a close button; and a row of extra keys on touch screens.

Set ``WXCODE_PTY_SCREENSHOT_DIR=docs`` to refresh docs/screenshot-phone.png,
docs/screenshot-chooser.png and docs/screenshot-overlay.png.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import test_browser
from .claude_cli import FAKE_CLAUDE
from .processes import PROMPT, REPO, SHELL, Process, Server, child_env, free_port
from .test_browser import Page, _serve

browser = test_browser.browser
context = test_browser.context
pytestmark = test_browser.pytestmark

VIEWER_SERVER = REPO / "tests" / "programs" / "viewer_server.py"
PHONE = {"width": 390, "height": 844}

# Counts the WebSockets the page opens, so a test can tell that a reconnect was tried.
COUNT_SOCKETS_JS = """
(() => {
  window.__sockets = 0;
  const Real = window.WebSocket;
  window.WebSocket = class extends Real {
    constructor(...args) { super(...args); window.__sockets += 1; }
  };
})();
"""


def _sockets(term: Page) -> int:
    count: int = term.page.evaluate("() => window.__sockets")
    return count


def _overlay_text(term: Page) -> str:
    text: str = term.page.locator("#overlay").inner_text()
    return text


def _wait_countdown_at_least(term: Page, seconds: int) -> None:
    """Until the overlay says the next try is at least ``seconds`` away."""
    term._wait(
        "(n) => { const m = /next try in (\\d+) s/.exec(document.getElementById('ov-next').textContent);"
        " return m !== null && Number(m[1]) >= n"
        " && !document.getElementById('overlay').hidden; }",
        seconds,
        40_000,
        f"a next try at least {seconds} s away",
    )


def _tries_at_once(term: Page, trigger: str) -> None:
    """``trigger`` (JS) while the next try is seconds away makes the page try within 1.5 s."""
    _wait_countdown_at_least(term, 3)
    before = _sockets(term)
    started = time.monotonic()
    term.page.evaluate(trigger)
    term._wait("(n) => window.__sockets > n", before, 1500, f"an attempt right after {trigger}")
    assert time.monotonic() - started < 2, "the page waited for its backoff"


def test_overlay_says_why_and_when_and_goes_once_connected(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    port = free_port()
    first = _serve(servers, tmp_path, port, "--command", SHELL, "--no-token", name="first")
    context.add_init_script(COUNT_SOCKETS_JS)
    term = Page(context)
    term.page.goto(f"{first.origin}/?project=demo")
    term.wait_status("connected")
    term.wait_screen(PROMPT)
    overlay = term.page.locator("#overlay")
    assert overlay.is_hidden()

    first.proc.send_signal(signal.SIGTERM)
    assert first.wait(15) == 0, first.describe()
    overlay.wait_for(state="visible")
    # How the connection ended stays said while the retries find nothing.
    term._wait(
        "() => /1001/.test(document.getElementById('ov-why').textContent)"
        " && /server shutting down/.test(document.getElementById('ov-why').textContent)",
        None,
        test_browser.TIMEOUT_MS,
        "the close code and reason in the overlay",
    )
    term._wait(
        "() => /cannot be reached/.test(document.getElementById('ov-why').textContent)",
        None,
        test_browser.TIMEOUT_MS,
        "'cannot be reached' in the overlay",
    )
    assert re.search(r"next try in \d+ s", _overlay_text(term)), _overlay_text(term)
    # The countdown counts down.
    _wait_countdown_at_least(term, 2)
    first_seen = term.page.locator("#ov-next").inner_text()
    term._wait(
        "(seen) => { const t = document.getElementById('ov-next').textContent;"
        " return t !== seen && /next try in \\d+ s/.test(t); }",
        first_seen,
        5000,
        "the countdown to change",
    )

    if directory := os.environ.get("WXCODE_PTY_SCREENSHOT_DIR"):
        term.page.screenshot(path=str(Path(directory) / "screenshot-overlay.png"))

    # "reconnect now", and the browser's wake-up events, try at once.
    _tries_at_once(term, "() => document.getElementById('ov-reconnect').click()")
    _tries_at_once(term, "() => document.dispatchEvent(new Event('visibilitychange'))")
    _tries_at_once(term, "() => window.dispatchEvent(new Event('online'))")
    _tries_at_once(
        term, "() => window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))"
    )

    # The same port and database: the page comes back by itself and the overlay goes.
    _serve(servers, tmp_path, port, "--command", SHELL, "--no-token", name="second")
    term.wait_status("connected", 30_000)
    overlay.wait_for(state="hidden")
    term.wait_screen(PROMPT)
    term.run("echo back-$((40+2))", "back-42")


def test_an_exit_waits_for_the_user_and_enter_starts_the_program_again(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    server = _serve(servers, tmp_path, free_port(), "--command", SHELL, "--no-token")
    term = Page(context)
    urls: list[str] = []
    term.page.on("websocket", lambda ws: urls.append(ws.url))
    term.page.goto(f"{server.origin}/?project=demo")
    term.wait_status("connected")
    term.wait_screen(PROMPT)
    first = term.state()["sessionId"]

    term.run("exit 3", "exit 3")
    term.wait_status("exited")
    state = term.page.locator("#st-state")
    assert state.inner_text() == "exited with code 3 — press Enter or click to restart"
    assert state.get_attribute("data-tone") == "warn"
    assert term.page.locator("#st-action").inner_text() == "Restart"
    # The program's last screen stays in view: no overlay over it.
    assert term.page.locator("#overlay").is_hidden()

    # A restart is a fresh attach (the ended run's offsets mean nothing to the next one).
    term.page.keyboard.press("Enter")
    term._wait(
        "(old) => { const s = window.wxcodePty.state();"
        " return s.status === 'connected' && s.sessionId !== null && s.sessionId !== old; }",
        first,
        test_browser.TIMEOUT_MS,
        "a connection to the program started again",
    )
    assert len(urls) == 2 and "since=" not in urls[1], urls
    assert term.page.locator("#st-action").is_hidden()
    term.wait_screen(PROMPT)
    term.run("echo again-$((40+2))", "again-42")


def test_without_the_token_the_page_says_how_to_sign_in(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    server = _serve(servers, tmp_path, free_port(), "--command", SHELL)
    assert server.token, server.describe()
    term = Page(context)
    # The page without the token: the WebSocket's handshake is refused.
    term.page.goto(f"{server.origin}/?project=demo")
    term.wait_status("refused")
    sign_in = "Not authorised: sign in, or open the URL with the token printed by the server."
    assert term.page.locator("#st-state").inner_text() == sign_in
    assert term.page.locator("#ov-why").inner_text() == sign_in
    assert term.page.locator("#ov-title").inner_text() == "Not connected"
    assert term.page.locator("#st-action").inner_text() == "Retry"
    # Refused until the user acts: no countdown to another try.
    assert term.page.locator("#ov-next").inner_text() == ""
    assert not (tmp_path / "projects" / "demo").exists()


@pytest.fixture
def viewer_server(tmp_path: Path) -> Iterator[str]:
    """A host app that lets everyone watch and no one type; yields its page's URL."""
    port = free_port()
    folder = tmp_path / "viewer"
    folder.mkdir()
    process = Process(
        [
            sys.executable,
            str(VIEWER_SERVER),
            str(port),
            str(folder / "db.sqlite"),
            str(folder / "projects"),
            json.dumps(["env", f"PS1={PROMPT}", "bash", "--norc", "--noprofile"]),
        ],
        folder / "server.stderr",
        env=child_env(),
    )
    try:
        origin = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.proc.poll() is None, process.describe()
            try:
                with urllib.request.urlopen(f"{origin}/pty/api/sessions", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, process.describe()
            time.sleep(0.1)
        yield f"{origin}/pty/"
    finally:
        process.stop(timeout=10)


def test_read_only_when_the_server_refuses_input(context: Any, viewer_server: str) -> None:
    term = Page(context)
    sent: list[bytes | str] = []
    term.page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append(frame)))
    term.page.goto(viewer_server + "?project=watch")
    term.wait_status("connected")
    term.wait_screen(PROMPT)
    readonly = term.page.locator("#st-readonly")
    assert readonly.is_hidden()

    term.page.evaluate("() => window.wxcodePty.term.focus()")
    term.page.keyboard.type("x")
    readonly.wait_for(state="visible")
    assert readonly.inner_text() == "read only"
    assert [m["message"] for m in term.messages("error")] == ["input is not allowed"]

    # From now on keystrokes stay in the page: no frame is sent, nothing is drawn.
    sent.clear()
    term.page.keyboard.type("echo typed-$((1+1))")
    term.page.keyboard.press("Enter")
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        term.page.wait_for_timeout(100)
    assert [f for f in sent if isinstance(f, bytes)] == [], sent
    assert len(term.messages("error")) == 1, term.messages("error")
    assert not any("typed" in line for line in term.screen()), term.screen()
    assert term.state()["status"] == "connected"


def _api(server: Server, method: str, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.origin}/api/sessions{path}", method=method, headers={"Origin": server.origin}
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def test_chooser_lists_refreshes_and_closes_sessions(
    context: Any, servers: list[Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude-config"))
    server = _serve(servers, tmp_path, free_port(), "--no-token", "--claude", str(FAKE_CLAUDE))
    _api(server, "POST", "/alpha")
    _api(server, "POST", "/beta")
    chooser = Page(context)
    chooser.page.goto(f"{server.origin}/")
    alpha = chooser.page.locator('#session-list li[data-project="alpha"]')
    beta = chooser.page.locator('#session-list li[data-project="beta"]')
    alpha.wait_for()
    beta.wait_for()
    for item in (alpha, beta):
        text = item.inner_text()
        assert "running" in text and "0 clients" in text and "active " in text, text
        assert item.locator("button.close").is_visible()
    # Claude's state as the server says it.
    state = _api(server, "GET", "/alpha")["claude_state"]
    assert state, "the stand-in should have reported a state"
    alpha.locator(".claude-state").filter(has_text=f"claude {state}").wait_for()

    # It refreshes while open: a client attaching shows up without a reload.
    term = Page(context)
    term.page.goto(f"{server.origin}/?project=alpha")
    term.wait_status("connected")
    alpha.filter(has_text="1 client").wait_for(timeout=15_000)

    if directory := os.environ.get("WXCODE_PTY_SCREENSHOT_DIR"):
        chooser.page.screenshot(path=str(Path(directory) / "screenshot-chooser.png"))

    # Dismissing the confirmation keeps the session.
    asked: list[str] = []

    def dismiss(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    chooser.page.once("dialog", dismiss)
    beta.locator("button.close").click()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        chooser.page.wait_for_timeout(100)
    assert asked and "beta" in asked[0], asked
    assert _api(server, "GET", "/beta")["status"] == "running"
    assert beta.locator("button.close").is_visible()
    # The list is drawn again on every refresh; the keyboard focus stays where it was.
    drawn = beta.element_handle()
    chooser._wait("(li) => !li.isConnected", drawn, 15_000, "a refresh of the list")
    assert chooser.page.evaluate(
        "() => document.activeElement.matches('li[data-project=\"beta\"] button.close')"
    )

    # Accepting it closes the session: the list says so and the REST API agrees.
    chooser.page.once("dialog", lambda dialog: dialog.accept())
    beta.locator("button.close").click()
    beta.locator("button.close").wait_for(state="detached")
    beta.filter(has_text="stopped").wait_for()
    assert _api(server, "GET", "/beta")["status"] == "stopped"
    assert _api(server, "GET", "/alpha")["status"] == "running"


# Raw mode; logs every byte it reads to argv[1] and says how many it read.
RECORDER = r"""
import os, sys, tty
log = open(sys.argv[1], "ab", buffering=0)
tty.setraw(0)
os.write(1, b"recording\r\n")
while True:
    data = os.read(0, 4096)
    if not data:
        break
    log.write(data)
    os.write(1, b"read %d bytes\r\n" % len(data))
"""

EXTRA_KEYS = [
    ("esc", b"\x1b"),
    ("tab", b"\t"),
    ("left", b"\x1b[D"),
    ("up", b"\x1b[A"),
    ("down", b"\x1b[B"),
    ("right", b"\x1b[C"),
    ("backtab", b"\x1b[Z"),
    ("ctrl-c", b"\x03"),
]


def _wait_log(log: Path, expected: bytes) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if log.exists() and log.read_bytes() == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"{log.read_bytes() if log.exists() else None!r} != {expected!r}")


def test_extra_keys_on_a_phone(
    browser: Any, context: Any, servers: list[Server], tmp_path: Path
) -> None:
    program = tmp_path / "recorder.py"
    program.write_text(RECORDER)
    log = tmp_path / "keys.log"
    command = f"{sys.executable} {program} {log}"
    server = _serve(servers, tmp_path, free_port(), "--no-token", "--command", command)

    phone_context = browser.new_context(
        viewport=PHONE, has_touch=True, is_mobile=True, device_scale_factor=2
    )
    phone_context.set_default_timeout(test_browser.TIMEOUT_MS)
    try:
        phone = Page(phone_context)
        phone.page.goto(f"{server.origin}/?project=phone")
        phone.wait_status("connected")
        phone.wait_screen("recording")
        keys = phone.page.locator("#keys")
        assert keys.is_visible()
        # The row fits the phone's width: nothing sticks out or needs scrolling.
        box = keys.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        assert phone.page.evaluate(
            "() => { const k = document.getElementById('keys'); return k.scrollWidth <= k.clientWidth; }"
        )
        for button in keys.locator("button").all():
            b = button.bounding_box()
            assert b is not None and b["x"] + b["width"] <= PHONE["width"], button.inner_text()

        expected = b""
        for name, sent in EXTRA_KEYS:
            keys.locator(f'[data-key="{name}"]').tap()
            expected += sent
            _wait_log(log, expected)

        # Sticky Ctrl: the next typed key is sent as its control character, once.
        ctrl = keys.locator('[data-key="ctrl"]')
        ctrl.tap()
        assert ctrl.get_attribute("aria-pressed") == "true"
        phone.page.keyboard.type("c")
        expected += b"\x03"
        _wait_log(log, expected)
        assert ctrl.get_attribute("aria-pressed") == "false"
        phone.page.keyboard.type("c")
        expected += b"c"
        _wait_log(log, expected)
        # Alt puts ESC before the next key.
        keys.locator('[data-key="alt"]').tap()
        phone.page.keyboard.type("x")
        expected += b"\x1bx"
        _wait_log(log, expected)
        phone.wait_screen("read 2 bytes")

        if directory := os.environ.get("WXCODE_PTY_SCREENSHOT_DIR"):
            phone.page.screenshot(path=str(Path(directory) / "screenshot-phone.png"))
    finally:
        phone_context.close()

    # A desktop browser has a keyboard: no row.
    desktop = Page(context)
    desktop.page.goto(f"{server.origin}/?project=phone")
    desktop.wait_status("connected")
    assert desktop.page.locator("#keys").is_hidden()


def test_touch_scrolling_on_a_phone(browser: Any, servers: list[Server], tmp_path: Path) -> None:
    server = _serve(servers, tmp_path, free_port(), "--no-token", "--command", SHELL)
    phone_context = browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True)
    phone_context.set_default_timeout(test_browser.TIMEOUT_MS)
    try:
        phone = Page(phone_context)
        phone.page.goto(f"{server.origin}/?project=scroll")
        phone.wait_status("connected")
        phone.wait_screen(PROMPT)
        # The needle is in the output only: "300" is on the screen as soon as the command is.
        phone.run("seq 1 300; echo end-$((6*7))", "end-42")
        bottom: int = phone.page.evaluate("() => window.wxcodePty.term.buffer.active.viewportY")
        assert bottom > 0
        # A finger dragged down the terminal scrolls back, as on any phone page.
        cdp = phone_context.new_cdp_session(phone.page)
        box = phone.page.locator("#terminal").bounding_box()
        assert box is not None
        x = box["x"] + box["width"] / 2
        y = box["y"] + 100
        cdp.send(
            "Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]}
        )
        for step in range(1, 11):
            cdp.send(
                "Input.dispatchTouchEvent",
                {"type": "touchMove", "touchPoints": [{"x": x, "y": y + step * 40}]},
            )
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        phone._wait(
            "(bottom) => window.wxcodePty.term.buffer.active.viewportY < bottom - 5",
            bottom,
            5000,
            "the terminal scrolled back by touch",
        )
    finally:
        phone_context.close()
