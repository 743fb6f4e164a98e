"""The hook Claude runs (``claude_hook.py``): silent whatever happens, and it hands the server
only what the server uses of an event (never the prompt's text or a tool's input)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from wxcode_pty.claude import _HOOK_SCRIPT

EVENT = {
    "session_id": "0c0c0c0c-0000-4000-8000-000000000000",
    "hook_event_name": "UserPromptSubmit",
    "prompt": "my secret plan",
    "cwd": "/somewhere",
    "transcript_path": "/somewhere/x.jsonl",
}


async def _run_hook(env: dict[str, str], stdin: bytes) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        str(_HOOK_SCRIPT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ["PATH"], **env},
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=10)
    assert process.returncode is not None
    return process.returncode, out, err


async def test_a_hook_that_cannot_reach_the_server_is_silent(tmp_path: Path) -> None:
    for env, stdin in (
        ({"WXCODE_PTY_HOOK": str(tmp_path / "gone.sock")}, json.dumps(EVENT).encode()),
        ({"WXCODE_PTY_HOOK": str(tmp_path / "gone.sock")}, b"not json"),
        ({}, json.dumps(EVENT).encode()),
    ):
        assert await _run_hook(env, stdin) == (0, b"", b"")


async def test_the_hook_hands_over_only_what_the_server_uses(tmp_path: Path) -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await received.put(await reader.readline())
        writer.close()

    path = str(tmp_path / "hook.sock")
    server = await asyncio.start_unix_server(on_connect, path)
    try:
        env = {"WXCODE_PTY_HOOK": path, "WXCODE_PTY_HOOK_TOKEN": "tok"}
        assert await _run_hook(env, json.dumps(EVENT).encode()) == (0, b"", b"")
        line = await asyncio.wait_for(received.get(), 10)
    finally:
        server.close()
        await server.wait_closed()
    token, _, body = line.decode().partition(" ")
    assert token == "tok"
    assert json.loads(body) == {
        "hook_event_name": "UserPromptSubmit",
        "session_id": EVENT["session_id"],
    }
