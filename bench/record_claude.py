"""Record one turn of the real Claude Code TUI, for the claude_like workload to replay.

Usage: python bench/record_claude.py --claude PATH [--out bench/recordings/claude_turn.json]

Runs the real CLI on a PTY of 80x24 (the size the benchmark's clients ask for), offline,
against the repository's Messages API stand-in (tests/api_standin.py), answering at the pace
of a real model: a pause while it "thinks", then the answer streamed a few words at a time.
It waits for the prompt, types one like a person (a key every 80 ms), presses Enter, and
records every read of the PTY with its time until the answer has been drawn and the screen
has been quiet for a moment. Needs the repository's test dependencies (pytest, aiohttp).

Output processing is off on the PTY while recording (`stty -opost` before Claude starts;
Node's raw mode keeps whatever `opost` it finds), so the file holds the bytes Claude wrote,
not the \\r\\n a normal terminal makes of its \\n: replayed on a normal PTY they come out as
Claude's own output would.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.api_standin import ApiStandin  # noqa: E402
from tests.claude_cli import claude_env, prepare_config_dir  # noqa: E402

COLS, ROWS = 80, 24
PROMPT = "why does my terminal turn newlines into CR LF?"
THINK_SECONDS = 2.0
WORDS_PER_DELTA = 3
DELTA_SECONDS = 0.06  # about 50 words a second, like a fast model
ANSWER = """\
That is the terminal's **output processing**: with `opost` and `onlcr` set (the default for
every new PTY), the kernel turns each `\\n` a program writes into `\\r\\n`, so the cursor goes
back to the first column as well as down a line.

A few things to know:

- Programs rarely turn it off: shells, Node programs and editors keep it on, even in raw
  input mode.
- `stty -opost` turns it off; `stty raw` does too, along with the input processing.
- A terminal emulator needs the `\\r`: without it, each line starts where the last one ended.

You can see it for yourself:

```sh
printf 'a\\nb\\n' | od -c          # what the program writes
script -q -c "printf 'a\\nb\\n'" /dev/null | od -c   # what the terminal gets
```

The first shows `a \\n b \\n`, the second `a \\r \\n b \\r \\n`. That is all there is to it.
"""
LAST_WORDS = "That is all there is to it."

_ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def squeezed(raw: bytes) -> bytes:
    return re.sub(rb"\s+", b"", _ANSI.sub(b"", raw))


class PacedStandin(ApiStandin):
    """The stand-in, answering the conversation at a model's pace instead of at once."""

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not (body.get("tools") and body.get("stream")):
            # Side requests (titles) and anything else: the stand-in's own answer. The body
            # was read here already; aiohttp keeps it for the second read.
            return await super()._messages(request)
        await self._record(request)
        model = str(body.get("model", "claude-standin"))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            payload = json.dumps({"type": event, **data})
            await response.write(f"event: {event}\ndata: {payload}\n\n".encode())

        opening: dict[str, Any] = {
            "id": "msg_standin_paced",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1},
        }
        await send("message_start", {"message": opening})
        await asyncio.sleep(THINK_SECONDS)
        await send(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        )
        words = re.findall(r"\S*\s*", ANSWER)
        for i in range(0, len(words), WORDS_PER_DELTA):
            text = "".join(words[i : i + WORDS_PER_DELTA])
            if text:
                delta = {"type": "text_delta", "text": text}
                await send("content_block_delta", {"index": 0, "delta": delta})
                await asyncio.sleep(DELTA_SECONDS)
        await send("content_block_stop", {"index": 0})
        await send(
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(words)},
            },
        )
        await send("message_stop", {})
        await response.write_eof()
        return response


def spawn_on_pty(
    claude: Path, project: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    """Claude on a new 80x24 PTY with output processing off; returns it and the master."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    proc = subprocess.Popen(
        [str(claude)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=project,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    return proc, master


async def record(claude: Path, version: str, out: Path, quiet: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="claude-record-"))
    config, home, project = work / "config", work / "home", work / "project"
    home.mkdir()
    project.mkdir()
    prepare_config_dir(config, [project], permission_mode="default")
    standin = PacedStandin()
    runner = web.AppRunner(standin.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"

    env = claude_env(config)
    env.update(
        HOME=str(home),
        ANTHROPIC_BASE_URL=url,
        ANTHROPIC_AUTH_TOKEN="standin-token",
        DISABLE_AUTOUPDATER="1",
    )
    proc, master = spawn_on_pty(claude, project, env)
    os.set_blocking(master, False)
    loop = asyncio.get_running_loop()
    screen = bytearray()
    writes: list[tuple[float, bytes]] = []
    recording = False
    t0 = 0.0
    last = time.monotonic()
    changed = asyncio.Event()

    def readable() -> None:
        nonlocal last
        try:
            data = os.read(master, 65536)
        except (BlockingIOError, OSError):
            return
        now = time.monotonic()
        last = now
        screen.extend(data)
        if recording:
            writes.append((now - t0, data))
        changed.set()

    loop.add_reader(master, readable)

    async def until(text: str, timeout: float) -> None:
        needle = squeezed(text.encode())
        async with asyncio.timeout(timeout):
            while needle not in squeezed(bytes(screen)):
                changed.clear()
                await changed.wait()

    try:
        await until("manual mode on", 60)
        await asyncio.sleep(1.0)  # let the start-up drawing end
        screen.clear()
        recording = True
        t0 = time.monotonic()
        for key in PROMPT:
            os.write(master, key.encode())
            await asyncio.sleep(0.08)
        os.write(master, b"\r")
        await until(LAST_WORDS, 120)
        while time.monotonic() - last < quiet:
            await asyncio.sleep(0.1)
        recording = False
    finally:
        loop.remove_reader(master)
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(master)
        await runner.cleanup()
    total = sum(len(d) for _, d in writes)
    doc = {
        "what": "one turn of the Claude Code TUI: the prompt typed, the answer streamed",
        "claude_version": version,
        "recorded": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cols": COLS,
        "rows": ROWS,
        "prompt": PROMPT,
        "think_seconds": THINK_SECONDS,
        "output_processing": "off while recording: the bytes as Claude wrote them",
        "bytes": total,
        "seconds": writes[-1][0] if writes else 0.0,
        "writes": [[round(t, 4), base64.b64encode(d).decode()] for t, d in writes],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=0) + "\n")
    print(f"{len(writes)} writes, {total} bytes over {doc['seconds']:.1f} s -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--claude", required=True, type=Path, help="the real claude binary")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "recordings" / "claude_turn.json",
    )
    parser.add_argument(
        "--quiet", type=float, default=1.5, help="seconds without output that end the turn"
    )
    args = parser.parse_args()
    version = subprocess.run(
        [str(args.claude), "--version"], capture_output=True, text=True
    ).stdout.strip()
    asyncio.run(record(args.claude, version, args.out, args.quiet))


if __name__ == "__main__":
    main()
