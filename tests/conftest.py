"""Shared fixtures: a real plugin mounted in a real host app, on a real socket, with real PTYs."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from wxcode_pty import PTYSessionManager, SessionStore, Settings, ShellCommand
from wxcode_pty.security import RedactingAccessLogger
from wxcode_pty.web import create_app, get_session_manager

from .postgres import PostgresServer, find_bindir, postgres_database

if TYPE_CHECKING:
    from .processes import Server

PYTHON = sys.executable
TOKEN = "test-token-0123456789"


def py(code: str) -> list[str]:
    """argv running a Python snippet: test programs with exact, portable behaviour."""
    return [PYTHON, "-c", code]


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database": tmp_path / "db.sqlite",
            "workdir": tmp_path / "projects",
            "command": ShellCommand(["cat"]),
            "token": TOKEN,
            "kill_grace": 0.5,
            "heartbeat": 5.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def manager_factory(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Awaitable[PTYSessionManager]]]:
    """Managers on a real SQLite file, closed (trees ended) after the test."""
    opened: list[tuple[PTYSessionManager, SessionStore]] = []

    async def make(**overrides: Any) -> PTYSessionManager:
        settings = make_settings(**overrides)
        store = await SessionStore.open(settings.database)
        manager = PTYSessionManager(settings, store)
        opened.append((manager, store))
        await manager.start()
        return manager

    yield make
    for manager, store in opened:
        await manager.close_all()
        await store.close()


@dataclass
class Frame:
    kind: str  # "bytes" or a control message type
    data: bytes = b""
    message: dict[str, Any] = field(default_factory=dict)


class Attached:
    """A protocol-level client: reads hello/replay/replayed, then collects output."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.hello: dict[str, Any] = {}
        self.replay: dict[str, Any] = {}
        self.replay_bytes = b""
        self.output = bytearray()
        self.offset = 0
        self.events: list[dict[str, Any]] = []
        self.close_code: int | None = None

    async def handshake(self, timeout: float = 10) -> Attached:
        async with asyncio.timeout(timeout):
            first = await self.ws.receive_json()
            assert first["type"] == "hello", first
            self.hello = first
            second = await self.ws.receive_json()
            assert second["type"] == "replay", second
            self.replay = second
            replay = bytearray()
            while True:
                message = await self.ws.receive()
                if message.type is aiohttp.WSMsgType.BINARY:
                    replay += message.data
                    continue
                assert message.type is aiohttp.WSMsgType.TEXT, message
                done = json.loads(message.data)
                assert done["type"] == "replayed", done
                self.offset = done["offset"]
                break
            self.replay_bytes = bytes(replay)
            self.output += replay
        return self

    async def next(self, timeout: float = 10) -> Frame:
        """The next frame; binary frames are added to ``output`` and ``offset``."""
        async with asyncio.timeout(timeout):
            message = await self.ws.receive()
        if message.type is aiohttp.WSMsgType.BINARY:
            self.output += message.data
            self.offset += len(message.data)
            return Frame("bytes", data=message.data)
        if message.type is aiohttp.WSMsgType.TEXT:
            body = json.loads(message.data)
            self.events.append(body)
            return Frame(body["type"], message=body)
        self.close_code = self.ws.close_code
        return Frame("closed")

    async def read_until(self, needle: bytes, timeout: float = 10) -> bytes:
        async with asyncio.timeout(timeout):
            while needle not in self.output:
                frame = await self.next(timeout)
                if frame.kind == "closed":
                    raise AssertionError(
                        f"closed ({self.close_code}) before {needle!r}: {bytes(self.output[-200:])!r}"
                    )
        return bytes(self.output)

    async def wait_for(self, kind: str, timeout: float = 10) -> Frame:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next(timeout)
                if frame.kind == kind:
                    return frame
                if frame.kind == "closed":
                    raise AssertionError(f"closed ({self.close_code}) while waiting for {kind}")

    async def wait_closed(self, timeout: float = 10) -> int | None:
        async with asyncio.timeout(timeout):
            while (await self.next(timeout)).kind != "closed":
                pass
        return self.close_code


class Plugin:
    """The plugin mounted at /pty in a host app, served on 127.0.0.1."""

    def __init__(
        self,
        client: TestClient[web.Request, web.Application],
        host: web.Application,
        plugin_app: web.Application,
    ) -> None:
        self.client = client
        self.host = host
        self.plugin_app = plugin_app
        self.origin = f"http://{client.host}:{client.port}"

    @property
    def manager(self) -> PTYSessionManager:
        return get_session_manager(self.plugin_app)

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Origin": self.origin, "Authorization": f"Bearer {TOKEN}", **extra}

    async def connect(
        self, project: str, headers: dict[str, str] | None = None, **query: Any
    ) -> aiohttp.ClientWebSocketResponse:
        params = {k: str(v) for k, v in query.items()}
        return await self.client.ws_connect(
            f"/pty/ws/{project}",
            headers=self.headers() if headers is None else headers,
            params=params,
        )

    async def attach(self, project: str, **query: Any) -> Attached:
        return await Attached(await self.connect(project, **query)).handshake()


@pytest.fixture
async def plugin_factory(
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    make_settings: Callable[..., Settings],
) -> Callable[..., Awaitable[Plugin]]:
    async def make(**overrides: Any) -> Plugin:
        host = web.Application()
        plugin_app = create_app(make_settings(**overrides))
        host.add_subapp("/pty", plugin_app)
        # The host logs requests with the plugin's redacting logger, as the README advises.
        server = TestServer(host, host="127.0.0.1")
        await server.start_server(access_log_class=RedactingAccessLogger)
        client = await aiohttp_client(server)
        return Plugin(client, host, plugin_app)

    return make


@pytest.fixture
async def loop_watchdog() -> AsyncIterator[list[float]]:
    """Records the event loop's worst lag; a test asserts on it after its work."""
    lags: list[float] = [0.0]
    loop = asyncio.get_running_loop()

    async def watch() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            lags[0] = max(lags[0], loop.time() - before - 0.01)

    task = asyncio.create_task(watch())
    yield lags
    task.cancel()


async def program_runs(pid: int, argv: list[str], timeout: float = 10) -> None:
    """Wait until ``pid`` is ``argv`` itself: spawning goes through a helper that execs it."""
    expected = "".join(f"{arg}\0" for arg in argv).encode()
    cmdline = Path(f"/proc/{pid}/cmdline")
    async with asyncio.timeout(timeout):
        while cmdline.read_bytes() != expected:
            await asyncio.sleep(0.005)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def environ_of(pid: int) -> dict[str, str]:
    """The environment a process was started with."""
    raw = Path(f"/proc/{pid}/environ").read_text()
    return dict(item.split("=", 1) for item in raw.split("\0") if item)


def status_of(pid: int) -> dict[str, str]:
    """``/proc/<pid>/status`` as a dict (``SigIgn``, ``SigBlk``, ...)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Server processes a test starts; all are stopped (or killed) afterwards."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop(timeout=10)


def threads_outside_pools() -> int:
    """Threads other than the bounded pools that grow on demand (asyncio's default executor,
    the spawn threads)."""
    names = [t.name for t in threading.enumerate()]
    assert sum(1 for name in names if name.startswith("wxcode-pty-spawn")) <= 4
    return sum(1 for name in names if not name.startswith(("asyncio_", "wxcode-pty-spawn")))


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


@pytest.fixture
def no_stray_children() -> Iterator[None]:
    """Fails a test that leaves children of the test process running (or unreaped)."""
    before = set(children_of(os.getpid()))
    yield
    after = set(children_of(os.getpid())) - before
    assert not after, f"children left behind: {sorted(after)}"


# -- PostgreSQL (the shared store), started once per test run --------------------------------


@pytest.fixture(scope="session")
def postgres_bindir() -> Path:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries (initdb, postgres): apt-get install postgresql")
    return bindir


@pytest.fixture(scope="session")
def postgres(postgres_bindir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(postgres_bindir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
async def postgres_url(postgres: PostgresServer) -> AsyncIterator[str]:
    async for url in postgres_database(postgres):
        yield url
