"""``examples/host_app.py``: a host with its own login that mounts the plugin at ``/pty``.

Run as a user would (``python examples/host_app.py --port N``), then: log in as alice, open her
terminal over the WebSocket and run a command; bob's projects stay closed to her, and nobody
gets in without logging in.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from wxcode_pty.commands import ClaudeState

from .conftest import Attached
from .processes import PROMPT, PYTHON, REPO, SHELL, URL_LINE, Process, child_env, free_port

PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-2"}


class Host:
    def __init__(self, process: Process, port: int, workdir: Path) -> None:
        self.process = process
        self.origin = f"http://127.0.0.1:{port}"
        self.workdir = workdir

    def url(self, path: str) -> str:
        return self.origin + path


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    port = free_port()
    env = child_env(
        HOST_APP_ALICE_PASSWORD=PASSWORDS["alice"], HOST_APP_BOB_PASSWORD=PASSWORDS["bob"]
    )
    argv = [
        PYTHON, str(REPO / "examples" / "host_app.py"),
        "--port", str(port),
        "--db", str(tmp_path / "host.sqlite"),
        "--workdir", str(tmp_path / "projects"),
        "--command", SHELL,
    ]  # fmt: skip
    process = Process(argv, tmp_path / "host.stderr", env=env)
    try:
        await asyncio.to_thread(process.wait_for_line, URL_LINE)
        yield Host(process, port, tmp_path / "projects")
    finally:
        code = await asyncio.to_thread(process.stop)
    assert code == 0, process.describe()
    # Passwords are not printed when they come from the environment, nor logged.
    for password in PASSWORDS.values():
        assert password not in "\n".join(process.lines) + process.stderr


async def login(host: Host, user: str, password: str) -> aiohttp.ClientSession:
    # unsafe=True: the cookie comes from 127.0.0.1, which the default jar would drop.
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    form = {"user": user, "password": password}
    async with session.post(
        host.url("/login"), data=form, headers={"Origin": host.origin}, allow_redirects=False
    ) as response:
        assert response.status == 303, await response.text()
        assert response.headers["Location"] == "/"
    return session


async def close_code(session: aiohttp.ClientSession, host: Host, project: str) -> int | None:
    async with session.ws_connect(
        host.url(f"/pty/ws/{project}"), headers={"Origin": host.origin}
    ) as ws:
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return ws.close_code


async def test_alice_opens_her_terminal_and_not_bobs(host: Host) -> None:
    alice = await login(host, "alice", PASSWORDS["alice"])
    async with alice:
        async with alice.get(host.url("/")) as response:
            assert response.status == 200
            page = await response.text()
        assert "/pty/?project=alice-notes" in page and "bob-" not in page
        async with alice.get(host.url("/pty/?project=alice-notes")) as response:
            assert response.status == 200 and "xterm" in await response.text()

        ws = await alice.ws_connect(
            host.url("/pty/ws/alice-notes"), headers={"Origin": host.origin}
        )
        client = await Attached(ws).handshake()
        assert client.hello["output_project_id"] == "alice-notes"
        await client.read_until(PROMPT.encode())
        await ws.send_bytes(b"echo alice-$((6*7)) in $PWD\r")
        await client.read_until(f"alice-42 in {host.workdir / 'alice-notes'}\r\n".encode())
        await ws.close()

        # Bob's project: refused by policy, and no process started for it.
        assert await close_code(alice, host, "bob-api") == 1008
        async with alice.get(host.url("/pty/api/sessions/bob-api")) as response:
            assert response.status == 404
        async with alice.post(
            host.url("/pty/api/sessions/bob-api"), headers={"Origin": host.origin}
        ) as response:
            assert response.status == 404
        assert not (host.workdir / "bob-api").exists()

        # She sees only her sessions, and the home page shows the running one.
        async with alice.get(host.url("/pty/api/sessions")) as response:
            assert [s["output_project_id"] for s in await response.json()] == ["alice-notes"]
        async with alice.get(host.url("/")) as response:
            assert "alice-notes</a> (running)" in await response.text()

        # After logging out, the same browser is a stranger.
        async with alice.post(host.url("/logout"), headers={"Origin": host.origin}) as response:
            assert response.status == 200 and "Log in" in await response.text()
        assert await close_code(alice, host, "alice-notes") == 1008


async def test_bob_cannot_open_alices_running_terminal(host: Host) -> None:
    alice = await login(host, "alice", PASSWORDS["alice"])
    async with (
        alice,
        alice.post(
            host.url("/pty/api/sessions/alice-notes"), headers={"Origin": host.origin}
        ) as response,
    ):
        assert response.status == 201
    bob = await login(host, "bob", PASSWORDS["bob"])
    async with bob:
        assert await close_code(bob, host, "alice-notes") == 1008
        async with bob.delete(
            host.url("/pty/api/sessions/alice-notes"), headers={"Origin": host.origin}
        ) as response:
            assert response.status == 404
        async with bob.get(host.url("/pty/api/sessions")) as response:
            assert await response.json() == []
        ws = await bob.ws_connect(host.url("/pty/ws/bob-api"), headers={"Origin": host.origin})
        client = await Attached(ws).handshake()
        await ws.send_bytes(b"echo bob-$((6*7))\r")
        await client.read_until(b"bob-42\r\n")
        await ws.close()


async def test_no_entry_without_a_genuine_login(host: Host) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as stranger:
        async with stranger.get(host.url("/"), allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/login"
        attempts = [
            ("alice", "wrong", host.origin, 401),
            ("mallory", "x", host.origin, 401),
            # A login posted from another site is refused even with the right password.
            ("alice", PASSWORDS["alice"], "http://evil.example", 403),
        ]
        for user, password, origin, status in attempts:
            async with stranger.post(
                host.url("/login"),
                data={"user": user, "password": password},
                headers={"Origin": origin},
            ) as response:
                assert response.status == status, (user, origin)
        assert not stranger.cookie_jar.filter_cookies(URL(host.url("/")))
        async with stranger.get(host.url("/pty/api/sessions")) as response:
            assert response.status == 401
        assert await close_code(stranger, host, "alice-notes") == 1008

    # A forged cookie: alice's signature on a value naming bob.
    alice = await login(host, "alice", PASSWORDS["alice"])
    async with alice:
        value = alice.cookie_jar.filter_cookies(URL(host.url("/")))["host_session"].value
        forged = value.replace("alice.", "bob.", 1)
        async with aiohttp.ClientSession() as forger:
            headers = {"Cookie": f"host_session={forged}"}
            async with forger.get(host.url("/pty/api/sessions"), headers=headers) as response:
                assert response.status == 401
    assert not (host.workdir / "alice-notes").exists()


async def test_the_owner_is_told_when_claude_needs_them(caplog: pytest.LogCaptureFixture) -> None:
    """The example's ``on_claude_state`` callback: a log line naming the user and the project
    when Claude waits for them, nothing for other states or projects of nobody."""
    spec = importlib.util.spec_from_file_location("host_app", REPO / "examples" / "host_app.py")
    assert spec is not None and spec.loader is not None
    host_app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(host_app)
    with caplog.at_level(logging.INFO, logger="host_app"):
        await host_app.notify("alice-notes", ClaudeState.WORKING, None)
        await host_app.notify("nobody-x", ClaudeState.WAITING, "Claude needs your permission")
        await host_app.notify("alice-notes", ClaudeState.WAITING, "Claude needs your permission")
    assert [r.getMessage() for r in caplog.records] == [
        "alice: project alice-notes needs you: Claude needs your permission"
    ]
