"""``python -m wxcode_pty``: the standalone server as a user runs it, in real processes.

Usage errors are one line on stderr and exit status 2; SIGTERM and SIGINT end it with status 0;
the printed token URL, the cookie it is traded for, and ``--no-token`` work end to end over
real sockets.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import Attached
from .processes import PROMPT, SHELL, Server, free_port, run_cli

OPTIONS = [
    "--host",
    "--port",
    "--db",
    "--workdir",
    "--command",
    "--claude",
    "--idle-timeout",
    "--buffer-size",
    "--max-sessions",
    "--no-token",
    "--env",
]
ERROR_LINE = re.compile(r"^wxcode-pty: error: \S.*$")


async def serve(servers: list[Server], folder: Path, *args: str, port: int | None = None) -> Server:
    server = Server(folder, port or free_port(), list(args))
    servers.append(server)
    return await asyncio.to_thread(server.started)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe=True: the cookie comes from 127.0.0.1, which the default jar would drop.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr: {result.stderr}"
    assert ERROR_LINE.match(lines[0]), lines
    assert "open http" not in result.stdout
    return lines[0]


async def ws_close_code(http: aiohttp.ClientSession, url: str, **headers: str) -> int | None:
    """The close code of a WebSocket the server accepts and then refuses."""
    async with http.ws_connect(url, headers=headers) as ws:
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return ws.close_code


async def read_match(client: Attached, pattern: bytes, timeout: float = 10) -> re.Match[bytes]:
    async with asyncio.timeout(timeout):
        while (match := re.search(pattern, client.output)) is None:
            await client.next()
    return match


# -- usage and usage errors --------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["-h"]])
def test_help_documents_every_option(args: list[str], tmp_path: Path) -> None:
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    for option in OPTIONS:
        assert re.search(rf"^\s+{re.escape(option)}\b.*\S", result.stdout, re.M), (
            f"{option} undocumented"
        )
    assert "SIGTERM" in result.stdout


def test_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(["--port", str(port), "--db", "db.sqlite", "--command", "cat"], tmp_path)
    line = one_error_line(result)
    assert str(port) in line and "in use" in line


async def test_second_server_on_a_busy_port_leaves_the_first_alone(
    servers: list[Server], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    first = await serve(servers, tmp_path, "--no-token", "--command", "cat")
    async with http.post(
        f"{first.origin}/api/sessions/p1", headers={"Origin": first.origin}
    ) as response:
        assert response.status == 201
        before = await response.json()
    second = await asyncio.to_thread(run_cli, first.argv[first.argv.index("--host") :], tmp_path)
    assert second.returncode == 2
    async with http.get(f"{first.origin}/api/sessions/p1") as response:
        after = await response.json()
    assert (after["session_id"], after["pid"]) == (before["session_id"], before["pid"])
    os.kill(before["pid"], 0)  # still running


@pytest.mark.parametrize(
    "database",
    [
        "missing-folder/db.sqlite",  # a folder that does not exist
        "/proc/wxcode-pty-test.sqlite",  # not writable, even by root
        "{tmp}",  # a folder, not a file
    ],
)
def test_unusable_database_is_exit_2(database: str, tmp_path: Path) -> None:
    result = run_cli(
        ["--port", str(free_port()), "--db", database.format(tmp=tmp_path), "--command", "cat"],
        tmp_path,
    )
    assert result.returncode == 2, result.stderr
    first = result.stderr.splitlines()[0]
    assert ERROR_LINE.match(first) and re.search(r"--db|database", first), result.stderr
    assert "open http" not in result.stdout


async def test_unusable_database_is_exactly_one_line(tmp_path: Path) -> None:
    args = ["--port", str(free_port()), "--db", "/proc/wxcode-pty-test.sqlite", "--command", "cat"]
    results = await asyncio.gather(*(asyncio.to_thread(run_cli, args, tmp_path) for _ in range(4)))
    for result in results:
        one_error_line(result)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--command", "no-such-program-wxcode"], "--command"),
        (["--command", "/nonexistent/bin/tool --flag"], "--command"),
        (["--claude", "/nonexistent/claude"], "--claude"),
        (["--claude", "no-such-claude-wxcode"], "--claude"),
        (["--command", ""], "--command"),
        (["--command", "'unbalanced"], "--command"),
        (["--idle-timeout", "0", "--command", "cat"], "idle-timeout"),
        (["--port", "0", "--command", "cat"], "--port"),
        (["--env", "WXCODE_PTY_TEST_UNSET_VARIABLE", "--command", "cat"], "is not set"),
        (["--env", "=secret-value", "--command", "cat"], "empty NAME"),
        (["--env", "CLAUDECODE=1", "--command", "cat"], "CLAUDECODE marks"),
        (["--env", "CLAUDE_CODE_SESSION_ID", "--command", "cat"], "CLAUDE_CODE_SESSION_ID marks"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    line = one_error_line(run_cli(["--db", "db.sqlite", *args], tmp_path))
    assert needle in line and "secret-value" not in line
    assert not (tmp_path / "db.sqlite").exists(), "nothing is created for a usage error"


def test_conflicting_options_are_refused(tmp_path: Path) -> None:
    result = run_cli(["--command", "cat", "--claude", "/bin/true"], tmp_path)
    assert result.returncode == 2
    assert "not allowed with" in result.stderr


# -- the running server ------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_shuts_down_gracefully_and_the_next_start_respawns(
    signum: int, servers: list[Server], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # Without a subcommand: "serve" is the default.
    server = Server(tmp_path, free_port(), ["--no-token", "--command", SHELL], subcommand=False)
    assert "serve" not in server.argv
    servers.append(server)
    await asyncio.to_thread(server.started)
    assert server.token is None
    ws = await http.ws_connect(f"{server.origin}/ws/demo", headers={"Origin": server.origin})
    client = await Attached(ws).handshake()
    await client.read_until(PROMPT.encode())
    await ws.send_bytes(b"echo pid=$$\r")
    pid = int((await read_match(client, rb"pid=(\d+)\r\n")).group(1))

    server.signal(signum)
    assert await client.wait_closed() == 1001
    assert await asyncio.to_thread(server.wait, 15) == 0, server.describe()
    assert "shutting down" in server.lines
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the shell's tree was ended with the server

    again = await serve(servers, tmp_path, "--no-token", "--command", SHELL, port=server.port)
    async with http.get(f"{again.origin}/api/sessions/demo") as response:
        info = await response.json()
    assert info["status"] == "running" and info["pid"] not in (None, pid), info
    ws = await http.ws_connect(f"{again.origin}/ws/demo", headers={"Origin": again.origin})
    client = await Attached(ws).handshake()
    assert client.hello["resumed"] is True
    await ws.send_bytes(b"echo again-$((40+2))\r")
    await client.read_until(b"again-42\r\n")
    await ws.close()


async def test_token_url_cookie_and_websocket(
    servers: list[Server], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await serve(servers, tmp_path, "--command", SHELL)
    token = server.token
    assert token and len(token) >= 24
    assert server.url == f"{server.origin}/?token={token}"
    origin = {"Origin": server.origin}

    # Without the token: REST 401, WebSocket closed by policy, nothing spawned.
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{server.origin}/api/sessions") as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"]
        assert await ws_close_code(anonymous, f"{server.origin}/ws/demo", **origin) == 1008
        wrong = {"Cookie": "wxcode_pty_token=not-the-token", **origin}
        assert await ws_close_code(anonymous, f"{server.origin}/ws/demo", **wrong) == 1008
        async with anonymous.get(f"{server.origin}/?token=not-the-token&project=demo") as response:
            assert response.status == 200  # the page, without a cookie
            assert "Set-Cookie" not in response.headers
    assert not (tmp_path / "projects" / "demo").exists()

    # The printed URL: a redirect without the token, and an HttpOnly SameSite=Strict cookie.
    async with http.get(server.url + "&project=demo", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/?project=demo"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        cookie = response.cookies["wxcode_pty_token"]
        assert cookie.value == token
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    async with http.get(f"{server.origin}/?project=demo") as response:
        assert response.status == 200
        assert "xterm" in await response.text()

    # The cookie opens the WebSocket; the Origin must still be the server's own.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"{server.origin}/ws/demo", headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403
    ws = await http.ws_connect(f"{server.origin}/ws/demo", headers=origin)
    client = await Attached(ws).handshake()
    assert client.hello["output_project_id"] == "demo"
    await client.read_until(PROMPT.encode())
    await ws.send_bytes(b"echo token-$((6*7))\r")
    await client.read_until(b"token-42\r\n")
    await ws.close()

    # Scripts send the token as a bearer token.
    async with aiohttp.ClientSession() as script:
        bearer = {"Authorization": f"Bearer {token}"}
        async with script.get(f"{server.origin}/api/sessions/demo", headers=bearer) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "running"

    assert server.stop() == 0
    assert token not in server.stderr, "the token reached the log"
    assert "token=[redacted]" in server.stderr, "the access log should show the redacted URL"


async def test_no_token_accepts_without_credentials(
    servers: list[Server], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await serve(servers, tmp_path, "--no-token", "--command", SHELL)
    assert server.url == f"{server.origin}/"
    async with http.get(f"{server.origin}/api/sessions") as response:
        assert response.status == 200
        assert await response.json() == []
    # The Origin check stays on.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"{server.origin}/ws/demo")
    assert refused.value.status == 403
    ws = await http.ws_connect(f"{server.origin}/ws/demo", headers={"Origin": server.origin})
    client = await Attached(ws).handshake()
    await ws.send_bytes(b"echo open-$((6*7))\r")
    await client.read_until(b"open-42\r\n")
    await ws.close()
    # So does the Host check (DNS rebinding).
    async with http.get(
        f"{server.origin}/api/sessions", headers={"Host": "evil.example"}
    ) as response:
        assert response.status == 403


async def test_open_file_limit_is_raised_for_many_sessions(
    servers: list[Server], tmp_path: Path
) -> None:
    """1,000 sessions need about 4,000 descriptors: the server takes the hard limit."""
    server = await serve(servers, tmp_path, "--no-token", "--command", SHELL)
    limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard or int(soft) >= 65536, line


async def test_serve_on_a_postgresql_database_and_respawn_after_a_kill(
    servers: list[Server], tmp_path: Path, http: aiohttp.ClientSession, postgres_url: str
) -> None:
    """``--db postgresql://...``: the server keeps its sessions in PostgreSQL; after a SIGKILL a
    new server on the same database respawns them once the killed one's lease has lapsed (it
    cannot tell a restart from a peer that lost the network, SPEC 12)."""
    lease = 2.0
    args = ["--no-token", "--db", postgres_url, "--command", "cat", "--host-lease", str(lease)]
    first = await serve(servers, tmp_path, *args)
    ws = await http.ws_connect(f"{first.origin}/ws/p1", headers={"Origin": first.origin})
    client = await Attached(ws).handshake()
    await ws.send_bytes(b"stored in postgres\n")
    await client.read_until(b"stored in postgres")
    first.signal(signal.SIGKILL)
    await asyncio.to_thread(first.wait, 15)
    await ws.close()
    again = await serve(servers, tmp_path, *args, port=first.port)
    info: dict[str, Any] = {}
    # The lease, the peers' grace and one scan (1.4 leases), and the time to start the program.
    async with asyncio.timeout(1.4 * lease + 10):
        while not (info.get("status") == "running" and info.get("pid") and info.get("host")):
            await asyncio.sleep(0.1)
            async with http.get(
                f"{again.origin}/api/sessions/p1", headers={"Origin": again.origin}
            ) as got:
                info = await got.json()
    assert info["host"] == again.origin
    back = await Attached(
        await http.ws_connect(f"{again.origin}/ws/p1", headers={"Origin": again.origin})
    ).handshake()
    assert back.hello["resumed"] is True
