"""The multi-host tests' own tools, checked on their own: the relay that cuts a host from
PostgreSQL, the watcher that counts programs per project, and the HAProxy configuration that
the README shows (parsed by HAProxy, and routing real requests to real backends)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from .cluster import (
    EXAMPLE_CONFIG,
    HAPROXY,
    TOKEN,
    HAProxy,
    ProgramWatcher,
    TcpRelay,
    new_marker,
    terminate,
)

needs_haproxy = pytest.mark.skipif(
    shutil.which(HAPROXY) is None, reason="HAProxy is not installed: apt-get install haproxy"
)


# -- the relay ---------------------------------------------------------------------------------


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server that answers every chunk with ``echo:`` + the chunk, and records them."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                received.append(data)
                writer.write(b"echo:" + data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1]), received
    server.close()


@pytest.fixture
def relay_to(
    echo_server: tuple[int, list[bytes]],
) -> Iterator[TcpRelay]:
    relay = TcpRelay("127.0.0.1", echo_server[0])
    yield relay
    relay.close()


async def roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.readexactly(len(payload) + 5)
    finally:
        writer.close()


async def test_relay_passes_bytes_both_ways(relay_to: TcpRelay) -> None:
    assert await roundtrip(relay_to.port, b"hello") == b"echo:hello"
    big = bytes(range(256)) * 2000  # more than one read on each side
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_to.port)
    writer.write(big)
    await writer.drain()
    got = bytearray()
    async with asyncio.timeout(10):
        while got.replace(b"echo:", b"") != big:
            got += await reader.read(65536)
    writer.close()
    assert relay_to.accepted == 2


async def relayed_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection through the relay that has carried one round trip already."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"one")
    async with asyncio.timeout(5):
        assert await reader.readexactly(8) == b"echo:one"
    return reader, writer


async def test_relay_cut_reset_fails_open_and_new_connections_until_restored(
    relay_to: TcpRelay, echo_server: tuple[int, list[bytes]]
) -> None:
    reader, writer = await relayed_connection(relay_to.port)

    await asyncio.to_thread(relay_to.cut, "reset")
    # The open connection is reset: the client learns at once, without waiting on a timeout.
    async with asyncio.timeout(5):
        with pytest.raises(ConnectionResetError):
            while await reader.read(100):
                pass
    writer.close()
    # A new connection is reset before anything is relayed (the reset may even arrive
    # before the connect call returns).
    async with asyncio.timeout(5):
        with pytest.raises(ConnectionResetError):
            reader, writer = await asyncio.open_connection("127.0.0.1", relay_to.port)
            try:
                writer.write(b"two")
                await writer.drain()
                while await reader.read(100):
                    pass
            finally:
                writer.close()
    assert b"two" not in b"".join(echo_server[1])

    await asyncio.to_thread(relay_to.restore)
    assert await roundtrip(relay_to.port, b"three") == b"echo:three"


async def test_relay_blackhole_keeps_sockets_open_and_silent_until_restored(
    relay_to: TcpRelay, echo_server: tuple[int, list[bytes]]
) -> None:
    reader, writer = await relayed_connection(relay_to.port)

    await asyncio.to_thread(relay_to.cut, "blackhole")
    writer.write(b"lost")
    await writer.drain()
    # Neither an answer nor an end: the read is still waiting when we give up on it.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await reader.read(100)
    assert not reader.at_eof()
    # New connections are accepted, and ignored just the same.
    late_reader, late_writer = await asyncio.open_connection("127.0.0.1", relay_to.port)
    late_writer.write(b"late")
    await late_writer.drain()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await late_reader.read(100)
    assert relay_to.connections == 2
    assert b"lost" not in b"".join(echo_server[1])
    assert b"late" not in b"".join(echo_server[1])

    await asyncio.to_thread(relay_to.restore)
    # The held connections are given up (reset); new ones are relayed again.
    for held in (reader, late_reader):
        async with asyncio.timeout(5):
            with pytest.raises(ConnectionResetError):
                while await held.read(100):
                    pass
    writer.close()
    late_writer.close()
    assert await roundtrip(relay_to.port, b"again") == b"echo:again"


# How asyncpg reports a connection whose peer went away.
LOST = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError, OSError)


async def test_relay_in_front_of_postgresql(postgres_url: str) -> None:
    relay = TcpRelay.to_url(postgres_url)
    try:
        relayed = relay.url_for(postgres_url)
        assert f":{relay.port}/" in relayed and relayed.startswith("postgresql://postgres@")
        connection = await asyncpg.connect(relayed)
        assert await connection.fetchval("SELECT 6 * 7") == 42
        await asyncio.to_thread(relay.cut, "reset")
        with pytest.raises(LOST):
            await connection.fetchval("SELECT 1", timeout=5)
        connection.terminate()
        with pytest.raises(LOST):
            await asyncpg.connect(relayed, timeout=5)
        await asyncio.to_thread(relay.restore)
        connection = await asyncpg.connect(relayed)
        assert await connection.fetchval("SELECT 1") == 1
        await connection.close()
    finally:
        relay.close()


# -- the watcher -------------------------------------------------------------------------------


def spawn(marker: str, cwd: Path, script: str = "sleep 60") -> subprocess.Popen[bytes]:
    cwd.mkdir(parents=True, exist_ok=True)
    # A session of its own: ``terminate`` ends it with its children.
    return subprocess.Popen(
        ["sh", "-c", script, marker], cwd=cwd, stdin=subprocess.DEVNULL, start_new_session=True
    )


def test_watcher_sees_two_programs_in_one_project(tmp_path: Path) -> None:
    marker = new_marker()
    started: list[subprocess.Popen[bytes]] = []
    with ProgramWatcher(marker) as watcher:
        try:
            started.append(spawn(marker, tmp_path / "alpha"))
            started.append(spawn(marker, tmp_path / "beta"))
            watcher.wait_for(lambda live: len(live.get("alpha", ())) == 1 and "beta" in live)
            watcher.assert_never_two()
            started.append(spawn(marker, tmp_path / "alpha"))
            live = watcher.wait_for(lambda live: len(live.get("alpha", ())) == 2)
            assert live["alpha"] == {started[0].pid, started[2].pid}
            # An unmarked process in the same folder is not the test's program.
            started.append(
                subprocess.Popen(["sleep", "60"], cwd=tmp_path / "beta", start_new_session=True)
            )
            for process in started[:3]:
                terminate(process)
            watcher.wait_for(lambda live: not live)
        finally:
            for process in started:
                terminate(process)
    assert watcher.most == {"alpha": 2, "beta": 1}
    with pytest.raises(AssertionError, match="alpha"):
        watcher.assert_never_two()
    seen = watcher.seen[started[0].pid]
    assert seen.project == "alpha" and seen.first <= seen.last


def test_watcher_counts_a_programs_own_child_once(tmp_path: Path) -> None:
    """A subshell carries its parent's argv: it is part of the program, not a second one."""
    marker = new_marker()
    with ProgramWatcher(marker) as watcher:
        process = spawn(marker, tmp_path / "alpha", "(sleep 60; :); :")
        try:
            # Wait until the subshell exists (the shell forked it), then a few more polls.
            watcher.wait_for(lambda live: "alpha" in live)
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
            deadline = 50
            while not children.read_text().split() and deadline:
                watcher.wait_for(lambda live: True)
                deadline -= 1
            assert children.read_text().split(), "the subshell never started"
            polls = watcher.polls
            watcher.wait_for(lambda live: watcher.polls > polls + 3)
        finally:
            terminate(process)
    assert watcher.most == {"alpha": 1}
    watcher.assert_never_two()


# -- HAProxy -----------------------------------------------------------------------------------


@needs_haproxy
def test_example_haproxy_config_parses(tmp_path: Path) -> None:
    result = subprocess.run(
        [HAPROXY, "-c", "-f", str(EXAMPLE_CONFIG)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "WXCODE_PTY_TOKEN": TOKEN},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr
    # Nothing to warn about either: a warning is usually a misspelt keyword.
    assert "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr


class Backend:
    """A stand-in for one host, only to see where HAProxy sends what: it answers the health
    check like a host (``/metrics`` with the token) and names itself in every answer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.healthy = True
        self.paths: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/metrics":
            ok = self.healthy and request.headers.get("Authorization") == f"Bearer {TOKEN}"
            return web.Response(status=200 if ok else 401, text="wxcode_pty_sessions 0\n")
        self.paths.append(request.path_qs)
        if request.path.startswith("/ws/"):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_str(self.name)
            async for message in ws:
                await ws.send_str(f"{self.name}:{message.data}")
            return ws
        return web.Response(text=self.name)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def backends() -> AsyncIterator[list[Backend]]:
    started = [Backend(f"host{i}") for i in (1, 2, 3)]
    for backend in started:
        await backend.start()
    yield started
    for backend in started:
        await backend.stop()


async def served_by(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as response:
        assert response.status == 200, (url, response.status)
        name = await response.text()
        assert response.headers["X-Wxcode-Pty-Backend"] == name
        return name


@needs_haproxy
async def test_haproxy_routes_a_project_to_one_host_and_moves_only_a_lost_hosts_projects(
    backends: list[Backend], tmp_path: Path
) -> None:
    proxy = HAProxy(tmp_path, [(b.name, b.port) for b in backends])
    # Blocking waits on a thread: the stand-in backends run on this test's loop.
    await asyncio.to_thread(proxy.start)
    try:
        async with aiohttp.ClientSession() as http:
            projects = [f"project-{i}" for i in range(60)]
            where: dict[str, str] = {}
            for project in projects:
                api = await served_by(http, f"{proxy.url}/api/sessions/{project}")
                # The WebSocket, the API and the page of one project reach one host.
                ws = await http.ws_connect(f"{proxy.ws_url}/ws/{project}?since=0")
                assert (await ws.receive_str()) == api
                await ws.send_str("typed")
                assert (await ws.receive_str()) == f"{api}:typed"
                await ws.close()
                assert await served_by(http, f"{proxy.url}/?project={project}") == api
                assert await served_by(http, f"{proxy.url}/api/sessions/{project}") == api
                where[project] = api
            # Spread over all three (60 projects: a host with none would be a broken hash).
            assert set(where.values()) == {"host1", "host2", "host3"}, where
            # Requests without a project still get answers.
            assert await served_by(http, f"{proxy.url}/api/sessions") in where.values()

            # host2 fails its health check: its projects move, no other project does.
            backends[1].healthy = False
            await asyncio.to_thread(proxy.wait_for, lambda s: s["host2"] == "DOWN")
            for project in projects:
                now = await served_by(http, f"{proxy.url}/api/sessions/{project}")
                if where[project] == "host2":
                    assert now != "host2"
                else:
                    assert now == where[project], project
            # And back once it is healthy again.
            backends[1].healthy = True
            await asyncio.to_thread(proxy.wait_for, lambda s: s["host2"] == "UP")
            for project in projects:
                assert (
                    await served_by(http, f"{proxy.url}/api/sessions/{project}") == where[project]
                )
    finally:
        await asyncio.to_thread(proxy.stop)


@needs_haproxy
async def test_haproxy_health_check_needs_the_token(
    backends: list[Backend], tmp_path: Path
) -> None:
    proxy = HAProxy(tmp_path, [(b.name, b.port) for b in backends], token="not-the-token")
    try:
        with pytest.raises(AssertionError, match="HAProxy's servers"):
            await asyncio.to_thread(proxy.start, 4)
        states = await asyncio.to_thread(proxy.server_states)
        assert set(states.values()) == {"DOWN"}, states
    finally:
        await asyncio.to_thread(proxy.stop)
