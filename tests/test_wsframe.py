"""Frames written straight into the transport (``wsframe.py``), read back by aiohttp's own
client: every length form of RFC 6455, text and binary, mixed with frames that aiohttp's writer
sends, then a close. CI runs it on the lowest aiohttp that pyproject.toml allows and the latest."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from wxcode_pty.wsframe import OP_BINARY, OP_TEXT, DirectWriter, OutputFrames, frame

#: Every length form: 7-bit (0..125), 16-bit (126..65535), 64-bit (65536 and more).
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _payload(size: int, salt: int) -> bytes:
    return bytes((i * 7 + salt) % 251 for i in range(size))


def _text(size: int) -> str:
    return "".join("abcdéf"[i % 6] for i in range(size))


async def _client(handler: Handler) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    app.router.add_get("/ws", handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def _until_ready(direct: DirectWriter) -> None:
    """A direct write is made only once the transport has sent what it held."""
    async with asyncio.timeout(10):
        while not direct.ready():
            await asyncio.sleep(0.001)


async def test_every_frame_size_round_trips_through_aiohttps_reader() -> None:
    plan: list[tuple[str, bytes | str]] = []
    for size in SIZES:
        plan += [("direct", _payload(size, 1)), ("direct", _text(size))]
        plan += [("writer", _payload(size, 2)), ("writer", _text(size)), ("direct", b"x")]

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        direct = DirectWriter(ws, request.transport)
        frames = OutputFrames()
        for how, data in plan:
            if how == "writer":
                await (ws.send_bytes(data) if isinstance(data, bytes) else ws.send_str(data))
                continue
            await _until_ready(direct)
            if isinstance(data, bytes):
                direct.write(frames.of(data))
            else:
                direct.write(frame(OP_TEXT, data.encode()))
        await ws.close(code=1000, message=b"done")
        return ws

    client = await _client(handler)
    try:
        async with client.ws_connect("/ws", max_msg_size=0) as ws:
            for _, data in plan:
                message = await ws.receive(timeout=10)
                kind = WSMsgType.BINARY if isinstance(data, bytes) else WSMsgType.TEXT
                assert message.type is kind, (message.type, len(data))
                assert message.data == data, f"{kind.name} of {len(data)}"
            closing = await ws.receive(timeout=10)
            assert closing.type is WSMsgType.CLOSE and closing.data == 1000
    finally:
        await client.close()


async def test_corked_frames_go_out_as_one_write_in_order() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        direct = DirectWriter(ws, request.transport)
        with direct.corked():
            for n in range(3):
                direct.write(frame(OP_TEXT, f"m{n}".encode()))
            direct.write(frame(OP_BINARY, _payload(70_000, 4)))
        await ws.close()
        return ws

    client = await _client(handler)
    try:
        async with client.ws_connect("/ws") as ws:
            got = [(await ws.receive(timeout=10)).data for _ in range(4)]
    finally:
        await client.close()
    assert got == ["m0", "m1", "m2", _payload(70_000, 4)]


async def test_no_direct_frame_with_compression_or_once_close_began() -> None:
    seen: dict[str, bool] = {}

    async def compressed(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=True)
        await ws.prepare(request)
        seen["compressed"] = DirectWriter(ws, request.transport).ready()
        await ws.close()
        return ws

    async def plain(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        direct = DirectWriter(ws, request.transport)
        seen["plain"] = direct.ready()
        closing = asyncio.create_task(ws.close())
        await asyncio.sleep(0)  # close() has run up to its first await
        seen["closing"] = direct.ready()
        await closing
        return ws

    for handler, compress in ((compressed, 15), (plain, 0)):
        client = await _client(handler)
        try:
            async with client.ws_connect("/ws", compress=compress) as ws:
                assert (await ws.receive(timeout=10)).type is WSMsgType.CLOSE
        finally:
            await client.close()
    assert seen == {"compressed": False, "plain": True, "closing": False}


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
def test_frame_headers_follow_rfc6455(size: int) -> None:
    payload = _payload(size, 3)
    built = frame(OP_BINARY, payload)
    assert built[0] == 0x82 and built[1] & 0x80 == 0  # FIN + binary, never masked
    header = 2 if size < 126 else 4 if size < 65536 else 10
    assert built[1] & 0x7F == (size if size < 126 else 126 if size < 65536 else 127)
    assert (
        int.from_bytes(built[2:header] or built[1:2], "big")
        & (0x7F if size < 126 else 0xFFFFFFFFFFFFFFFF)
        == size
    )
    assert built[header:] == payload
