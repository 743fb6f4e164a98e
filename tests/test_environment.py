"""S14: what reaches a program's environment, read from ``/proc/<pid>/environ`` of the program.

The server runs as if started from a terminal inside Claude Code (Claude's session markers are
set) by someone logged in with a ``claude setup-token`` token, a gateway token and cloud
provider settings. The markers never reach the program; the login variables do; explicit
extras (``env_extra``, ``--env``) arrive, except a marker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from wxcode_pty import ClaudeCommand, ShellCommand
from wxcode_pty.commands import CommandProfile

from .claude_cli import FAKE_CLAUDE, prepare_config_dir
from .conftest import Attached, Plugin, environ_of
from .processes import Server, free_port

Factory = Callable[..., Awaitable[Plugin]]

MARKERS = {
    "CLAUDECODE": "1",
    "CLAUDE_CODE_CHILD_SESSION": "1",
    "CLAUDE_CODE_SESSION_ID": "0c0c0c0c-1111-4222-8333-444444444444",
    "CLAUDE_CODE_ENTRYPOINT": "cli",
    "CLAUDE_CODE_EXECPATH": "/opt/claude/bin/claude",
    "CLAUDE_CODE_SSE_PORT": "41234",
}
LOGIN = {
    "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-test-only",
    "ANTHROPIC_AUTH_TOKEN": "gateway-test-token",
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
    "CLAUDE_CODE_USE_BEDROCK": "1",
    "AWS_REGION": "us-east-1",
    "AWS_PROFILE": "bedrock-test",
    "AWS_BEARER_TOKEN_BEDROCK": "bedrock-test-token",
    "CLAUDE_CODE_USE_VERTEX": "1",
    "CLOUD_ML_REGION": "us-east5",
    "ANTHROPIC_VERTEX_PROJECT_ID": "vertex-test",
    "GOOGLE_APPLICATION_CREDENTIALS": "/etc/test-gcp.json",
    "DISABLE_AUTOUPDATER": "1",
}
#: Set in the server, not for programs: neither allowed nor passed.
PRIVATE = {"DATABASE_PASSWORD": "server-only"}


@pytest.fixture
def server_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The server's environment; returns the Claude config dir it names."""
    config = tmp_path / "config"
    prepare_config_dir(config, [tmp_path / "projects" / "p1"])
    for name, value in {**MARKERS, **LOGIN, **PRIVATE}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config))
    monkeypatch.setenv("SERVER_ONLY", "from-the-server")
    monkeypatch.setenv("ANTHROPIC_MODEL", "server-model")
    return config


def assert_login_without_markers(env: dict[str, str]) -> None:
    assert sorted(set(MARKERS) & set(env)) == []
    assert {name: env.get(name) for name in LOGIN} == LOGIN
    assert "DATABASE_PASSWORD" not in env


async def started(client: Attached, command: str) -> None:
    """Output of the program itself: it has been exec'd, so its environment is final."""
    if command == "claude":
        await client.read_until(b"Not logged in")
    else:
        await client.ws.send_bytes(b"echo env-$((6*7))\r")
        await client.read_until(b"env-42\r\n")


@pytest.mark.parametrize("command", ["claude", "shell"])
async def test_login_variables_reach_the_program_and_markers_do_not(
    plugin_factory: Factory, server_env: Path, command: str
) -> None:
    profile: CommandProfile = (
        ClaudeCommand(executable=str(FAKE_CLAUDE))
        if command == "claude"
        else ShellCommand(["bash", "--norc", "--noprofile", "-i"])
    )
    plugin = await plugin_factory(
        command=profile,
        env_extra={"PROJECT_FLAG": "on", "CLAUDE_CODE_ENTRYPOINT": "sdk", "CLAUDECODE": "1"},
    )
    client = await plugin.attach("p1")
    await started(client, command)
    session = plugin.manager.get_session_by_output_project("p1")
    assert session is not None
    env = environ_of(session.pty.pid)
    assert_login_without_markers(env)
    assert env["PROJECT_FLAG"] == "on"
    assert env["CLAUDE_CONFIG_DIR"] == str(server_env)
    assert "SERVER_ONLY" not in env
    assert env["ANTHROPIC_MODEL"] == "server-model"
    if command == "claude":
        assert env["WXCODE_PTY_HOOK"]  # the plan's own variables are kept too
    await client.ws.close()


async def test_env_option_passes_and_sets_variables(
    servers: list[Server], server_env: Path, tmp_path: Path
) -> None:
    server = Server(
        tmp_path,
        free_port(),
        [
            "--no-token",
            "--claude",
            str(FAKE_CLAUDE),
            "--env",
            "SERVER_ONLY",
            "--env",
            "SET_HERE=a=b",
            "--env",
            "ANTHROPIC_MODEL=chosen-model",
        ],
    )
    servers.append(server)
    await asyncio.to_thread(server.started)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{server.origin}/ws/p1", headers={"Origin": server.origin})
        client = await Attached(ws).handshake()
        await started(client, "claude")
        async with http.get(f"{server.origin}/api/sessions/p1") as response:
            pid = (await response.json())["pid"]
        env = environ_of(pid)
        await ws.close()
    assert_login_without_markers(env)
    assert env["SERVER_ONLY"] == "from-the-server"
    assert env["SET_HERE"] == "a=b"
    assert env["ANTHROPIC_MODEL"] == "chosen-model"  # an explicit value wins
