"""Terminal clients for each server's WebSocket protocol, reduced to bytes in and bytes out.

Owns the wire formats (wxcode-pty, terminado, ttyd) and a raw-socket client that never reads.
Does not start servers; servers.py does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

__all__ = ["KINDS", "Handshake", "TermClient", "handshake", "open_client", "open_stalled_socket"]

KINDS: Final = ("wxcode-pty", "terminado", "ttyd")


@dataclass(frozen=True)
class Handshake:
    """Everything needed to open a session's WebSocket, whatever the client library."""

    path: str
    headers: dict[str, str]
    protocol: str | None
    first_text: str | None  # sent right after the upgrade (ttyd waits for it to spawn)


def handshake(kind: str, port: int, name: str) -> Handshake:
    if kind == "wxcode-pty":
        return Handshake(
            path=f"/ws/{name}?cols=80&rows=24",
            headers={"Origin": f"http://127.0.0.1:{port}"},
            protocol=None,
            first_text=None,
        )
    if kind == "terminado":
        return Handshake(path=f"/websocket/{name}", headers={}, protocol=None, first_text=None)
    if kind == "ttyd":
        # With -a, ttyd appends each `arg` to its command line: that is how the name gets through.
        return Handshake(
            path=f"/ws?arg={name}",
            headers={},
            protocol="tty",
            first_text=json.dumps({"AuthToken": "", "columns": 80, "rows": 24}),
        )
    raise ValueError(f"unknown server kind {kind!r}")


@dataclass
class TermClient:
    """One attached client. A pump task reads every frame so pings are answered and
    output never waits in the socket; output chunks queue up for read()."""

    kind: str
    ws: aiohttp.ClientWebSocketResponse
    chunks: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    control: list[dict[str, Any]] = field(default_factory=list)
    received: int = 0
    close_code: int | None = None
    ended: bool = False
    pump: asyncio.Task[None] | None = None

    @property
    def hello(self) -> dict[str, Any] | None:
        return next((m for m in self.control if m.get("type") == "hello"), None)

    async def read(self) -> bytes | None:
        """Next chunk of program output; None once the connection is closed."""
        return await self.chunks.get()

    async def write(self, data: bytes) -> None:
        if self.kind == "wxcode-pty":
            await self.ws.send_bytes(data)
        elif self.kind == "terminado":
            await self.ws.send_str(json.dumps(["stdin", data.decode("utf-8")]))
        else:
            await self.ws.send_bytes(b"0" + data)

    async def close(self) -> None:
        await self.ws.close()
        if self.pump is not None:
            await self.pump

    async def _run(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    data = self._output_of_binary(msg.data)
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    data = self._output_of_text(msg.data)
                else:
                    break
                if data:
                    self.received += len(data)
                    self.chunks.put_nowait(data)
        finally:
            self.close_code = self.ws.close_code
            self._end_of_output()

    def _output_of_binary(self, payload: bytes) -> bytes:
        if self.kind == "ttyd":
            # ttyd's first byte is a command: '0' output, '1' window title, '2' preferences.
            return payload[1:] if payload[:1] == b"0" else b""
        return payload

    def _output_of_text(self, text: str) -> bytes:
        message = json.loads(text)
        if self.kind == "terminado":
            # ["stdout", text], ["setup", {}], ["disconnect", 1]
            if message[0] == "stdout":
                return str(message[1]).encode("utf-8")
            if message[0] == "disconnect":
                self._end_of_output()
            return b""
        if isinstance(message, dict):
            self.control.append(message)
            if message.get("type") == "exit":
                self._end_of_output()
        return b""

    def _end_of_output(self) -> None:
        """The program has exited and all its output came before this message: readers can
        stop now instead of waiting for the close handshake."""
        if not self.ended:
            self.ended = True
            self.chunks.put_nowait(None)


async def open_client(http: aiohttp.ClientSession, kind: str, port: int, name: str) -> TermClient:
    spec = handshake(kind, port, name)
    ws = await http.ws_connect(
        f"ws://127.0.0.1:{port}{spec.path}",
        headers=spec.headers,
        protocols=(spec.protocol,) if spec.protocol else (),
        max_msg_size=0,
        autoping=True,
        compress=0,
    )
    if spec.first_text is not None:
        await ws.send_str(spec.first_text)
    client = TermClient(kind=kind, ws=ws)
    client.pump = asyncio.get_running_loop().create_task(client._run())
    return client


def _masked_text_frame(text: str) -> bytes:
    """A single client-to-server text frame (RFC 6455 requires clients to mask)."""
    payload = text.encode("utf-8")
    mask = os.urandom(4)
    header = bytearray([0x81])
    if len(payload) < 126:
        header.append(0x80 | len(payload))
    else:
        header.append(0x80 | 126)
        header += len(payload).to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(header) + mask + masked


def open_stalled_socket(kind: str, port: int, name: str, timeout: float = 10.0) -> socket.socket:
    """Upgrade a plain socket to a WebSocket and return it unread: a client that never reads.

    aiohttp would keep reading into its own buffer, so the stall would not reach the server."""
    spec = handshake(kind, port, name)
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {spec.path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if spec.protocol:
        lines.append(f"Sec-WebSocket-Protocol: {spec.protocol}")
    lines += [f"{k}: {v}" for k, v in spec.headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        # One byte at a time so no frame bytes after the headers are consumed.
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError("server closed the connection during the upgrade")
        response += byte
    status = response.split(b"\r\n", 1)[0]
    if b" 101 " not in status + b" ":
        raise ConnectionError(f"upgrade refused: {status.decode(errors='replace')}")
    if spec.first_text is not None:
        sock.sendall(_masked_text_frame(spec.first_text))
    return sock
