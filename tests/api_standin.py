"""A local stand-in for the Anthropic Messages API, so the real Claude CLI runs real turns
offline.

Point Claude at it with ``ANTHROPIC_BASE_URL=<url>`` and ``ANTHROPIC_AUTH_TOKEN=<anything>``.
It answers ``POST /v1/messages`` with the Server-Sent Events Claude expects, answers
``count_tokens`` and ``HEAD /``, and records every request's JSON so a test can check what
Claude sent (``model``, ``messages``, ``tools``).

Claude also makes side requests of its own: 2.1.330 asks the same model for a session
title after the first prompt of each conversation (no tools, a JSON answer). Only the
requests of the conversation itself take the scripted replies; they are told apart by
their tools, which side requests do not offer. Without a scripted reply the conversation
is answered with ``echo_answer`` of the last prompt, so a test can tell which prompt was
answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = [
    "ApiStandin",
    "Bash",
    "Recorded",
    "Reply",
    "Text",
    "assistant_texts",
    "echo_answer",
    "prompts_of",
    "running_standin",
    "tool_results_of",
]


@dataclass(frozen=True)
class Text:
    """An answer that ends the turn."""

    text: str


@dataclass(frozen=True)
class Bash:
    """A ``Bash`` tool call: Claude runs it (asking first in its default permission mode)
    and sends the result back."""

    command: str
    description: str = "Run a command"


Reply = Text | Bash


@dataclass(frozen=True)
class Recorded:
    """One request as Claude sent it."""

    path: str
    body: dict[str, Any]
    conversation: bool

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def tool_names(self) -> list[str]:
        return [str(tool.get("name")) for tool in self.body.get("tools") or []]


def echo_answer(prompt: str) -> str:
    """The default answer to ``prompt``: recognisable on screen, not a copy of the prompt."""
    return f"ANSWER TO {prompt.upper()}"


def _side_answer(body: dict[str, Any]) -> str:
    """A side request's answer; one that asks for JSON (a title) gets an object of strings."""
    output = body.get("output_config")
    answer_format = output.get("format") if isinstance(output, dict) else None
    if isinstance(answer_format, dict) and answer_format.get("type") == "json_schema":
        schema = answer_format.get("schema") or {}
        return json.dumps({key: "Stand-in" for key in schema.get("required", [])})
    return "Stand-in"


def _texts(content: object) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        str(block.get("text", ""))
        for block in content
        if isinstance(block, dict) and block.get("type") == "text"
    ]


def prompts_of(messages: list[dict[str, Any]]) -> list[str]:
    """The user's prompts in a request's messages, oldest first.

    Claude sends a prompt as the last text block of a user message, after blocks of its own
    context wrapped in ``<system-reminder>``; tool results are not prompts.
    """
    prompts = []
    for message in messages:
        if message.get("role") != "user":
            continue
        texts = [t for t in _texts(message.get("content")) if not t.startswith("<")]
        if texts:
            prompts.append(texts[-1])
    return prompts


def assistant_texts(messages: list[dict[str, Any]]) -> list[str]:
    """The assistant's text answers in a request's messages, oldest first."""
    return [
        text
        for message in messages
        if message.get("role") == "assistant"
        for text in _texts(message.get("content"))
    ]


def tool_results_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every ``tool_result`` block the user side carries."""
    return [
        block
        for message in messages
        if message.get("role") == "user" and isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]


@dataclass
class ApiStandin:
    """The server's state: scripted replies and recorded requests."""

    replies: list[Reply] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def script(self, *replies: Reply) -> None:
        """Queue the next answers of the conversation, in order."""
        self.replies.extend(replies)

    @property
    def conversation(self) -> list[Recorded]:
        return [r for r in self.requests if r.conversation]

    async def wait_for(
        self, predicate: Callable[[Recorded], bool], timeout: float = 60
    ) -> Recorded:
        """The first conversation request (recorded so far or to come) that fits."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for request in self.conversation:
                    if predicate(request):
                        return request
                await self._changed.wait()

    async def wait_for_prompt(self, prompt: str, timeout: float = 60) -> Recorded:
        """The first conversation request whose last prompt is ``prompt``."""
        return await self.wait_for(lambda r: prompts_of(r.messages)[-1:] == [prompt], timeout)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_route("HEAD", "/", self._head)
        return app

    async def _record(self, request: web.Request) -> Recorded:
        body = await request.json()
        # Side requests (titles) offer no tools; token counts are not turns.
        conversation = request.path == "/v1/messages" and bool(body.get("tools"))
        recorded = Recorded(request.path, body, conversation)
        async with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()
        return recorded

    async def _head(self, request: web.Request) -> web.Response:
        return web.Response()

    async def _count_tokens(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        return web.json_response({"input_tokens": len(json.dumps(recorded.body)) // 4})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        reply: Reply
        if recorded.conversation and self.replies:
            reply = self.replies.pop(0)
        elif recorded.conversation:
            prompts = prompts_of(recorded.messages)
            reply = Text(echo_answer(prompts[-1] if prompts else ""))
        else:
            reply = Text(_side_answer(recorded.body))
        model = str(recorded.body.get("model", "claude-standin"))
        if not recorded.body.get("stream"):
            return web.json_response(self._message(model, reply))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for event, data in self._events(model, reply):
            payload = json.dumps({"type": event, **data})
            await response.write(f"event: {event}\ndata: {payload}\n\n".encode())
        await response.write_eof()
        return response

    def _block(self, reply: Reply) -> dict[str, Any]:
        if isinstance(reply, Text):
            return {"type": "text", "text": reply.text}
        tool_input = {"command": reply.command, "description": reply.description}
        return {
            "type": "tool_use",
            "id": f"toolu_standin_{next(self._ids)}",
            "name": "Bash",
            "input": tool_input,
        }

    def _message(self, model: str, reply: Reply) -> dict[str, Any]:
        return {
            "id": f"msg_standin_{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [self._block(reply)],
            "stop_reason": "end_turn" if isinstance(reply, Text) else "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 10},
        }

    def _events(self, model: str, reply: Reply) -> list[tuple[str, dict[str, Any]]]:
        message = self._message(model, reply)
        block = message["content"][0]
        if block["type"] == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        opening = {**message, "content": [], "stop_reason": None}
        opening["usage"] = {"input_tokens": 10, "output_tokens": 1}
        return [
            ("message_start", {"message": opening}),
            ("content_block_start", {"index": 0, "content_block": start}),
            ("content_block_delta", {"index": 0, "delta": delta}),
            ("content_block_stop", {"index": 0}),
            (
                "message_delta",
                {
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": 10},
                },
            ),
            ("message_stop", {}),
        ]


@contextlib.asynccontextmanager
async def running_standin() -> AsyncIterator[ApiStandin]:
    """Serve a stand-in on 127.0.0.1 on a free port for as long as the generator runs."""
    standin = ApiStandin()
    runner = web.AppRunner(standin.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    standin.url = f"http://127.0.0.1:{port}"
    try:
        yield standin
    finally:
        await runner.cleanup()
