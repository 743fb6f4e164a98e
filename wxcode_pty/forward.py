"""``Forwarder``: a request for a session that another host owns, passed on to that host.

Several hosts share one database (SPEC 12) and any of them may receive any request. The one
that owns the project answers it; the others pass REST calls and WebSockets to the owner's
advertised address, with the client's own credentials, Origin and Host, so that the owner checks
them as it would a direct request. A WebSocket is relayed frame by frame in both directions and
its close code passed back, so the client sees the owner's protocol, offsets and close codes.
A request arrives forwarded at most once: a host never forwards a forwarded request again (the
owner may have changed in between; the client then hears "try again", 503 or 1013).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy

from . import protocol

__all__ = ["FORWARDED_HEADER", "Forwarder"]

log = logging.getLogger("wxcode_pty")

#: Marks a forwarded request; its value is the forwarding host's id.
FORWARDED_HEADER: Final = "X-Wxcode-Pty-Forwarded"

# Headers of one hop, never passed on (RFC 9110 7.6.1), and the WebSocket handshake's own,
# which the forwarding client makes anew.
_NOT_PASSED: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        FORWARDED_HEADER.lower(),
    }
)
#: Close codes that describe a connection but may not be sent in a close frame (RFC 6455 7.4.1).
_NOT_SENDABLE: Final = frozenset({1005, 1006, 1015})
#: Seconds to reach the owner before the client hears "try again".
CONNECT_TIMEOUT: Final = 10.0


class Forwarder:
    """Passes requests to other hosts. One per plugin; :meth:`close` at cleanup.

    ``heartbeat``: seconds between pings to an owner's WebSocket; an owner that stops answering
    (gone from the network without a word) is given up, and the client told to reconnect.
    """

    def __init__(self, heartbeat: float = 20.0) -> None:
        self._heartbeat = heartbeat
        self._http: aiohttp.ClientSession | None = None
        #: Requests passed on to another host.
        self.forwards = 0

    @staticmethod
    def forwarded(request: web.Request) -> bool:
        """True for a request another host passed to this one."""
        return FORWARDED_HEADER in request.headers

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            # No cookie jar: the client's cookies travel in its own Cookie header.
            self._http = aiohttp.ClientSession(
                # No limit of its own: every relayed WebSocket holds a connection for its life
                # (the plugin's max_connections bounds them).
                connector=aiohttp.TCPConnector(limit=0),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
                auto_decompress=False,
            )
        return self._http

    @staticmethod
    def _headers(request: web.Request, host_id: str) -> CIMultiDict[str]:
        headers = _passed(request.headers)
        peer = request.remote or ""
        previous = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{previous}, {peer}" if previous else peer
        headers[FORWARDED_HEADER] = host_id
        return headers

    @staticmethod
    def _url(address: str, path: str, request: web.Request) -> str:
        query = request.query_string
        return f"{address.rstrip('/')}{path}" + (f"?{query}" if query else "")

    async def http(
        self, request: web.Request, address: str, path: str, host_id: str
    ) -> web.Response:
        """The owner's answer to ``request`` (a REST call), or 503 when it cannot be had."""
        self.forwards += 1
        body = await request.read()
        try:
            async with self._client().request(
                request.method,
                self._url(address, path, request),
                headers=self._headers(request, host_id),
                data=body or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=60, sock_connect=CONNECT_TIMEOUT),
            ) as answer:
                payload = await answer.read()
                headers = _passed(answer.headers)
                headers.pop("Date", None)
                headers.pop("Server", None)
                return web.Response(status=answer.status, body=payload, headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("forwarding %s %s to %s failed: %s", request.method, path, address, exc)
            return web.json_response(
                {
                    "error": {
                        "code": "owner_unreachable",
                        "message": "the owning host did not answer",
                    }
                },
                status=503,
            )

    async def websocket(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        address: str,
        path: str,
        host_id: str,
    ) -> None:
        """Relay ``ws`` (upgraded already) to the owner's WebSocket until either side closes."""
        self.forwards += 1
        url = self._url(address, path, request)
        try:
            upstream = await asyncio.wait_for(
                self._client().ws_connect(
                    url,
                    headers=self._headers(request, host_id),
                    max_msg_size=0,  # the owner's frames, whatever their size, are its to bound
                    autoping=True,
                    heartbeat=self._heartbeat,
                ),
                CONNECT_TIMEOUT,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("forwarding a WebSocket to %s failed: %s", address, exc)
            await ws.close(
                code=protocol.CLOSE_TRY_AGAIN_LATER, message=b"owning host did not answer"
            )
            return
        async with upstream:
            down = asyncio.create_task(_relay(upstream, ws))
            up = asyncio.create_task(_relay(ws, upstream))
            try:
                done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (down, up):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            ended = done.pop()
            code, reason = None, "owning host went away"
            if not ended.cancelled() and ended.exception() is None:
                code, reason = ended.result()
            # The side that closed first gives its code to the other.
            other: web.WebSocketResponse | aiohttp.ClientWebSocketResponse
            other = ws if ended is down else upstream
            if not other.closed:
                await other.close(code=code or protocol.CLOSE_GOING_AWAY, message=_reason(reason))


def _passed(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """``headers`` without those of one hop, the WebSocket handshake's, and any that
    ``Connection`` names (RFC 9110 7.6.1); repeated ones (``Set-Cookie``) stay repeated."""
    named = {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
    }
    return CIMultiDict(
        (name, value)
        for name, value in headers.items()
        if name.lower() not in _NOT_PASSED and name.lower() not in named
    )


def _reason(reason: str) -> bytes:
    """A close reason that fits a control frame (123 bytes), cut on a character boundary."""
    return reason.encode()[:120].decode("utf-8", errors="ignore").encode()


async def _relay(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    target: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> tuple[int | None, str]:
    """Copy frames from ``source`` to ``target`` until ``source`` closes: its close code and
    reason. Each send waits for the target's transport: the relay holds no backlog."""
    while True:
        message = await source.receive()
        if message.type is WSMsgType.BINARY:
            await target.send_bytes(message.data)
        elif message.type is WSMsgType.TEXT:
            await target.send_str(message.data)
        elif message.type is WSMsgType.CLOSE:
            code = message.data if message.data not in _NOT_SENDABLE else None
            return code, message.extra or ""
        elif message.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            # The connection broke (1006) rather than closed: the client should reconnect.
            return None, "owning host went away"
