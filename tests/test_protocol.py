"""WebSocket protocol v1 against the plugin mounted in a host app: every message and close code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from wxcode_pty import ShellCommand

from .conftest import Attached, Plugin, py

Factory = Callable[..., Awaitable[Plugin]]


async def test_hello_replay_replayed_then_live(plugin_factory: Factory) -> None:
    plugin = await plugin_factory()
    first = await plugin.attach("p1", cols=100, rows=30)
    hello = first.hello
    assert hello["protocol"] == 1 and hello["output_project_id"] == "p1"
    assert hello["claude_session_id"] is None and hello["resumed"] is False
    assert (hello["cols"], hello["rows"]) == (100, 30)
    assert first.replay == {
        "type": "replay",
        "from": 0,
        "to": hello["offset"],
        "truncated": False,
        "prelude": 0,
    }
    await first.ws.send_bytes(b"hello\n")
    await first.read_until(b"hello\r\n")
    # A second client replays what the first produced, then both see live output.
    second = await plugin.attach("p1")
    assert second.hello["session_id"] == hello["session_id"]
    assert b"hello" in second.replay_bytes
    await second.ws.send_str(json.dumps({"type": "input", "data": "wörld\n"}))
    await first.read_until("wörld".encode())
    await second.read_until("wörld".encode())
    await first.ws.close()
    await second.ws.close()


async def test_ping_pong_and_errors(plugin_factory: Factory) -> None:
    plugin = await plugin_factory()
    client = await plugin.attach("p1")
    await client.ws.send_str(json.dumps({"type": "ping", "id": "abc"}))
    assert (await client.wait_for("pong")).message == {"type": "pong", "id": "abc"}
    await client.ws.send_str(json.dumps({"type": "ping"}))
    assert (await client.wait_for("pong")).message == {"type": "pong", "id": None}
    # An unknown type is answered with an error, and the connection stays.
    await client.ws.send_str(json.dumps({"type": "teleport"}))
    error = (await client.wait_for("error")).message
    assert error["code"] == "unknown_type"
    await client.ws.send_bytes(b"still here\n")
    await client.read_until(b"still here")
    # Bad JSON: an error, then close 1008.
    await client.ws.send_str("{not json")
    assert (await client.wait_for("error")).message["code"] == "bad_json"
    assert await client.wait_closed() == 1008


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "resize", "cols": "abc", "rows": 10},
        {"type": "resize", "cols": True, "rows": 10},
        {"type": "input", "data": 5},
        {"type": 7},
        ["resize"],
    ],
)
async def test_bad_control_messages_close_with_1008(
    plugin_factory: Factory, payload: object
) -> None:
    plugin = await plugin_factory()
    client = await plugin.attach("p1")
    await client.ws.send_str(json.dumps(payload))
    assert (await client.wait_for("error")).message["code"] == "bad_message"
    assert await client.wait_closed() == 1008
    # The session and other clients are unaffected.
    other = await plugin.attach("p1")
    await other.ws.send_bytes(b"ok\n")
    await other.read_until(b"ok\r\n")


async def test_exit_message_then_1000(plugin_factory: Factory) -> None:
    plugin = await plugin_factory(command=ShellCommand(["sh", "-c", "read x; echo bye; exit 5"]))
    client = await plugin.attach("p1")
    await client.ws.send_bytes(b"go\n")
    exit_ = (await client.wait_for("exit")).message
    assert exit_ == {"type": "exit", "code": 5, "signal": None}
    assert b"bye" in client.output
    assert await client.wait_closed() == 1000


async def test_exit_by_signal(plugin_factory: Factory) -> None:
    plugin = await plugin_factory(
        command=ShellCommand(
            py("import os, signal, sys; sys.stdin.readline(); os.kill(os.getpid(), signal.SIGKILL)")
        )
    )
    client = await plugin.attach("p1")
    await client.ws.send_bytes(b"\n")
    assert (await client.wait_for("exit")).message == {
        "type": "exit",
        "code": None,
        "signal": "SIGKILL",
    }


async def test_reconnect_with_since_gets_exactly_the_missing_bytes(plugin_factory: Factory) -> None:
    plugin = await plugin_factory()
    client = await plugin.attach("p1")
    await client.ws.send_bytes(b"one\n")
    await client.read_until(b"one\r\none\r\n")  # the terminal's echo, then cat's
    offset = client.offset
    session_id = client.hello["session_id"]
    await client.ws.close()
    # Output produced while nobody listens is buffered.
    other = await plugin.attach("p1")
    await other.ws.send_bytes(b"two\n")
    await other.read_until(b"two\r\ntwo\r\n")
    back = await plugin.attach("p1", since=offset, session=session_id)
    assert back.replay["from"] == offset and not back.replay["truncated"]
    assert back.replay_bytes == b"two\r\ntwo\r\n"
    assert back.offset == other.offset


async def test_since_from_another_run_is_not_trusted(plugin_factory: Factory) -> None:
    plugin = await plugin_factory()
    client = await plugin.attach("p1")
    await client.ws.send_bytes(b"abc\n")
    await client.read_until(b"abc\r\n")
    back = await plugin.attach("p1", since=3, session="0" * 32)
    assert back.replay["from"] == 0 and back.replay["truncated"] is True
    assert back.replay_bytes.startswith(b"abc")


async def test_bad_since_is_refused(plugin_factory: Factory) -> None:
    plugin = await plugin_factory()
    ws = await plugin.connect("p1", since="-1")
    assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1008


async def test_frame_too_large_closes_with_1009(plugin_factory: Factory) -> None:
    plugin = await plugin_factory(max_frame_size=1024)
    client = await plugin.attach("p1")
    await client.ws.send_bytes(b"x" * 2048)
    assert await client.wait_closed() == 1009
    other = await plugin.attach("p1")
    await other.ws.send_bytes(b"fine\n")
    await other.read_until(b"fine")


async def test_claude_session_message(plugin_factory: Factory) -> None:
    plugin = await plugin_factory()
    client = await plugin.attach("p1")
    new_id = "33333333-3333-4333-8333-333333333333"
    await plugin.manager.update_claude_session_id("p1", new_id, reason="because")
    message = (await client.wait_for("claude_session")).message
    assert message == {
        "type": "claude_session",
        "claude_session_id": new_id,
        "previous": None,
        "reason": "because",
    }
    again = await plugin.attach("p1")
    assert again.hello["claude_session_id"] == new_id


async def test_resize_is_clamped_and_latest_client_wins(plugin_factory: Factory) -> None:
    plugin = await plugin_factory(
        command=ShellCommand(
            [
                "sh",
                "-c",
                "trap 'stty size' WINCH; echo ready; while :; do read -r x && stty size; done",
            ]
        )
    )
    a = await plugin.attach("p1", cols=80, rows=24)
    await a.read_until(b"ready")
    await a.ws.send_str(json.dumps({"type": "resize", "cols": 70000, "rows": 0}))
    await a.read_until(b"1 1000")
    b = await plugin.attach("p1", cols=120, rows=40)
    await a.read_until(b"40 120")
    # a types: its size applies again.
    await a.ws.send_str(json.dumps({"type": "resize", "cols": 90, "rows": 30}))
    await a.read_until(b"30 90")
    a.output.clear()  # "40 120" was already seen once: only a new report counts
    # b types: its size applies again.
    await b.ws.send_bytes(b"\n")
    await a.read_until(b"40 120\r\n", timeout=10)
    assert plugin.manager.get_session_by_output_project("p1") is not None


async def test_shutdown_closes_clients_with_1001(plugin_factory: Factory) -> None:
    plugin = await plugin_factory()
    client = await plugin.attach("p1")
    # Concurrently: the server waits for the client's answer to its close frame.
    shutdown = asyncio.create_task(plugin.host.shutdown())
    assert await client.wait_closed() == 1001
    await shutdown


async def test_helpers_see_binary_frames_only_for_terminal_bytes(plugin_factory: Factory) -> None:
    """Terminal output is never wrapped in JSON."""
    plugin = await plugin_factory()
    client = await plugin.attach("p1")
    await client.ws.send_bytes(bytes(range(1, 128)))
    frame = await client.next()
    assert frame.kind == "bytes"


async def test_first_client_sees_a_fast_program_from_its_first_byte(
    plugin_factory: Factory,
) -> None:
    """A program that writes megabytes at once: the client that started it misses nothing,
    however long the spawn's bookkeeping takes (output waits for the client)."""
    plugin = await plugin_factory(
        command=ShellCommand(
            ["sh", "-c", "stty raw -echo; head -c 3000000 /dev/zero | tr '\\0' x; sleep 1000"]
        )
    )
    client = await plugin.attach("p1")
    assert client.replay["from"] == 0 and not client.replay["truncated"]
    async with asyncio.timeout(30):
        while len(client.output) < 3_000_000:
            assert (await client.next()).kind == "bytes"
    assert bytes(client.output) == b"x" * 3_000_000


async def test_spawn_failure_closes_with_1011_and_a_reason(plugin_factory: Factory) -> None:
    plugin = await plugin_factory(command=ShellCommand(["no-such-program-wx"]))
    ws = await plugin.connect("p1")
    message = await ws.receive()
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1011
    assert message.extra == "executable not found: no-such-program-wx"
    info = await (await plugin.client.get("/pty/api/sessions/p1", headers=plugin.headers())).json()
    assert info["status"] == "failed" and "not found" in info["status_reason"]


async def test_client_too_far_behind_is_closed_with_4001(plugin_factory: Factory) -> None:
    """A client that stops reading while another keeps up: its queue passes the bound."""
    plugin = await plugin_factory(
        command=ShellCommand(["yes", "0123456789abcdef"]),
        client_queue_limit=256 * 1024,
        send_timeout=60,
    )
    reader = await plugin.attach("flood")
    stalled = await plugin.attach("flood")
    session = plugin.manager.get_session_by_output_project("flood")
    assert session is not None and len(session.clients) == 2
    async with asyncio.timeout(30):
        while len(session.clients) == 2:
            await reader.next()  # keeps output flowing
            reader.output.clear()
    # Now read what the stalled client was sent before the cut: then the close.
    assert await stalled.wait_closed(timeout=30) == 4001
    assert len(session.clients) == 1


async def test_lone_surrogate_input_is_a_bad_message(plugin_factory: Factory) -> None:
    plugin = await plugin_factory()
    client = await plugin.attach("p1")
    await client.ws.send_str('{"type": "input", "data": "\\ud800"}')
    assert (await client.wait_for("error")).message["code"] == "bad_message"
    assert await client.wait_closed() == 1008


async def test_unknown_types_do_not_grow_the_server_queue(plugin_factory: Factory) -> None:
    """Each unknown message would cost an error reply: they are throttled."""
    plugin = await plugin_factory(control_rate=100000)  # so that the final ping is answered
    client = await plugin.attach("p1")
    for _ in range(2000):
        await client.ws.send_str('{"type":"x"}')
    await client.ws.send_str('{"type":"ping","id":"end"}')
    errors = 0
    async with asyncio.timeout(20):
        while True:
            frame = await client.next()
            if frame.kind == "error":
                errors += 1
            if frame.kind == "pong":
                break
    assert 1 <= errors <= 5


async def test_output_keeps_its_order_while_the_socket_backs_up_and_drains(
    plugin_factory: Factory,
) -> None:
    """Frames go straight to an idle socket and through the queue once it backs up: a client
    that stops reading and then catches up gets every byte once, in order."""
    lines = 3_000_000  # ~21 MB: more than the kernel buffers of the socket hold
    plugin = await plugin_factory(
        command=ShellCommand(["sh", "-c", f"stty raw -echo; seq 1 {lines}; sleep 1000"])
    )
    client = await plugin.attach("p1")
    session = plugin.manager.get_session_by_output_project("p1")
    assert session is not None
    (server_side,) = session.clients
    # Not reading: the socket backs up, the queue fills until reading pauses.
    async with asyncio.timeout(30):
        while not session.pty.reading_paused:
            await asyncio.sleep(0.01)
    assert server_side.congested
    expected = "".join(f"{n}\n" for n in range(1, lines + 1)).encode()
    async with asyncio.timeout(60):
        while len(client.output) < len(expected):
            assert (await client.next()).kind == "bytes"
    assert bytes(client.output) == expected


async def test_a_client_closed_by_its_own_replay_is_not_attached(plugin_factory: Factory) -> None:
    """A replay larger than the client's queue bound (compressed, so it is queued): 4001
    before the client ever joins the session."""
    plugin = await plugin_factory(
        command=ShellCommand(["sh", "-c", "stty raw -echo; head -c 200000 /dev/zero; sleep 1000"]),
        buffer_size=256 * 1024,
        client_queue_limit=64 * 1024,
        compress=True,
    )
    first = await plugin.attach("p1")
    async with asyncio.timeout(30):
        while len(first.output) < 200_000:
            assert (await first.next()).kind == "bytes"
    late = await plugin.client.ws_connect(
        "/pty/ws/p1", headers=plugin.headers(), compress=15, max_msg_size=0
    )
    async with asyncio.timeout(10):
        while (await late.receive()).type is not aiohttp.WSMsgType.CLOSE:
            pass
    assert late.close_code == 4001
    session = plugin.manager.get_session_by_output_project("p1")
    assert session is not None and len(session.clients) == 1


async def test_many_clients_each_get_every_byte_in_order(plugin_factory: Factory) -> None:
    """Past a few clients a wakeup's reads go out as one chunk: still every byte, in order,
    to each of them; with fewer again, each read is handed on at once."""
    lines = 200_000
    plugin = await plugin_factory(
        command=ShellCommand(
            ["sh", "-c", f"stty raw -echo; echo ready; read go; seq 1 {lines}; sleep 1000"]
        )
    )
    clients = [await plugin.attach("p1") for _ in range(7)]
    session = plugin.manager.get_session_by_output_project("p1")
    assert session is not None and session.pty.gather_reads
    for client in clients:  # the terminal no longer echoes: only seq's output follows
        await client.read_until(b"ready\n")
        client.output.clear()
    await clients[0].ws.send_bytes(b"go\n")
    expected = "".join(f"{n}\n" for n in range(1, lines + 1)).encode()

    async def read_all(client: Attached) -> bytes:
        async with asyncio.timeout(60):
            while len(client.output) < len(expected):
                assert (await client.next()).kind == "bytes"
        return bytes(client.output)

    outputs = await asyncio.gather(*(read_all(client) for client in clients))
    assert all(output == expected for output in outputs)
    for client in clients[:4]:
        await client.ws.close()
    async with asyncio.timeout(10):
        while len(session.clients) > 3:
            await asyncio.sleep(0.01)
    assert not session.pty.gather_reads


async def test_every_client_is_told_the_ptys_size_when_it_changes(plugin_factory: Factory) -> None:
    """SPEC 5.4: the latest active client's size applies, and every attached client gets
    ``size`` when it changes, so a page whose own size differs can say so."""
    plugin = await plugin_factory()
    a = await plugin.attach("p1", cols=80, rows=24)
    b = await plugin.attach("p1", cols=120, rows=40)
    assert (b.hello["cols"], b.hello["rows"]) == (120, 40)  # its own size, in its hello
    assert (await a.wait_for("size")).message == {"type": "size", "cols": 120, "rows": 40}
    await a.ws.send_bytes(b"x")  # a types: its size applies again
    for client in (a, b):
        assert (await client.wait_for("size")).message == {"type": "size", "cols": 80, "rows": 24}
    await b.ws.send_str(json.dumps({"type": "resize", "cols": 100, "rows": 30}))
    for client in (a, b):
        assert (await client.wait_for("size")).message == {"type": "size", "cols": 100, "rows": 30}
    # The same size again is no change: nothing is sent (a ping shows the order).
    await b.ws.send_str(json.dumps({"type": "resize", "cols": 100, "rows": 30}))
    await b.ws.send_str(json.dumps({"type": "ping", "id": 1}))
    assert (await b.wait_for("pong")).message["id"] == 1
    assert [e for e in b.events if e["type"] == "size"][-1] == {
        "type": "size",
        "cols": 100,
        "rows": 30,
    }
    assert sum(e["type"] == "size" for e in b.events) == 2


async def test_a_socket_admitted_while_shutdown_begins_is_closed_too(
    plugin_factory: Factory,
) -> None:
    """A connection still in its authorisation hooks when shutdown begins is not served:
    shutdown closed the sockets it knew of, so this one must not be added after it."""
    waiting, release = asyncio.Event(), asyncio.Event()

    async def authorize(principal: object, project: str, action: str) -> bool:
        if action == "input":
            waiting.set()
            await release.wait()
        return True

    async def authenticate(request: object) -> object:
        return "someone"

    plugin = await plugin_factory(authorize=authorize, authenticate=authenticate)
    connecting = asyncio.create_task(plugin.connect("p1"))
    await asyncio.wait_for(waiting.wait(), 10)
    shutdown = asyncio.create_task(plugin.host.shutdown())
    async with asyncio.timeout(10):
        while plugin.manager.accepting:
            await asyncio.sleep(0.01)
    release.set()
    ws = await asyncio.wait_for(connecting, 10)
    message = await asyncio.wait_for(ws.receive(), 10)
    assert message.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1001
    await asyncio.wait_for(shutdown, 10)
