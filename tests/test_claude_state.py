"""Claude's state (SPEC 8.1) from the hooks, with the stand-in `claude`: on the WebSocket (on
attach and on every change), in the session's JSON, in the metrics, and to the host's callback.
The same transitions with the real CLI, through real turns, are in test_claude_conversations.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from wxcode_pty import ClaudeCommand
from wxcode_pty.claude import state_of
from wxcode_pty.commands import ClaudeState

from .claude_cli import FAKE_CLAUDE
from .conftest import Attached, Plugin

Factory = Callable[..., Awaitable[Plugin]]


def _claude(tmp_path: Path) -> ClaudeCommand:
    return ClaudeCommand(executable=str(FAKE_CLAUDE), config_dir=tmp_path / "claude-config")


async def _next_state(client: Attached, timeout: float = 15) -> dict[str, Any]:
    return (await client.wait_for("claude_state", timeout=timeout)).message


async def test_state_follows_the_hooks_on_the_socket_in_json_and_metrics(
    plugin_factory: Factory, tmp_path: Path
) -> None:
    calls: list[tuple[str, str, str | None]] = []
    called = asyncio.Event()

    async def on_claude_state(project: str, state: str, detail: str | None) -> None:
        calls.append((project, state, detail))
        called.set()

    plugin = await plugin_factory(command=_claude(tmp_path), on_claude_state=on_claude_state)
    client = await plugin.attach("p1")
    first = await _next_state(client)
    # Spawned, then Claude's SessionStart: starting (sent on attach) then ready.
    if first["state"] == "starting":
        first = await _next_state(client)
    assert first["state"] == "ready" and first["detail"] is None
    await client.read_until(b"> ")
    await client.ws.send_bytes(b"hello there\r")
    working = await _next_state(client)
    assert working["state"] == "working" and working["since"] >= first["since"]
    ready = await _next_state(client)
    assert ready["state"] == "ready"

    info = await (await plugin.client.get("/pty/api/sessions/p1", headers=plugin.headers())).json()
    assert info["claude_state"] == "ready" and info["claude_state_detail"] is None
    assert info["claude_state_since"] == ready["since"]
    metrics = await (await plugin.client.get("/pty/metrics", headers=plugin.headers())).text()
    assert 'wxcode_pty_claude_sessions{state="ready"} 1' in metrics
    assert 'wxcode_pty_claude_sessions{state="working"} 0' in metrics
    async with asyncio.timeout(10):
        while [c[1] for c in calls][-3:] != ["ready", "working", "ready"]:
            called.clear()
            await called.wait()
    assert all(project == "p1" for project, _, _ in calls)

    # A tab that attaches now is told the state right after the replay.
    late = await plugin.attach("p1")
    assert (await _next_state(late))["state"] == "ready"


async def test_a_failing_host_callback_is_not_fatal(
    plugin_factory: Factory, tmp_path: Path
) -> None:
    async def on_claude_state(project: str, state: str, detail: str | None) -> None:
        raise RuntimeError("the host's notifier is down")

    plugin = await plugin_factory(command=_claude(tmp_path), on_claude_state=on_claude_state)
    client = await plugin.attach("p1")
    await client.read_until(b"> ")
    await client.ws.send_bytes(b"still works\r")
    await client.read_until(b"you said: still works")
    session = plugin.manager.get_session_by_output_project("p1")
    assert session is not None and session.running


async def test_a_shell_has_no_claude_state(plugin_factory: Factory) -> None:
    plugin = await plugin_factory()
    client = await plugin.attach("p1")
    await client.ws.send_bytes(b"x\n")
    await client.read_until(b"x")
    info = await (await plugin.client.get("/pty/api/sessions/p1", headers=plugin.headers())).json()
    assert info["claude_state"] is None and info["claude_state_since"] is None
    assert not [e for e in client.events if e["type"] == "claude_state"]


def test_hook_events_map_to_states() -> None:
    """SPEC 8.1's table, including the idle notification that leaves Claude ready."""
    assert state_of({"hook_event_name": "SessionStart"}) == (ClaudeState.READY, None)
    assert state_of({"hook_event_name": "UserPromptSubmit"}) == (ClaudeState.WORKING, None)
    assert state_of({"hook_event_name": "PreToolUse"}) == (ClaudeState.WORKING, None)
    assert state_of({"hook_event_name": "PostToolUse"}) == (ClaudeState.WORKING, None)
    assert state_of(
        {
            "hook_event_name": "Notification",
            "notification_type": "permission_prompt",
            "message": "Claude needs your permission to use Bash",
        }
    ) == (ClaudeState.WAITING, "Claude needs your permission to use Bash")
    assert state_of(
        {
            "hook_event_name": "Notification",
            "notification_type": "idle_prompt",
            "message": "Claude is waiting for your input",
        }
    ) == (ClaudeState.READY, None)
    assert state_of({"hook_event_name": "Stop"}) == (ClaudeState.READY, None)
    assert state_of({"hook_event_name": "SessionEnd", "reason": "clear"}) is None
