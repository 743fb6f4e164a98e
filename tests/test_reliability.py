"""Many clients, slow clients, vanished clients, floods of frames and resizes (R1-R4, S10-S12)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import re
from collections.abc import Awaitable, Callable

import aiohttp

from wxcode_pty import ShellCommand
from wxcode_pty.session import PTYSession

from .conftest import Attached, Plugin, open_fds, py, status_of, threads_outside_pools

Factory = Callable[..., Awaitable[Plugin]]

COUNTER = py(
    "import sys, time\n"
    "for i in range(100000):\n"
    "    sys.stdout.write(f'{i:06d}\\n'); sys.stdout.flush()\n"
    "    if i % 50 == 0: time.sleep(0.002)\n"
    "time.sleep(1000)\n"
)


def numbers(data: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"(\d{6})\r\n", data)]


async def test_twenty_clients_reconnect_with_since_without_gap_or_duplicate(
    plugin_factory: Factory,
) -> None:
    """R1: every client sees the same ordered sequence across its reconnects."""
    plugin = await plugin_factory(command=ShellCommand(COUNTER), buffer_size=1 << 20)
    rng = random.Random(5)

    async def follow(index: int) -> list[int]:
        client = await plugin.attach("p1")
        seen = bytearray(client.replay_bytes)
        offset, session_id = client.offset, client.hello["session_id"]
        start = client.replay["from"]
        for _ in range(3):
            for _ in range(rng.randint(5, 40)):
                frame = await client.next()
                assert frame.kind == "bytes"
                seen += frame.data
            offset = client.offset
            await client.ws.close()
            await asyncio.sleep(rng.random() * 0.05)  # output keeps flowing meanwhile
            client = await plugin.attach("p1", since=offset, session=session_id)
            assert client.replay["from"] == offset and not client.replay["truncated"]
            seen += client.replay_bytes
        await client.ws.close()
        assert start == 0
        return numbers(bytes(seen))

    results = await asyncio.gather(*(follow(i) for i in range(20)))
    for sequence in results:
        assert sequence == list(range(len(sequence))), "gap or duplicate"
        assert len(sequence) > 20


def rss() -> int:
    return int(status_of(os.getpid())["VmRSS"].split()[0]) * 1024


async def test_stalled_client_is_closed_and_others_keep_up(plugin_factory: Factory) -> None:
    """R2: `yes` floods; one client never reads; three others keep receiving; memory bounded."""
    plugin = await plugin_factory(command=ShellCommand(["yes", "0123456789abcdef"]), send_timeout=3)
    baseline = rss()
    # A client that never reads: its kernel buffers fill, then its queue in the server.
    stalled = await plugin.connect("flood")
    async with asyncio.timeout(10):
        while (
            session := plugin.manager.get_session_by_output_project("flood")
        ) is None or not session.clients:
            await asyncio.sleep(0.01)
    stalled_client = next(iter(session.clients))
    received = [0, 0, 0]
    stop = asyncio.Event()

    async def read(index: int) -> None:
        client = await plugin.attach("flood")
        while not stop.is_set():
            frame = await client.next()
            assert frame.kind == "bytes", frame
            received[index] += len(frame.data)
        await client.ws.close()

    readers = [asyncio.create_task(read(i)) for i in range(3)]
    async with asyncio.timeout(20):
        while stalled_client in session.clients:
            await asyncio.sleep(0.05)
    # The others go on receiving after the stalled one is gone.
    before = list(received)
    async with asyncio.timeout(10):
        while not all(after > b + 1_000_000 for after, b in zip(received, before, strict=True)):
            await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*readers)
    assert rss() - baseline < 50 * 1024 * 1024
    message = await stalled.receive()
    while message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
        message = await stalled.receive()
    assert stalled.close_code in (4001, 1006)


async def test_vanished_client_is_dropped_by_the_heartbeat(plugin_factory: Factory) -> None:
    """R3: a peer that stops answering pings is gone within heartbeat + send timeout."""
    plugin = await plugin_factory(heartbeat=0.5, send_timeout=1)
    ws = await plugin.client.ws_connect("/pty/ws/p1", headers=plugin.headers(), autoping=False)
    session = None
    async with asyncio.timeout(10):
        while session is None or not session.clients:
            await asyncio.sleep(0.01)
            session = plugin.manager.get_session_by_output_project("p1")
    # The client reads nothing and answers no ping from here on.
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(10):
        while session.clients:
            await asyncio.sleep(0.05)
    assert loop.time() - start < 0.5 * 2 + 1 + 1
    await ws.close()


async def test_paste_into_a_program_that_never_reads(
    plugin_factory: Factory, loop_watchdog: list[float]
) -> None:
    """R4: 1 MiB pasted, then more; the loop never stalls; past the bound: input_overflow."""
    plugin = await plugin_factory(
        command=ShellCommand(py("import time; print('up', flush=True); time.sleep(1000)"))
    )
    client = await plugin.attach("p1")
    await client.read_until(b"up")
    chunk = b"z" * 60000
    for _ in range(20):  # 1.2 MB
        await client.ws.send_bytes(chunk)
    error = await client.wait_for("error")
    assert error.message["code"] == "input_overflow"
    await client.ws.send_str(json.dumps({"type": "ping", "id": "alive"}))
    assert (await client.wait_for("pong")).message["id"] == "alive"
    session = plugin.manager.get_session_by_output_project("p1")
    assert session is not None and session.pty.pending_input <= 1 << 20
    assert loop_watchdog[0] < 0.25


async def test_random_frames_do_not_hurt_the_server(plugin_factory: Factory) -> None:
    """S10: 10k random frames; bad UTF-8 closes with 1007; other sessions unaffected."""
    plugin = await plugin_factory(control_rate=100000)
    bystander = await plugin.attach("other")
    rng = random.Random(9)
    fuzz = await plugin.attach("fuzz")
    kinds = [
        lambda: json.dumps({"type": "ping", "id": rng.randint(0, 99)}),
        lambda: json.dumps(
            {"type": "resize", "cols": rng.randint(-5, 100000), "rows": rng.randint(-5, 100000)}
        ),
        lambda: json.dumps({"type": rng.choice(["x", "", "resize2"])}),
        lambda: json.dumps(
            {"type": "input", "data": "".join(chr(rng.randint(32, 126)) for _ in range(5))}
        ),
    ]
    for _ in range(10000):
        if rng.random() < 0.5:
            await fuzz.ws.send_bytes(
                rng.randbytes(rng.randint(0, 64)).replace(b"\x03", b"").replace(b"\x04", b"")
            )
        else:
            await fuzz.ws.send_str(rng.choice(kinds)())
    await fuzz.ws.send_str(json.dumps({"type": "ping", "id": "end"}))
    async with asyncio.timeout(30):
        while not any(e.get("type") == "pong" and e.get("id") == "end" for e in fuzz.events):
            await fuzz.next()
    # Invalid UTF-8 in a text frame: the protocol says 1007.
    raw = await plugin.attach("fuzz")
    await raw.ws._writer.send_frame(b"\xff\xfe", aiohttp.WSMsgType.TEXT)
    assert await raw.wait_closed() == 1007
    await bystander.ws.send_bytes(b"fine\n")
    await bystander.read_until(b"fine\r\n")


async def test_resize_storm(plugin_factory: Factory, loop_watchdog: list[float]) -> None:
    """S11: 10,000 resizes in a second and nonsense sizes: clamped or refused, loop responsive."""
    plugin = await plugin_factory()
    client = await plugin.attach("p1")
    for value in (0, -1, 70000):
        await client.ws.send_str(json.dumps({"type": "resize", "cols": value, "rows": value}))
    for i in range(10000):
        await client.ws.send_str(
            json.dumps({"type": "resize", "cols": 20 + i % 200, "rows": 10 + i % 50})
        )
        if i % 100 == 0:
            # The test client shares the server's loop: let it breathe, as a remote one would.
            await asyncio.sleep(0)
    await client.ws.send_str(json.dumps({"type": "resize", "cols": 123, "rows": 45}))
    session = plugin.manager.get_session_by_output_project("p1")
    assert session is not None
    # The last size applies even though it came in over the rate limit.
    async with asyncio.timeout(10):
        while (session.cols, session.rows) != (123, 45):
            await asyncio.sleep(0.01)
    await client.ws.send_str(json.dumps({"type": "resize", "cols": "abc", "rows": 1}))
    errors = []
    async with asyncio.timeout(30):
        while True:
            frame = await client.next()
            if frame.kind == "error":
                errors.append(frame.message["code"])
            if frame.kind == "closed":
                break
    assert "rate_limited" in errors and errors[-1] == "bad_message"
    assert loop_watchdog[0] < 0.25


async def _sockets_served(session: PTYSession | None = None, *, connections: bool) -> None:
    """Wait until the server has finished with every WebSocket: the session has no clients,
    no pump or request handler runs (nor, with ``connections``, any connection's task: an
    HTTP keep-alive connection keeps one)."""
    serving = {"_Client.pump", "RequestHandler._handle_request"}
    if connections:
        serving.add("RequestHandler.start")
    async with asyncio.timeout(10):
        while (session is not None and session.clients) or any(
            getattr(task.get_coro(), "__qualname__", "") in serving for task in asyncio.all_tasks()
        ):
            await asyncio.sleep(0.01)


async def test_many_connects_return_to_baseline(plugin_factory: Factory) -> None:
    """R12 through the web layer: 2,000 connects and 100 create/close cycles leak nothing."""
    plugin = await plugin_factory()
    warm = await plugin.attach("p0")
    await warm.ws.close()
    warm_session = plugin.manager.get_session_by_output_project("p0")
    assert warm_session is not None
    await _sockets_served(warm_session, connections=True)
    gc.collect()
    fds, threads, tasks = open_fds(), threads_outside_pools(), len(asyncio.all_tasks())

    async def connect_once(i: int) -> None:
        client = await plugin.attach(f"p{i % 5}")
        await client.ws.close()

    for start in range(0, 2000, 50):
        await asyncio.gather(*(connect_once(i) for i in range(start, start + 50)))
    for _ in range(100):
        client: Attached = await plugin.attach("cycle")
        await client.ws.close()
        response = await plugin.client.delete("/pty/api/sessions/cycle", headers=plugin.headers())
        assert response.status == 200
    for session in plugin.manager.sessions:
        assert len(session.buffer) <= session.buffer.capacity
        await plugin.manager.close_session(session.output_project_id)
    await _sockets_served(connections=False)
    gc.collect()
    assert open_fds() <= fds
    assert threads_outside_pools() == threads
    assert len(asyncio.all_tasks()) <= tasks
