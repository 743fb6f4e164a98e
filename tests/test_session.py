"""The life of one session as the manager and the store see it: what a row respawns as, the
order of a run's writes, and idle time measured on a clock that the wall clock cannot move."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from wxcode_pty import ClaudeCommand, PTYSessionManager, SessionStore, Settings, ShellCommand
from wxcode_pty.claude import project_folder
from wxcode_pty.store import SessionRecord, SessionStatus

from .claude_cli import FAKE_CLAUDE
from .conftest import program_runs

Factory = Callable[..., Awaitable[PTYSessionManager]]


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


async def _argv_holding(pid: int, *words: str, timeout: float = 10) -> list[str]:
    """The program's argv once it holds ``words`` (it passes through setsid and exec first,
    and its cmdline is empty for a moment)."""
    argv: list[str] = []
    async with asyncio.timeout(timeout):
        while not all(word in argv for word in words):
            await asyncio.sleep(0.005)
            argv = _cmdline(pid)
    return argv


async def _shut_down(manager: PTYSessionManager) -> None:
    """As a server stops: trees ended, running rows kept for the next start."""
    await manager.close_all()
    await manager.store.close()


async def test_a_shell_row_respawns_as_a_shell_when_claude_is_configured_now(
    manager_factory: Factory, tmp_path: Path
) -> None:
    """SPEC 5.8: what runs again is what the row says, whatever is configured today."""
    first = await manager_factory(command=ShellCommand(["sleep", "1000"]))
    await first.get_or_create_session("p1")
    await _shut_down(first)
    config = tmp_path / "claude-config"
    again = await manager_factory(
        command=ClaudeCommand(executable=str(FAKE_CLAUDE), config_dir=config)
    )
    session = again.get_session_by_output_project("p1")
    assert session is not None and session.pid is not None
    await program_runs(session.pid, ["sleep", "1000"])
    row = await again.store.get("p1")
    assert row is not None and row.kind == "shell" and row.status == SessionStatus.RUNNING
    # A new project gets what is configured now.
    fresh = await again.get_or_create_session("p2")
    assert fresh.pid is not None
    await _argv_holding(fresh.pid, "--session-id")


async def test_a_claude_row_respawns_with_resume_when_a_shell_is_configured_now(
    manager_factory: Factory, tmp_path: Path
) -> None:
    config = tmp_path / "claude-config"
    first = await manager_factory(
        command=ClaudeCommand(executable=str(FAKE_CLAUDE), config_dir=config)
    )
    claude_id = (await first.get_or_create_session("p1")).claude_session_id
    assert claude_id is not None
    await _shut_down(first)
    again = await manager_factory(command=ShellCommand(["sleep", "1000"]))
    session = again.get_session_by_output_project("p1")
    assert session is not None and session.pid is not None
    argv = await _argv_holding(session.pid, str(FAKE_CLAUDE), claude_id)
    assert "--session-id" in argv or "--resume" in argv


async def test_idle_time_is_not_moved_by_the_wall_clock(
    manager_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step of the wall clock (NTP, a suspended VM) must not reap every session at once."""
    manager = await manager_factory(idle_timeout=60, reap_interval=3600)
    session = await manager.get_or_create_session("p1")
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 86400)
    assert await manager.cleanup_idle_sessions() == []
    assert session.running


async def test_a_runs_writes_are_stored_in_order_and_flushed(tmp_path: Path) -> None:
    store = await SessionStore.open(tmp_path / "db.sqlite")
    try:
        now = time.time()
        await store.put(
            SessionRecord(
                output_project_id="p1",
                session_id="s1",
                kind="shell",
                argv=("cat",),
                cwd=str(tmp_path),
                status=SessionStatus.RUNNING,
                created_at=now,
                updated_at=now,
                last_activity=now,
            )
        )
        writer = store.row_writer("p1")
        # Queued without waiting, then written and awaited: the later one wins, whatever
        # order the tasks would otherwise reach the database in.
        for n in range(50):
            writer.record(claude_session_id=f"id-{n}")
        await writer.write(status_reason="last")
        row = await store.get("p1")
        assert row is not None and row.claude_session_id == "id-49"
        writer.record(claude_session_id="after")
        await writer.flush()
        row = await store.get("p1")
        assert row is not None and row.claude_session_id == "after"
        # A failed write is logged, does not stop the ones after it, and flush still returns.
        writer.record(no_such_column=1)
        writer.record(claude_session_id="still")
        await asyncio.wait_for(writer.flush(), 10)
        row = await store.get("p1")
        assert row is not None and row.claude_session_id == "still"
    finally:
        await store.close()


async def test_forget_holds_against_an_id_learned_just_before_the_delete(
    manager_factory: Factory, tmp_path: Path
) -> None:
    """R15: the Claude id changes (from the program's output) right before DELETE ?forget=1;
    the forget wins, and the next start begins a new conversation."""
    config = tmp_path / "claude-config"
    manager = await manager_factory(
        command=ClaudeCommand(executable=str(FAKE_CLAUDE), config_dir=config, hook=False)
    )
    session = await manager.get_or_create_session("p1")
    first_id = session.claude_session_id
    changed = "33333333-3333-4333-8333-333333333333"
    # The stand-in echoes typed lines: a stream-json init line in the output is a change of id
    # (believed once its transcript exists).
    transcript = config / "projects"
    (transcript / project_folder(session.cwd)).mkdir(parents=True, exist_ok=True)
    (transcript / project_folder(session.cwd) / f"{changed}.jsonl").write_text("{}\n")
    session.pty.write(f'{{"type":"system","subtype":"init","session_id":"{changed}"}}\r'.encode())
    async with asyncio.timeout(10):
        while session.claude_session_id != changed:
            await asyncio.sleep(0.005)
    assert await manager.close_session("p1", forget=True)
    row = await manager.store.get("p1")
    assert row is not None and row.claude_session_id is None and row.status == "stopped"
    again = await manager.get_or_create_session("p1")
    assert again.claude_session_id not in (None, first_id, changed)


async def test_shutdown_stores_every_write_of_a_run_before_it_returns(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """R15: an id learned from the output just before shutdown is on disk when it returns."""
    config = tmp_path / "claude-config"
    settings = make_settings(
        command=ClaudeCommand(executable=str(FAKE_CLAUDE), config_dir=config, hook=False)
    )
    store = await SessionStore.open(settings.database)
    manager = PTYSessionManager(settings, store)
    await manager.start()
    session = await manager.get_or_create_session("p1")
    changed = "44444444-4444-4444-8444-444444444444"
    folder = config / "projects" / project_folder(session.cwd)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{changed}.jsonl").write_text("{}\n")
    session.pty.write(f'{{"type":"result","session_id":"{changed}"}}\r'.encode())
    async with asyncio.timeout(10):
        while session.claude_session_id != changed:
            await asyncio.sleep(0)
    await manager.close_all()
    await store.close()
    store = await SessionStore.open(settings.database)
    try:
        row = await store.get("p1")
        assert row is not None and row.claude_session_id == changed
    finally:
        await store.close()


class SizedProbe:
    """An attached client with a terminal size, recording the sizes it is told."""

    congested = False
    may_resize = True

    def __init__(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        self.sizes: list[tuple[int, int]] = []

    def send_output(self, data: bytes) -> None:
        pass

    def send_claude_session(
        self, claude_session_id: str, previous: str | None, reason: str | None
    ) -> None:
        pass

    def send_claude_state(self, state: object, detail: str | None, since: float) -> None:
        pass

    def send_size(self, cols: int, rows: int) -> None:
        self.sizes.append((cols, rows))

    def send_exit(self, status: object) -> None:
        pass

    def send_moved(self) -> None:
        self.moved = True


async def test_when_the_active_client_leaves_the_one_before_takes_over(
    manager_factory: Factory,
) -> None:
    """tmux's latest: the size is the most recently active client's, and when that client
    leaves, the one active before it is active again, with its size."""
    manager = await manager_factory()
    session = await manager.get_or_create_session("p1")
    small, big = SizedProbe(70, 20), SizedProbe(150, 50)
    session.attach(small)
    session.attach(big)
    assert session.active_client is big and (session.cols, session.rows) == (150, 50)
    session.detach(big)
    assert session.active_client is small and (session.cols, session.rows) == (70, 20)
    assert small.sizes[-1] == (70, 20)


async def test_a_client_that_left_no_longer_acts_on_the_session(
    manager_factory: Factory, tmp_path: Path
) -> None:
    """A client closed while its socket drains (4001, a policy close) may still have frames in
    flight: they neither reach the program nor make it the active client."""
    record = tmp_path / "typed"
    manager = await manager_factory(command=ShellCommand(["sh", "-c", f"cat > {record}"]))
    session = await manager.get_or_create_session("p1")
    stays, leaves = SizedProbe(80, 24), SizedProbe(100, 30)
    session.attach(leaves)
    session.attach(stays)
    session.detach(leaves)
    leaves.cols, leaves.rows = 120, 40
    session.input(leaves, b"from a closed client\n")
    session.resize(leaves)
    session.input(stays, b"END\n")
    async with asyncio.timeout(10):
        while b"END" not in (record.read_bytes() if record.exists() else b""):
            await asyncio.sleep(0.02)
    assert record.read_bytes() == b"END\n"
    assert session.active_client is stays and (session.cols, session.rows) == (80, 24)


async def test_a_close_does_not_wait_out_the_respawn_backoff(manager_factory: Factory) -> None:
    manager = await manager_factory(
        command=ShellCommand(["sh", "-c", "exit 7"]), retry_backoff=60.0, early_exit=30
    )
    first = await manager.get_or_create_session("p1")
    await asyncio.wait_for(first.wait(), 10)
    await manager.store.update("p1", status="running")  # as a crashed server leaves it
    session = await manager.get_or_create_session("p1")  # dies at once, then backs off 60 s
    async with asyncio.timeout(10):
        while session.pid is not None:
            await asyncio.sleep(0.01)
    async with asyncio.timeout(10):
        assert await manager.close_session("p1")
    row = await manager.store.get("p1")
    assert row is not None and row.status == "stopped"
