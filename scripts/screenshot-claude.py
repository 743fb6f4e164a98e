#!/usr/bin/env python3
"""Make docs/screenshot-claude.png: the real Claude Code CLI asking for permission to run a Bash
command, in the page of a real ``wxcode-pty serve``, with the status bar saying Claude waits.

Offline: Claude talks to tests/api_standin.py, a local Messages API that answers the prompt
with a Bash tool call. Claude runs in manual permission mode (its own default, auto, would run
the command without asking) with a config and a home of its own, so nothing of this machine's
Claude shows. Needs the test extra (Playwright), Debian's chromium, and the CLI
(tests/fixtures/claude/install.sh prints its path):

    WXCODE_PTY_REAL_CLAUDE=/path/to/claude python scripts/screenshot-claude.py [OUTPUT]

Claude draws "⎿" (U+23BF) under a tool call; without a font that has it (Debian's
fonts-symbola has; fontconfig finds it through FONTCONFIG_FILE too) Chromium draws a box.
The command is never run: the script stops at the permission prompt.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from asyncio.subprocess import DEVNULL, PIPE, STDOUT
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import TimeoutError as PlaywrightTimeout
from playwright.async_api import ViewportSize, async_playwright

REPO = Path(__file__).resolve().parent.parent
# The tests' API stand-in, Claude config and browser settings, from this checkout.
sys.path.insert(0, str(REPO))

from tests.api_standin import Bash, Text, running_standin  # noqa: E402
from tests.claude_cli import REAL_CLAUDE_MISSING, prepare_config_dir, real_claude  # noqa: E402
from tests.server import free_port  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, SCREEN_HAS_JS, SCREEN_JS  # noqa: E402

PROJECT = "notes"
# Claude shows the project's absolute path: a fixed, plain one, not a random temporary name.
FOLDER = Path(tempfile.gettempdir()) / "wxcode-pty-demo"
MARK = ".made-by-screenshot-claude"
# Claude's home, with the server's projects in it: its banner shows ~/projects/notes.
HOME = FOLDER / "home"
PROJECTS = HOME / "projects"
PROMPT = "archive the grocery list"
# A desktop window; Claude draws inline, so the height is what its prompt needs and some room.
VIEWPORT: ViewportSize = {"width": 1200, "height": 600}
# Generous: a real CLI starting on two busy cores.
TIMEOUT = 90.0

# Claude has asked and the page has been told: the status bar shows the waiting state.
WAITING_JS = """() => {
  const c = window.wxcodePty.state().claudeState;
  const work = document.getElementById('st-work');
  return c !== null && c.state === 'waiting' && !work.hidden && /permission/.test(work.textContent);
}"""
# Resolves once xterm.js has parsed everything written so far.
PARSED_JS = "() => new Promise((resolve) => window.wxcodePty.term.write('', resolve))"


async def shoot(claude: Path, env: dict[str, str], output: Path) -> None:
    async with running_standin() as standin:
        # A command that changes files: Claude runs read-only ones (grep, ls) without asking.
        standin.script(
            Bash("mkdir -p archive && mv groceries.md archive/", "Archive the grocery list"),
            Text("Done."),
        )
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        argv = [
            sys.executable, "-m", "wxcode_pty", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--no-token",
            "--db", str(FOLDER / "wxcode_pty.db"), "--workdir", str(PROJECTS),
            "--claude", str(claude),
            "--env", f"ANTHROPIC_BASE_URL={standin.url}",
            "--env", "ANTHROPIC_AUTH_TOKEN=standin-token",
            # Left on, Claude installs its newest version with `npm install --global`.
            "--env", "DISABLE_AUTOUPDATER=1",
        ]  # fmt: skip
        server = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=DEVNULL, stdout=PIPE, stderr=STDOUT, cwd=FOLDER
        )
        assert server.stdout is not None
        # Read the server's output as it comes, so that a full pipe never blocks it.
        said: list[bytes] = []
        reader = asyncio.create_task(read_all(server.stdout, said))
        try:
            await wait_ready(origin, server, said)
            await capture(origin, output)
        finally:
            if server.returncode is None:
                server.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(server.wait(), 30)
                except TimeoutError:
                    server.kill()
                    await server.wait()
            await reader


async def read_all(stream: asyncio.StreamReader, into: list[bytes]) -> None:
    while line := await stream.readline():
        into.append(line)


async def wait_ready(origin: str, server: asyncio.subprocess.Process, said: list[bytes]) -> None:
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as http:
        while True:
            if server.returncode is not None:
                log = b"".join(said).decode(errors="replace")
                raise SystemExit(f"the server ended ({server.returncode}):\n{log}")
            try:
                async with http.get(f"{origin}/api/sessions") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def capture(origin: str, output: Path) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await browser.new_context(viewport=VIEWPORT)
            page = await context.new_page()
            await page.goto(f"{origin}/?project={PROJECT}")
            await until(page, "() => window.wxcodePty.state().status === 'connected'", None)
            # Keys typed before Claude draws its prompt can be lost.
            await until(page, SCREEN_HAS_JS, "manual mode on")
            await until(page, "() => window.wxcodePty.state().claudeState?.state === 'ready'", None)
            await page.evaluate("() => window.wxcodePty.term.focus()")
            await page.keyboard.type(PROMPT)
            await page.keyboard.press("Enter")
            await until(page, SCREEN_HAS_JS, "Do you want to proceed?")
            await until(page, WAITING_JS, None)
            await page.evaluate(PARSED_JS)
            await page.screenshot(path=str(output))
        finally:
            await browser.close()


async def until(page: Any, js: str, arg: object) -> None:
    """Until ``js`` holds; past the deadline, say what was awaited and what the page shows."""
    try:
        await page.wait_for_function(js, arg=arg, timeout=TIMEOUT * 1000)
    except PlaywrightTimeout:
        screen = await page.evaluate(SCREEN_JS)
        state = await page.evaluate("() => window.wxcodePty.state()")
        shown = "\n".join(screen or [])
        raise SystemExit(f"timed out waiting for {arg or js}\nstate: {state}\n{shown}") from None


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "screenshot-claude.png"
    claude = real_claude()
    if claude is None:
        raise SystemExit(REAL_CLAUDE_MISSING)
    if FOLDER.exists():
        if not (FOLDER / MARK).exists():
            raise SystemExit(f"{FOLDER} exists and was not made by this script: move it away")
        shutil.rmtree(FOLDER)
    (PROJECTS / PROJECT).mkdir(parents=True)
    (FOLDER / MARK).touch()
    config = FOLDER / "claude-config"
    prepare_config_dir(config, [PROJECTS / PROJECT], permission_mode="default")
    # Nothing of a Claude session this runs in, and no account of the user's.
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "CLAUDECODE" and not key.startswith(("CLAUDE_CODE_", "ANTHROPIC_"))
    }
    env.update(CLAUDE_CONFIG_DIR=str(config), HOME=str(HOME), PYTHONPATH=str(REPO))
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(shoot(claude, env, output))
    finally:
        shutil.rmtree(FOLDER, ignore_errors=True)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
