"""The page's renderer in a real Chromium: xterm.js's WebGL addon when WebGL works, and
the DOM renderer when it does not (this Chromium runs with --disable-gpu), with the
terminal drawn either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import test_browser
from .processes import PROMPT, SHELL, Server, free_port
from .test_browser import Page, _serve

browser = test_browser.browser
context = test_browser.context
pytestmark = test_browser.pytestmark

# A browser without WebGL 2: every canvas refuses the context the addon asks for.
NO_WEBGL_JS = """
(() => {
  const real = HTMLCanvasElement.prototype.getContext;
  HTMLCanvasElement.prototype.getContext = function (kind, ...rest) {
    return kind === 'webgl2' ? null : real.call(this, kind, ...rest);
  };
})();
"""

ROWS_TEXT_JS = "() => document.querySelector('#terminal .xterm-rows')?.textContent ?? null"


def _open(servers: list[Server], tmp_path: Path, context: Any) -> Page:
    server = _serve(servers, tmp_path, free_port(), "--command", SHELL, "--no-token")
    term = Page(context)
    term.page.goto(f"{server.origin}/?project=demo")
    term.wait_status("connected")
    term.wait_screen(PROMPT)
    return term


def _assert_drawn(term: Page, renderer: str) -> None:
    """What the program printed is drawn by ``renderer``, not only in the buffer."""
    term.run("echo drawn-$((6*7))", "drawn-42")
    if renderer == "dom":
        term._wait(
            f"(needle) => (({ROWS_TEXT_JS})() || '').includes(needle)",
            "drawn-42",
            10_000,
            "the DOM renderer's rows showing the output",
        )
    else:
        assert term.page.locator("#terminal canvas").count() > 0
    errors = [line for line in term.console if line.startswith(("pageerror", "error"))]
    assert not errors, errors


def test_renderer_is_reported_and_draws(
    servers: list[Server], tmp_path: Path, context: Any
) -> None:
    term = _open(servers, tmp_path, context)
    renderer = term.page.evaluate("() => window.wxcodePty.renderer()")
    assert renderer in ("webgl", "dom"), renderer
    _assert_drawn(term, renderer)


def test_without_webgl_the_dom_renderer_draws(
    servers: list[Server], tmp_path: Path, context: Any
) -> None:
    context.add_init_script(NO_WEBGL_JS)
    term = _open(servers, tmp_path, context)
    assert term.page.evaluate("() => window.wxcodePty.renderer()") == "dom"
    _assert_drawn(term, "dom")


def test_a_lost_webgl_context_falls_back_to_the_dom_renderer(
    servers: list[Server], tmp_path: Path, context: Any
) -> None:
    term = _open(servers, tmp_path, context)
    if term.page.evaluate("() => window.wxcodePty.renderer()") != "webgl":
        pytest.skip("this Chromium has no WebGL 2")
    lost = term.page.evaluate(
        """() => {
          for (const canvas of document.querySelectorAll('#terminal canvas')) {
            const gl = canvas.getContext('webgl2');
            const ext = gl && gl.getExtension('WEBGL_lose_context');
            if (ext) { ext.loseContext(); return true; }
          }
          return false;
        }"""
    )
    assert lost
    # xterm.js waits a few seconds for the context to come back before it gives up.
    term._wait("() => window.wxcodePty.renderer() === 'dom'", None, 15_000, "the DOM renderer")
    assert term.page.locator("#terminal canvas").count() == 0
    _assert_drawn(term, "dom")
