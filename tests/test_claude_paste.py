"""A multi-line paste into the real Claude CLI from a tab that attached late, in Chromium.

Claude turns bracketed paste on once, at startup. A tab that attaches after the replay window
has moved past that must still have it on: with it off, a pasted ``line one`` CR ``line two``
is submitted as separate prompts (observed with 2.1.330), so half a prompt reaches Claude.
Here Claude prints a long answer from the local API stand-in (more than 200 KiB of output),
then a fresh page pastes three lines from the clipboard and presses Enter, and the stand-in
must receive one prompt of three lines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from . import test_browser, test_claude_conversations
from .api_standin import Text, prompts_of
from .programs.plugin_server import TOKEN
from .test_browser import CHROMIUM, CHROMIUM_ARGS, SCREEN_HAS_JS, VIEWPORT
from .test_browser_state import FLOOD, INPUT_READY_JS
from .test_claude_conversations import TURN, StartConversation, until_on_screen

async_playwright = pytest.importorskip(
    "playwright.async_api", reason="Python Playwright is missing: pip install playwright"
)

pytestmark = [*test_browser.pytestmark, pytest.mark.real_claude]
start_conversation = test_claude_conversations.start_conversation

#: Paragraphs of a long answer; Claude draws it once, as text that scrolls off the screen.
STORY = "\n\n".join(
    f"Paragraph {i:04d} of the story: " + " ".join(["the quick brown fox jumps"] * 20)
    for i in range(FLOOD // 500 + 1)
)
STORY_END = "THE END OF THE STORY"
PASTE = "line one\nline two\nline three"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with async_playwright.async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_a_late_tab_pastes_one_prompt_of_three_lines(
    start_conversation: StartConversation, browser: Any
) -> None:
    talk = await start_conversation()
    talk.standin.script(Text(f"{STORY}\n\n{STORY_END}"))
    early = await talk.attach()
    await early.ws.send_bytes(b"tell me a long story\r")
    await talk.standin.wait_for_prompt("tell me a long story", TURN)
    await until_on_screen(early, STORY_END)
    assert early.offset > FLOOD, early.offset
    await early.ws.close()

    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TURN * 1000)
    await context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=talk.server.origin
    )
    page = await context.new_page()
    controls: list[dict[str, Any]] = []

    def received(payload: str | bytes) -> None:
        if isinstance(payload, str):
            controls.append(json.loads(payload))

    page.on("websocket", lambda ws: ws.on("framereceived", received))
    await page.goto(f"{talk.server.origin}/pty/?token={TOKEN}&project=p1")
    await page.wait_for_function("() => window.wxcodePty.state().status === 'connected'")
    hello = next(m for m in controls if m["type"] == "hello")
    assert hello["offset"] > FLOOD, hello
    await page.wait_for_function(SCREEN_HAS_JS, arg="manual mode on")
    assert await page.evaluate("() => window.wxcodePty.term.modes.bracketedPasteMode") is True
    await page.evaluate(INPUT_READY_JS)

    await page.evaluate("(text) => navigator.clipboard.writeText(text)", PASTE)
    await page.evaluate("() => window.wxcodePty.term.focus()")
    await page.keyboard.press("Control+Shift+V")
    await page.wait_for_function(SCREEN_HAS_JS, arg="line three")
    await page.keyboard.press("Enter")

    request = await talk.standin.wait_for(
        lambda r: prompts_of(r.messages)[-1:] != ["tell me a long story"], TURN
    )
    assert prompts_of(request.messages)[1:] == [PASTE], talk.summary()
    # The tab's terminal got the mode from the replay's prelude (the screen and the modes).
    replay = next(m for m in controls if m["type"] == "replay")
    assert replay.get("prelude", 0) > 0, replay
    await context.close()
