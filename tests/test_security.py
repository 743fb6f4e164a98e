"""Secure by default: Origin, Host, authentication, authorization, ids, environment, logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from wxcode_pty import ShellCommand, proctree

from .conftest import TOKEN, Plugin, environ_of, program_runs, py

Factory = Callable[..., Awaitable[Plugin]]


async def _upgrade_status(plugin: Plugin, project: str, headers: dict[str, str]) -> int:
    try:
        ws = await plugin.client.ws_connect(f"/pty/ws/{project}", headers=headers)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    message = await ws.receive()
    await ws.close()
    return 101 if message.type is aiohttp.WSMsgType.TEXT else 1000 + (ws.close_code or 0) % 1000


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "null",
        None,
        "http://127.0.0.1:1",
        "http://127.0.0.1.evil.example",
        "https://127.0.0.1:{port}",
        "http://localhost:{port}",
        "http://127.0.0.1:{port}/path",
        "http://user@127.0.0.1:{port}",
    ],
)
async def test_foreign_origins_are_refused_before_the_upgrade(
    plugin_factory: Factory, origin: str | None, tmp_path: Path
) -> None:
    """S1: 403 before the upgrade; nothing spawned."""
    plugin = await plugin_factory()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if origin is not None:
        headers["Origin"] = origin.format(port=plugin.client.port)
    assert await _upgrade_status(plugin, "p1", headers) == 403
    assert plugin.manager.sessions == []
    assert not (tmp_path / "projects").exists()
    # The server's own origin connects.
    assert await _upgrade_status(plugin, "p1", plugin.headers()) == 101


async def test_configured_origins(plugin_factory: Factory) -> None:
    plugin = await plugin_factory(allowed_origins=frozenset({"https://app.example.com"}))
    assert (
        await _upgrade_status(
            plugin, "p1", {**plugin.headers(), "Origin": "https://app.example.com"}
        )
        == 101
    )
    assert await _upgrade_status(plugin, "p1", plugin.headers()) == 403


async def test_foreign_host_is_refused(plugin_factory: Factory) -> None:
    """S2: valid credentials, but a Host that is not ours (DNS rebinding)."""
    plugin = await plugin_factory()
    headers = {**plugin.headers(), "Host": "evil.example", "Origin": "http://evil.example"}
    assert await _upgrade_status(plugin, "p1", headers) == 403
    response = await plugin.client.get("/pty/api/sessions", headers=headers)
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "host_not_allowed"
    assert plugin.manager.sessions == []


async def _refused_ws(plugin: Plugin, project: str, headers: dict[str, str]) -> int | None:
    ws = await plugin.client.ws_connect(f"/pty/ws/{project}", headers=headers)
    message = await ws.receive()
    assert message.type is aiohttp.WSMsgType.CLOSE, message
    return ws.close_code


async def test_missing_or_wrong_credentials_are_refused(plugin_factory: Factory) -> None:
    """S3: no credentials, a wrong token: refused, nothing spawned."""
    plugin = await plugin_factory()
    assert await _refused_ws(plugin, "p1", {"Origin": plugin.origin}) == 1008
    assert (
        await _refused_ws(plugin, "p1", {"Origin": plugin.origin, "Authorization": "Bearer wrong"})
        == 1008
    )
    response = await plugin.client.get("/pty/api/sessions")
    assert response.status == 401
    response = await plugin.client.post(
        "/pty/api/sessions/p1", headers={"Authorization": "Bearer nope"}
    )
    assert response.status == 401
    assert plugin.manager.sessions == []


async def test_raising_auth_hook_denies(plugin_factory: Factory) -> None:
    async def authenticate(request: web.Request) -> object:
        raise RuntimeError("database down")

    plugin = await plugin_factory(authenticate=authenticate)
    assert await _refused_ws(plugin, "p1", plugin.headers()) == 1008
    assert (await plugin.client.get("/pty/api/sessions", headers=plugin.headers())).status == 401
    assert plugin.manager.sessions == []


async def test_token_cookie_flow(plugin_factory: Factory) -> None:
    plugin = await plugin_factory()
    response = await plugin.client.get(f"/pty/?project=p1&token={TOKEN}", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/pty/?project=p1"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert response.headers["Referrer-Policy"] == "no-referrer"
    # The cookie (now in the client's jar) authenticates the WebSocket.
    ws = await plugin.client.ws_connect("/pty/ws/p1", headers={"Origin": plugin.origin})
    assert json.loads((await ws.receive()).data)["type"] == "hello"
    await ws.close()
    # A wrong URL token gets no cookie.
    response = await plugin.client.get("/pty/?token=wrong", allow_redirects=False)
    assert response.status == 200 and "Set-Cookie" not in response.headers


async def test_page_headers(plugin_factory: Factory) -> None:
    plugin = await plugin_factory()
    response = await plugin.client.get("/pty/")
    assert response.status == 200
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert "xterm" in await response.text()
    assert (await plugin.client.get("/pty/static/vendor/xterm/xterm.js")).status == 200


async def test_other_principals_project_is_refused_without_revealing_it(
    plugin_factory: Factory, tmp_path: Path
) -> None:
    """S4: A may not attach to, type into, resize, see or close B's project."""

    async def authenticate(request: web.Request) -> object | None:
        return request.headers.get("X-User")

    async def authorize(principal: object, project: str, action: str) -> bool:
        return project.startswith(f"{principal}-")

    marker = tmp_path / "typed"
    plugin = await plugin_factory(
        authenticate=authenticate,
        authorize=authorize,
        command=ShellCommand(["sh", "-c", f"cat > {marker}"]),
    )
    bob = {"Origin": plugin.origin, "X-User": "bob"}
    alice = {"Origin": plugin.origin, "X-User": "alice"}
    ws = await plugin.client.ws_connect("/pty/ws/bob-1", headers=bob)
    assert json.loads((await ws.receive()).data)["type"] == "hello"
    session = plugin.manager.get_session_by_output_project("bob-1")
    assert session is not None
    size = (session.cols, session.rows)
    # Refusals for an existing and a missing project look the same.
    for project in ("bob-1", "bob-missing"):
        check = await plugin.client.ws_connect(f"/pty/ws/{project}", headers=alice)
        with contextlib.suppress(ConnectionError):  # alice tries to type and resize anyway
            await check.send_bytes(b"alice\n")
            await check.send_str(json.dumps({"type": "resize", "cols": 33, "rows": 11}))
        message = await check.receive()
        assert (message.type, check.close_code, message.extra) == (
            aiohttp.WSMsgType.CLOSE,
            1008,
            "not authorised",
        )
        got = await plugin.client.get(f"/pty/api/sessions/{project}", headers=alice)
        assert got.status == 404
        assert await got.json() == {"error": {"code": "not_found", "message": "Not Found"}}
        assert (
            await plugin.client.delete(f"/pty/api/sessions/{project}", headers=alice)
        ).status == 404
    listed = await (await plugin.client.get("/pty/api/sessions", headers=alice)).json()
    assert listed == []
    assert [
        s["output_project_id"]
        for s in await (await plugin.client.get("/pty/api/sessions", headers=bob)).json()
    ] == ["bob-1"]
    # What bob types arrives; nothing of alice's came before it.
    await ws.send_bytes(b"sync\n")
    async with asyncio.timeout(10):
        while marker.read_bytes() != b"sync\n":
            assert b"alice" not in marker.read_bytes()
            await asyncio.sleep(0.01)
    assert (session.cols, session.rows) == size
    await ws.close()


async def test_read_only_principal_cannot_type_or_resize(
    plugin_factory: Factory, tmp_path: Path
) -> None:
    async def authorize(principal: object, project: str, action: str) -> bool:
        return action in ("attach", "list")

    async def authenticate(request: web.Request) -> object:
        return "viewer"

    plugin = await plugin_factory(authenticate=authenticate, authorize=authorize)
    client = await plugin.attach("p1")
    await client.ws.send_bytes(b"secret\n")
    assert (await client.wait_for("error")).message["code"] == "forbidden"
    await client.ws.send_str(json.dumps({"type": "input", "data": "x"}))
    await client.ws.send_str(json.dumps({"type": "resize", "cols": 100, "rows": 10}))
    # Messages are handled in order: once the pong is here, the refusals above are done.
    await client.ws.send_str(json.dumps({"type": "ping", "id": 1}))
    await client.wait_for("pong")
    session = plugin.manager.get_session_by_output_project("p1")
    assert session is not None and session.buffer.end == 0 and session.cols == 80


@pytest.mark.parametrize(
    "project",
    [
        "..%2Fx",
        "%2Ftmp%2Fx",
        "a%2Fb",
        "%252e%252e",
        "-rf",
        "x" * 300,
        "a%00b",
        "%C3%A9",
        ".x",
        "_x",
    ],
)
async def test_bad_project_ids_are_refused(
    plugin_factory: Factory, project: str, tmp_path: Path
) -> None:
    """S5: refused before any lookup; no file or directory created."""
    plugin = await plugin_factory()
    ws = await plugin.client.ws_connect(f"/pty/ws/{project}", headers=plugin.headers())
    message = await ws.receive()
    assert message.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1008
    for method in ("GET", "POST", "DELETE"):
        response = await plugin.client.request(
            method, f"/pty/api/sessions/{project}", headers=plugin.headers()
        )
        assert response.status in (400, 404)
    assert plugin.manager.sessions == []
    assert not (tmp_path / "projects").exists()


async def test_empty_and_path_ids_do_not_route(plugin_factory: Factory, tmp_path: Path) -> None:
    plugin = await plugin_factory()
    for path in ("/pty/ws/", "/pty/ws/a/b", "/pty/ws/../x"):
        response = await plugin.client.get(path, headers=plugin.headers())
        assert response.status == 404
    assert not (tmp_path / "projects").exists()


async def test_client_cannot_choose_what_runs(plugin_factory: Factory, tmp_path: Path) -> None:
    """S6: cmd, args, cwd and env in the query or JSON are ignored."""
    plugin = await plugin_factory(command=ShellCommand(["sleep", "1000"]))
    client = await plugin.attach("p1", cmd="sh", args="-c id", cwd="/", env="X=1")
    await client.ws.send_str(
        json.dumps({"type": "resize", "cols": 90, "rows": 20, "cmd": "sh", "cwd": "/"})
    )
    response = await plugin.client.post(
        "/pty/api/sessions/p2?cmd=sh&cwd=/",
        json={"cmd": "sh", "cwd": "/", "env": {"A": "1"}},
        headers=plugin.headers(),
    )
    assert response.status == 201
    for project in ("p1", "p2"):
        session = plugin.manager.get_session_by_output_project(project)
        assert session is not None
        await program_runs(session.pty.pid, ["sleep", "1000"])
        assert os.readlink(f"/proc/{session.pty.pid}/cwd") == str(
            (tmp_path / "projects" / project).resolve()
        )


async def test_child_environment_is_an_allowlist(
    plugin_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S7 through the plugin."""
    monkeypatch.setenv("DATABASE_PASSWORD", "shh")
    monkeypatch.setenv("CLAUDECODE", "1")
    monkeypatch.setenv("CLAUDE_CODE_SSE_PORT", "1234")
    plugin = await plugin_factory(
        command=ShellCommand(["sleep", "1000"]), env_extra={"PROJECT_FLAG": "on"}
    )
    await plugin.attach("p1")
    session = plugin.manager.get_session_by_output_project("p1")
    assert session is not None
    await program_runs(session.pty.pid, ["sleep", "1000"])
    env = environ_of(session.pty.pid)
    assert (
        "DATABASE_PASSWORD" not in env
        and "CLAUDECODE" not in env
        and "CLAUDE_CODE_SSE_PORT" not in env
    )
    assert env["PROJECT_FLAG"] == "on" and env["TERM"] == "xterm-256color"
    assert env[proctree.MARKER_ENV] == session.session_id


async def test_no_token_in_any_log_line(
    plugin_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """S8: auth success and failure, and a forced 500: the token never appears in a log."""

    caplog.set_level(logging.DEBUG)
    plugin = await plugin_factory()
    await plugin.client.get(f"/pty/?token={TOKEN}", allow_redirects=False)
    await plugin.client.get("/pty/?token=wrong-guess-token", allow_redirects=False)
    await plugin.client.get("/pty/api/sessions", headers={"Authorization": f"Bearer {TOKEN}"})
    await plugin.client.get(
        "/pty/api/sessions", headers={"Authorization": "Bearer wrong-guess-token"}
    )
    await plugin.attach("p1")
    # A forced 500: the store is closed under the running app.
    await plugin.manager.store.close()
    response = await plugin.client.get("/pty/api/sessions", headers=plugin.headers())
    assert response.status == 500
    assert (await response.json())["error"]["code"] == "internal_error"
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "internal error" in text
    assert TOKEN not in text and "wrong-guess-token" not in text


async def test_replay_does_not_make_the_terminal_answer(plugin_factory: Factory) -> None:
    """S9: queries in the output are not replayed to a late client."""
    plugin = await plugin_factory(
        command=ShellCommand(
            py(
                "import sys, time; sys.stdout.write('a\\x1b[6nb\\x1b[cc\\x1b]11;?\\x07d'); sys.stdout.flush(); time.sleep(1000)"
            )
        )
    )
    first = await plugin.attach("p1")
    await first.read_until(b"d")
    assert b"\x1b[6n" in first.output  # live output keeps queries: the program waits for answers
    late = await plugin.attach("p1")
    assert late.replay_bytes == b"abcd"
    session = plugin.manager.get_session_by_output_project("p1")
    assert session is not None and session.pty.pending_input == 0


async def test_client_and_session_limits(plugin_factory: Factory) -> None:
    """S12: past the limits, 1013 with a message; existing ones unaffected."""
    plugin = await plugin_factory(max_sessions=2, max_clients_per_session=2)
    a1 = await plugin.attach("a")
    await plugin.attach("a")
    ws = await plugin.connect("a")
    message = await ws.receive()
    assert (ws.close_code, message.extra) == (1013, "client limit reached for this session")
    await plugin.attach("b")
    ws = await plugin.connect("c")
    message = await ws.receive()
    assert ws.close_code == 1013 and "session limit" in (message.extra or "")
    response = await plugin.client.post("/pty/api/sessions/c", headers=plugin.headers())
    assert response.status == 503
    await a1.ws.send_bytes(b"alive\n")
    await a1.read_until(b"alive")


async def test_connection_limit(plugin_factory: Factory) -> None:
    plugin = await plugin_factory(max_connections=1)
    await plugin.attach("a")
    ws = await plugin.connect("b")
    await ws.receive()
    assert ws.close_code == 1013
    assert plugin.manager.get_session_by_output_project("b") is None


async def test_cross_site_post_is_refused(plugin_factory: Factory) -> None:
    plugin = await plugin_factory()
    response = await plugin.client.post(
        "/pty/api/sessions/p1", headers={**plugin.headers(), "Origin": "https://evil.example"}
    )
    assert response.status == 403
    assert plugin.manager.sessions == []


async def test_metrics(plugin_factory: Factory) -> None:
    plugin = await plugin_factory()
    await plugin.attach("p1")
    await plugin.client.get("/pty/api/sessions")  # refused: no credentials
    text = await (await plugin.client.get("/pty/metrics", headers=plugin.headers())).text()
    assert "wxcode_pty_sessions 1" in text
    assert "wxcode_pty_spawns_total 1" in text
    assert 'wxcode_pty_refusals_total{reason="auth"} 1' in text
    assert (await plugin.client.get("/pty/metrics")).status == 401


async def test_falsy_principal_is_refused(plugin_factory: Factory) -> None:
    async def authenticate(request: web.Request) -> object:
        return False

    plugin = await plugin_factory(authenticate=authenticate)
    assert await _refused_ws(plugin, "p1", plugin.headers()) == 1008
    assert (await plugin.client.get("/pty/api/sessions", headers=plugin.headers())).status == 401
    assert plugin.manager.sessions == []
