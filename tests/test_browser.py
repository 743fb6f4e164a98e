"""The terminal page in a real Chromium, against a real ``python -m wxcode_pty serve``.

What only a browser shows: the token is traded for a cookie and the WebSocket then works;
typed keys reach the shell and its output lands in xterm.js's buffer; a reload draws the same
screen from the replay; after ``kill -9`` and a restart the page reconnects by itself to the
respawned session; and replayed terminal queries never make xterm.js type answers into the
program.

Set ``WXCODE_PTY_SCREENSHOT=docs/screenshot.png`` to refresh the README's screenshot.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .processes import PROMPT, PYTHON, REPO, SHELL, Server, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1000, "height": 600}
TIMEOUT_MS = 15_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)",
    ),
]

playwright_sync = pytest.importorskip(
    "playwright.sync_api", reason="Python Playwright is missing: pip install playwright"
)

# Everything on the screen, one string per line (trailing blanks trimmed).
SCREEN_JS = """() => {
  const t = window.wxcodePty && window.wxcodePty.term;
  if (!t) return null;
  const b = t.buffer.active;
  const lines = [];
  for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true).trimEnd());
  while (lines.length && lines[lines.length - 1] === '') lines.pop();
  return lines;
}"""
SCREEN_HAS_JS = """(needle) => {
  const t = window.wxcodePty && window.wxcodePty.term;
  if (!t) return false;
  const b = t.buffer.active;
  for (let i = 0; i < b.length; i++) {
    if (b.getLine(i).translateToString(true).includes(needle)) return true;
  }
  return false;
}"""

PROMPT_LAST_JS = f"""(prompt) => {{
  const lines = ({SCREEN_JS})();
  return lines !== null && lines.length > 0 && lines[lines.length - 1] === prompt;
}}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport=VIEWPORT)
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


class Page:
    """A terminal page and the control messages it received."""

    def __init__(self, context: Any) -> None:
        self.page = context.new_page()
        self.controls: list[dict[str, Any]] = []
        self.console: list[str] = []
        self.page.on("websocket", self._watch)
        self.page.on(
            "console", lambda message: self.console.append(f"{message.type}: {message.text}")
        )
        self.page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    def _watch(self, ws: Any) -> None:
        def received(payload: str | bytes) -> None:
            if isinstance(payload, str):
                self.controls.append(json.loads(payload))

        ws.on("framereceived", received)

    def messages(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.controls if m.get("type") == kind]

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self.page.evaluate("() => window.wxcodePty.state()")
        return result

    def screen(self) -> list[str]:
        lines: list[str] | None = self.page.evaluate(SCREEN_JS)
        return lines or []

    def wait_status(self, status: str, timeout_ms: int = TIMEOUT_MS) -> None:
        self._wait(
            f"() => window.wxcodePty.state().status === {json.dumps(status)}",
            None,
            timeout_ms,
            f"status {status}",
        )

    def wait_screen(self, needle: str, timeout_ms: int = TIMEOUT_MS) -> None:
        self._wait(SCREEN_HAS_JS, needle, timeout_ms, f"{needle!r} on the screen")

    def _wait(self, js: str, arg: Any, timeout_ms: int, what: str) -> None:
        try:
            self.page.wait_for_function(js, arg=arg, timeout=timeout_ms)
        except playwright_sync.Error as exc:
            raise AssertionError(
                f"no {what} within {timeout_ms} ms\nstate: {self._safe_state()}\n"
                f"screen: {self._safe_screen()}\nconsole: {self.console[-10:]}\n"
                f"controls: {self.controls[-10:]}"
            ) from exc

    def _safe_state(self) -> Any:
        try:
            return self.state()
        except playwright_sync.Error as exc:
            return str(exc)

    def _safe_screen(self) -> Any:
        try:
            return self.screen()
        except playwright_sync.Error as exc:
            return str(exc)

    def run(self, command: str, expect: str) -> None:
        """Type ``command`` and Enter with the keyboard; wait until ``expect`` is printed."""
        self.page.evaluate("() => window.wxcodePty.term.focus()")
        self.page.keyboard.type(command)
        self.page.keyboard.press("Enter")
        self.wait_screen(expect)


def _serve(
    servers: list[Server], folder: Path, port: int, *args: str, name: str = "server"
) -> Server:
    server = Server(folder, port, list(args), name=name)
    servers.append(server)
    return server.started()


def test_token_typing_reload_and_screenshot(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    server = _serve(servers, tmp_path, free_port(), "--command", SHELL)
    assert server.token, server.describe()

    term = Page(context)
    # The printed URL carries the token; the server trades it for a cookie and redirects.
    response = term.page.goto(server.url + "&project=demo")
    assert response is not None and response.ok
    assert term.page.url == f"{server.origin}/?project=demo", "the token must leave the address bar"
    assert response.request.redirected_from is not None, "?token= must be answered with a redirect"
    cookies = {c["name"]: c for c in context.cookies()}
    cookie = cookies["wxcode_pty_token"]
    assert cookie["value"] == server.token
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"

    term.wait_status("connected")
    term.wait_screen(PROMPT)
    hello = term.messages("hello")[0]
    assert hello["output_project_id"] == "demo" and hello["resumed"] is False
    assert term.state()["sessionId"] == hello["session_id"]

    term.run("echo hello-$((6*7))", "hello-42")
    # The command line shows the expression, only the output has the value.
    assert any(line == "hello-42" for line in term.screen()), term.screen()
    term.run("printf 'replay: \\033[1;32m%s\\033[0m\\n' ok", "replay: ok")
    before = _settled_screen(term)

    # A reload attaches again and draws the same screen from the replay buffer.
    term.controls.clear()
    term.page.reload()
    term.wait_status("connected")
    term.wait_screen("replay: ok")
    after = _settled_screen(term)
    assert after == before, f"the replay drew another screen:\n{before}\n---\n{after}"
    assert term.messages("hello")[0]["session_id"] == hello["session_id"], (
        "a reload must not start a new program"
    )
    replay = term.messages("replay")[0]
    assert replay["from"] == 0 and replay["to"] > 0 and replay["truncated"] is False

    # A second tab shows the same terminal too.
    other = Page(context)
    other.page.goto(f"{server.origin}/?project=demo")
    other.wait_status("connected")
    other.wait_screen("replay: ok")
    assert _settled_screen(other) == before

    other.page.close()
    term.run("uname -s", "Linux")
    term.wait_screen(PROMPT)
    path = tmp_path / "screenshot.png"
    term.page.screenshot(path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("WXCODE_PTY_SCREENSHOT")
    if target:
        destination = REPO / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(path.read_bytes())


def _settled_screen(term: Page) -> list[str]:
    """The screen once the prompt is its last line (the shell is waiting for input)."""
    term._wait(PROMPT_LAST_JS, PROMPT.rstrip(), TIMEOUT_MS, "the prompt on the last line")
    return term.screen()


def test_page_reconnects_to_the_respawned_session_after_kill_9(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    # The CLI makes a new random token on every start, so a page holding the old one as a
    # cookie could not come back by itself: this part runs without a token.
    port = free_port()
    first = _serve(servers, tmp_path, port, "--command", SHELL, "--no-token", name="first")
    term = Page(context)
    term.page.goto(f"{first.origin}/?project=demo")
    term.wait_status("connected")
    term.wait_screen(PROMPT)
    old = term.state()
    assert old["sessionId"]
    term.run("echo before-$((20+1))", "before-21")

    first.proc.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    term.wait_status("reconnecting")

    term.controls.clear()
    _serve(servers, tmp_path, port, "--command", SHELL, "--no-token", name="second")
    # No reload and no click: the page's own retry finds the new server.
    term._wait(
        "(old) => { const s = window.wxcodePty.state();"
        " return s.status === 'connected' && s.sessionId !== null && s.sessionId !== old; }",
        old["sessionId"],
        30_000,
        "a connection to a new session",
    )
    hello = term.messages("hello")[-1]
    assert hello["resumed"] is True, hello
    assert hello["session_id"] == term.state()["sessionId"] != old["sessionId"]
    term.wait_screen(PROMPT)
    term.run("echo after-$((40+2))", "after-42")


# Prints terminal queries once, after the first key, then logs every byte it reads.
QUERY_PROGRAM = r"""
import os, sys, tty
log = open(sys.argv[1], "ab", buffering=0)
tty.setraw(0)  # before any query: no answer is echoed, buffered by a line or flushed
os.write(1, b"press a key\r\n")
log.write(os.read(0, 4096))
os.write(1, b"\x1b[6n\x1b[c\x1b]11;?\x07queries sent\r\n")
while True:
    data = os.read(0, 4096)
    if not data:
        break
    log.write(data)
    os.write(1, b"read %d bytes\r\n" % len(data))
"""
CPR = re.compile(rb"\x1b\[\d+;\d+R")
DA1 = re.compile(rb"\x1b\[\?[\d;]*c")


def _log_contains(log: Path, predicate: Any, what: str, timeout: float = 10) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        data = log.read_bytes() if log.exists() else b""
        if predicate(data):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"the program never read {what}: {data!r}")
        time.sleep(0.05)


def _send_marker(term: Page, log: Path, marker: str) -> bytes:
    """Type ``marker`` until the program reads it (keys typed while a replay is being parsed
    are dropped by the page); everything the page sent before it has been read by then."""
    deadline = time.monotonic() + 15
    while True:
        term.page.evaluate("() => window.wxcodePty.term.focus()")
        term.page.keyboard.type(marker)
        try:
            return _log_contains(
                log, lambda data: data.endswith(marker.encode()), repr(marker), timeout=1
            )
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_replayed_queries_are_not_answered_again(
    context: Any, servers: list[Server], tmp_path: Path
) -> None:
    script = tmp_path / "queries.py"
    script.write_text(QUERY_PROGRAM)
    log = tmp_path / "input.log"
    server = _serve(
        servers, tmp_path, free_port(), "--no-token", "--command", f"{PYTHON} {script} {log}"
    )

    first = Page(context)
    first.page.goto(f"{server.origin}/?project=queries")
    first.wait_status("connected")
    first.wait_screen("press a key")
    first.page.evaluate("() => window.wxcodePty.term.focus()")
    first.page.keyboard.type("x")
    first.wait_screen("queries sent")
    # Live queries are the program's to ask: the browser answers them, once.
    baseline = _send_marker(first, log, "K")
    assert baseline.startswith(b"x") and baseline.endswith(b"K"), baseline
    assert CPR.search(baseline), f"no cursor position report: {baseline!r}"
    assert DA1.search(baseline), f"no device attributes answer: {baseline!r}"
    assert b"\x1b]11;rgb:" in baseline, f"no background colour answer: {baseline!r}"

    # The queries are in the replay buffer now. A reload and a second page replay them.
    first.page.reload()
    first.wait_status("connected")
    first.wait_screen("queries sent")
    second = Page(context)
    second.page.goto(f"{server.origin}/?project=queries")
    second.wait_status("connected")
    second.wait_screen("queries sent")
    assert first.messages("replay")[-1]["to"] > 0 and second.messages("replay")[-1]["to"] > 0

    after = _send_marker(first, log, "L")
    after = _send_marker(second, log, "N")
    extra = after[len(baseline) :]
    assert after.startswith(baseline), after
    assert re.fullmatch(rb"L+N+", extra), (
        f"the replay made the page answer queries again: {extra!r}"
    )
