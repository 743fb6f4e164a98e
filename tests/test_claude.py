"""Claude integration against a real server process: with the stand-in, and the real CLI.

Each scenario runs once with ``tests/fake_claude/claude`` and once with the real Claude Code
CLI when ``WXCODE_PTY_REAL_CLAUDE`` names it (``.ci/run`` installs it); both run offline in a
temporary ``CLAUDE_CONFIG_DIR``.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from wxcode_pty import proctree
from wxcode_pty.claude import ClaudeCommand, ClaudeTracker, project_dir, project_folder
from wxcode_pty.commands import ClaudeState, SpawnRequest

from .claude_cli import claude_env, claude_params, prepare_config_dir, transcript_path
from .conftest import Attached
from .server import ServerProcess, cmdline, holders

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "claude"
_ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


@dataclass
class Claude:
    server: ServerProcess
    config: Path
    binary: Path

    def cwd(self, project: str) -> Path:
        return (self.server.workdir / project).resolve()

    def transcript(self, project: str, claude_id: str) -> Path:
        return transcript_path(self.config, self.cwd(project), claude_id)

    async def running_pid(self, project: str) -> int:
        info = (await self.server.sessions())[project]
        assert info["status"] == "running" and info["pid"], info
        return int(info["pid"])

    async def restart(self, signum: int) -> None:
        await self.server.kill(signum)
        await self.server.start()
        await self.server.ready()


@pytest.fixture(params=claude_params())
async def claude(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Claude]:
    binary = Path(request.param)
    # The server passes Claude's login and configuration on: none from the developer's
    # environment (the real CLI would go online), and no session markers.
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "CLAUDE_CODE_", "CLAUDECODE")):
            monkeypatch.delenv(name)
    config = tmp_path / "config"
    home = tmp_path / "home"
    home.mkdir()
    workdir = tmp_path / "projects"
    projects = [workdir / p for p in ("p1", "p2")]
    for project in projects:
        project.mkdir(parents=True)
    prepare_config_dir(config, [p.resolve() for p in projects])
    env = {"CLAUDE_CONFIG_DIR": str(config), "HOME": str(home)}
    server = ServerProcess(tmp_path, "--claude", str(binary), "--kill-grace", "2", env=env)
    await server.start()
    await server.ready()
    try:
        yield Claude(server, config, binary)
    finally:
        await server.close()


def screen(client: Attached) -> bytes:
    """What the terminal shows, without escapes and white space (the real TUI draws spaces
    as cursor moves)."""
    return re.sub(rb"\s+", b"", _ANSI.sub(b"", bytes(client.output)))


async def wait_ready(client: Attached, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while b"Notloggedin" not in screen(client):
            await client.next(timeout)


async def wait_file(path: Path, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not path.exists():
            await asyncio.sleep(0.05)


def flag_value(pid: int, flag: str) -> str | None:
    argv = cmdline(pid)
    return argv[argv.index(flag) + 1] if flag in argv else None


async def test_new_session_gets_an_id_before_start(claude: Claude) -> None:
    client = await claude.server.attach("p1")
    claude_id = client.hello["claude_session_id"]
    assert uuid.UUID(claude_id)
    await wait_ready(client)
    pid = await claude.running_pid("p1")
    assert flag_value(pid, "--session-id") == claude_id and "--resume" not in cmdline(pid)
    assert os.readlink(f"/proc/{pid}/cwd") == str(claude.cwd("p1"))
    # The stored argv has no per-spawn flags.
    import sqlite3

    with sqlite3.connect(claude.server.db) as db:
        argv = json.loads(db.execute("SELECT argv FROM sessions").fetchone()[0])
    assert argv == [str(claude.binary)]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_typed_message_is_resumed_after_restart(claude: Claude, signum: int) -> None:
    client = await claude.server.attach("p1")
    claude_id = client.hello["claude_session_id"]
    await wait_ready(client)
    await client.ws.send_bytes(b"hello there\r")
    await wait_file(claude.transcript("p1", claude_id))
    await claude.restart(signum)
    pid = await claude.running_pid("p1")
    assert flag_value(pid, "--resume") == claude_id and "--session-id" not in cmdline(pid)
    assert os.readlink(f"/proc/{pid}/cwd") == str(claude.cwd("p1"))
    assert holders(claude_id) == [pid]
    back = await claude.server.attach("p1")
    assert back.hello["resumed"] is True and back.hello["claude_session_id"] == claude_id
    await wait_ready(back)


async def test_unused_session_restarts_with_the_same_session_id(claude: Claude) -> None:
    client = await claude.server.attach("p1")
    claude_id = client.hello["claude_session_id"]
    await wait_ready(client)
    await claude.restart(signal.SIGKILL)
    pid = await claude.running_pid("p1")
    assert flag_value(pid, "--session-id") == claude_id
    back = await claude.server.attach("p1")
    await wait_ready(back)
    assert b"alreadyinuse" not in screen(back)
    assert await claude.running_pid("p1") == pid


async def test_clear_is_followed_and_the_new_id_resumed(claude: Claude) -> None:
    client = await claude.server.attach("p1")
    first_id = client.hello["claude_session_id"]
    await wait_ready(client)
    await client.ws.send_bytes(b"first message\r")
    await wait_file(claude.transcript("p1", first_id))
    await client.ws.send_bytes(b"/clear\r")
    message = (await client.wait_for("claude_session", timeout=10)).message
    new_id = message["claude_session_id"]
    assert new_id != first_id and message["previous"] == first_id and message["reason"] is None
    stored = (await claude.server.sessions())["p1"]["claude_session_id"]
    assert stored == new_id
    await wait_file(claude.transcript("p1", new_id))
    await claude.restart(signal.SIGKILL)
    pid = await claude.running_pid("p1")
    assert flag_value(pid, "--resume") == new_id
    assert holders(first_id) == []


async def test_lost_conversation_falls_back_once_to_a_fresh_one(claude: Claude) -> None:
    """/exit before any message can leave a transcript without a conversation: resuming it
    fails ("No conversation found"), and so does starting it anew ("already in use")."""
    client = await claude.server.attach("p1")
    old_id = client.hello["claude_session_id"]
    await wait_ready(client)
    await client.ws.send_bytes(b"/exit\r")
    assert (await client.wait_for("exit", timeout=20)).message["code"] == 0
    transcript = claude.transcript("p1", old_id)
    await wait_file(transcript)
    # The real CLI sometimes records the /exit command itself, which makes the transcript
    # resumable; keep only what it writes when it does not (observed on 2.1.330).
    lines = transcript.read_text().splitlines()
    kept = [line for line in lines if json.loads(line).get("type") in ("mode", "permission-mode")]
    transcript.write_text("".join(line + "\n" for line in kept))
    back = await claude.server.attach("p1")
    assert back.hello["claude_session_id"] == old_id
    message = (await back.wait_for("claude_session", timeout=30)).message
    new_id = message["claude_session_id"]
    assert message["previous"] == old_id and new_id != old_id
    assert "could not be resumed" in message["reason"] and old_id in message["reason"]
    await wait_ready(back)
    pid = await claude.running_pid("p1")
    assert flag_value(pid, "--session-id") == new_id
    assert (await claude.server.sessions())["p1"]["claude_session_id"] == new_id
    assert holders(old_id) == []


async def test_respawn_ends_only_claude_processes_holding_the_id(
    claude: Claude, tmp_path: Path
) -> None:
    """S13: before a respawn, a Claude still holding the id is ended; a grep of the id, an
    editor given the id after --resume, a Claude on another conversation whose arguments
    mention the id, and a process that a forged sessions/<pid>.json names are left alone."""
    client = await claude.server.attach("p1")
    claude_id = client.hello["claude_session_id"]
    await wait_ready(client)
    await client.ws.close()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    stream = ["-p", "--input-format", "stream-json", "--output-format", "stream-json"]
    env = claude_env(claude.config)

    async def start(*argv: str) -> asyncio.subprocess.Process:
        # Each waits on its stdin (grep: on opening the FIFO) until the test ends it.
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=claude.cwd("p1"),
            env=env,
        )

    holder = await start(str(claude.binary), *stream, "--verbose", "--session-id", claude_id)
    bystanders = [
        await start("grep", "-r", claude_id, str(fifo)),
        await start(sys.executable, "-c", "import sys; sys.stdin.read()", "--resume", claude_id),
        await start(
            str(claude.binary),
            *stream,
            "--verbose",
            "--session-id",
            str(uuid.uuid4()),
            "--settings",
            json.dumps({"env": {"PREVIOUS_CONVERSATION": claude_id}}),
        ),
    ]
    forged = claude.config / "sessions" / f"{bystanders[1].pid}.json"
    forged.parent.mkdir(exist_ok=True)
    forged.write_text(json.dumps({"pid": bystanders[1].pid, "sessionId": claude_id}))
    try:
        alive = []
        for process in [holder, *bystanders]:
            identity = proctree.identify(process.pid)
            assert identity is not None
            alive.append((identity, cmdline(process.pid)))
        await claude.restart(signal.SIGKILL)
        assert await asyncio.wait_for(holder.wait(), 30) is not None
        pid = await claude.running_pid("p1")
        assert claude_id in (flag_value(pid, "--session-id"), flag_value(pid, "--resume"))
        for identity, argv in alive[1:]:
            assert proctree.is_alive(identity), f"{argv} was ended"
    finally:
        for process in [holder, *bystanders]:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_holders_are_ended_with_the_configured_grace(tmp_path: Path) -> None:
    """A Claude that ignores SIGHUP gets SIGTERM after ``kill_grace``, not after a fixed
    pause."""
    claude_id = str(uuid.uuid4())
    program = tmp_path / "claude"
    program.write_text(
        f"#!{sys.executable}\n"
        "import signal, sys\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    program.chmod(0o755)
    holder = await asyncio.create_subprocess_exec(
        str(program),
        "--resume",
        claude_id,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 10) == b"ready\n"
        request = SpawnRequest(
            output_project_id="p1",
            session_id="s1",
            base_argv=["claude"],
            cwd=tmp_path,
            claude_session_id=claude_id,
            env={"PATH": os.environ["PATH"]},
            kill_grace=0.1,
        )
        command = ClaudeCommand(config_dir=tmp_path / "config", hook=False)
        async with asyncio.timeout(1.5):
            await command.prepare(request, Events())
            assert await holder.wait() == -signal.SIGTERM
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


# -- the tracker on recorded output -----------------------------------------------------------


class Events:
    """What a tracker reports (``ProgramEvents``), recorded."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.states: list[tuple[ClaudeState, str | None]] = []

    def on_claude_id(self, claude_session_id: str, reason: str | None) -> None:
        self.ids.append(claude_session_id)

    def on_claude_state(self, state: ClaudeState, detail: str | None) -> None:
        self.states.append((state, detail))


def _tracker(tmp_path: Path, current: str) -> tuple[ClaudeTracker, list[str]]:
    events = Events()
    folder = project_dir(tmp_path, tmp_path)
    return ClaudeTracker(tmp_path, folder, current, events), events.ids


async def test_the_output_path_touches_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``feed`` runs on every PTY read, on the event loop: an id seen only in the output is
    checked against its transcript in a thread, and still believed once it is."""
    real = tmp_path / "real"
    real.mkdir()
    cwd = tmp_path / "link"  # resolving a symbolic link is a filesystem call too
    cwd.symlink_to(real)
    config = tmp_path / "config"
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    transcript = transcript_path(config, real, second)
    transcript.parent.mkdir(parents=True)
    transcript.write_text("{}\n")
    events = Events()
    seen = events.ids
    request = SpawnRequest(
        output_project_id="p1",
        session_id="s1",
        base_argv=["claude"],
        cwd=cwd,
        claude_session_id=first,
        env={"PATH": os.environ["PATH"]},
        kill_grace=0.5,
    )
    plan = await ClaudeCommand(config_dir=config, hook=False).prepare(request, events)
    tracker = plan.tracker
    assert isinstance(tracker, ClaudeTracker)
    output = json.dumps({"type": "system", "subtype": "init", "session_id": second}).encode()

    calls: list[str] = []
    loop_thread = threading.get_ident()

    def spy(name: str, call: Callable[..., object]) -> Callable[..., object]:
        def spied(*args: object, **kwargs: object) -> object:
            if threading.get_ident() == loop_thread:
                calls.append(f"{name}{args}")
            return call(*args, **kwargs)

        return spied

    with monkeypatch.context() as patch:
        for name in ("stat", "lstat", "readlink", "access", "listdir", "scandir", "open"):
            patch.setattr(os, name, spy(f"os.{name}", getattr(os, name)))
        patch.setattr(builtins, "open", spy("open", builtins.open))
        tracker.feed(b"\x1b[2m" + output + b"\r\n")
    assert calls == []
    await tracker.aclose()
    assert seen == [second] and tracker.current == second


@pytest.mark.parametrize("chunk", [1, 7, 4096])
async def test_stream_json_ids_from_recorded_output(tmp_path: Path, chunk: int) -> None:
    """Recorded with the real CLI (fixtures/claude/README.md): ids in init and result lines,
    split anywhere, with CRLF and colours; a changed id needs its transcript."""
    data = (FIXTURES / "stream_json_input_clear.jsonl").read_bytes()
    lines = [json.loads(line) for line in data.splitlines()]
    ids = [
        line["session_id"]
        for line in lines
        if line.get("type") in ("system", "result") and line.get("subtype") in ("init", "success")
    ]
    first, second = ids[0], ids[-1]
    assert first != second
    terminal = b"\x1b[2m" + data.replace(b"\n", b"\r\n") + b"\x1b[0m"
    for transcript_written in (False, True):
        if transcript_written:
            folder = project_dir(tmp_path, tmp_path)
            folder.mkdir(parents=True)
            (folder / f"{second}.jsonl").write_text("{}\n")
        tracker, seen = _tracker(tmp_path, first)
        for i in range(0, len(terminal), chunk):
            tracker.feed(terminal[i : i + chunk])
        await tracker.aclose()
        # Without a transcript for the new id, it is not believed.
        assert seen == ([second] if transcript_written else [])


async def test_hook_lines_before_init_and_the_exit_hint(tmp_path: Path) -> None:
    data = (FIXTURES / "stream_json_hook.jsonl").read_bytes()
    first = json.loads(data.splitlines()[0])["session_id"]
    other = str(uuid.uuid4())
    hinted = str(uuid.uuid4())
    tracker, seen = _tracker(tmp_path, other)
    folder = project_dir(tmp_path, tmp_path)
    folder.mkdir(parents=True)
    for claude_id in (first, hinted):
        (folder / f"{claude_id}.jsonl").write_text("{}\n")
    tracker.feed(data)
    tracker.feed(
        f"Resume this session with:\r\n\x1b[1mclaude --resume {hinted}\x1b[0m\r\n".encode()
    )
    await tracker.aclose()
    assert seen == [first, hinted]


def test_project_folder_matches_claudes_rule() -> None:
    assert project_folder("/srv/p/x_1") == "-srv-p-x-1"
    long = "/tmp/" + "a" * 300
    assert project_folder(long).startswith("-tmp-" + "a" * 195 + "-")


def test_session_flags_are_refused_in_args() -> None:
    with pytest.raises(ValueError, match="session flags"):
        ClaudeCommand(args=["--resume", "x"])
    with pytest.raises(TypeError):
        ClaudeCommand(args="--model sonnet")
