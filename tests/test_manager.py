"""PTYSessionManager with real programs and a real database: races, reaping, cycles."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from wxcode_pty import PTYSessionManager, ShellCommand, proctree
from wxcode_pty.commands import ClaudeState, ProgramEvents, Retry, SpawnPlan, SpawnRequest
from wxcode_pty.manager import InvalidProjectId, SessionLimitReached, ShuttingDown
from wxcode_pty.pty import ExitStatus
from wxcode_pty.session import PTYSession
from wxcode_pty.store import SessionRecord, SessionStatus

from .conftest import children_of, open_fds, threads_outside_pools

Factory = Callable[..., Awaitable[PTYSessionManager]]


class Probe:
    """A SessionClient that records what a session sends it."""

    congested = False
    cols = 80
    rows = 24
    may_resize = True

    def __init__(self) -> None:
        self.output = bytearray()
        self.exits: list[ExitStatus] = []
        self.ids: list[tuple[str, str | None, str | None]] = []
        self.states: list[tuple[ClaudeState, str | None]] = []
        self.sizes: list[tuple[int, int]] = []
        self.changed = asyncio.Event()

    def send_output(self, data: bytes) -> None:
        self.output += data
        self.changed.set()

    def send_claude_session(
        self, claude_session_id: str, previous: str | None, reason: str | None
    ) -> None:
        self.ids.append((claude_session_id, previous, reason))

    def send_claude_state(self, state: ClaudeState, detail: str | None, since: float) -> None:
        self.states.append((state, detail))

    def send_size(self, cols: int, rows: int) -> None:
        self.sizes.append((cols, rows))

    def send_exit(self, status: ExitStatus) -> None:
        self.exits.append(status)
        self.changed.set()

    def send_moved(self) -> None:
        self.moved = True

    @classmethod
    def attach(cls, session: PTYSession) -> Probe:
        """Attach as the web layer does: replay first, then live output, nothing between."""
        probe = cls()
        probe.output += session.buffer.since(None).data
        session.attach(probe)
        return probe

    async def wait_for(self, needle: bytes, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while needle not in self.output:
                self.changed.clear()
                await self.changed.wait()


async def test_concurrent_get_or_create_spawns_once(manager_factory: Factory) -> None:
    manager = await manager_factory()
    sessions = await asyncio.gather(*(manager.get_or_create_session("p1") for _ in range(50)))
    assert len({id(s) for s in sessions}) == 1
    live = [p for p in await asyncio.to_thread(proctree.find_tree, None, sessions[0].session_id)]
    assert len(live) == 1
    row = await manager.store.get("p1")
    assert row is not None and row.spawn_count == 1 and row.pid == sessions[0].pty.pid


async def test_invalid_ids_are_refused_before_anything(
    manager_factory: Factory, tmp_path: Path
) -> None:
    """S5 at the manager level: nothing spawned, no directory created."""
    manager = await manager_factory()
    for bad in [
        "../x",
        "/tmp/x",
        "a/b",
        "%2e%2e",
        "-rf",
        "",
        "x" * 300,
        "a\0b",
        "é",
        ".hidden",
        " x",
    ]:
        with pytest.raises(InvalidProjectId):
            await manager.get_or_create_session(bad)
    assert manager.sessions == []
    assert not (tmp_path / "projects").exists()


async def test_session_limit(manager_factory: Factory) -> None:
    manager = await manager_factory(max_sessions=2)
    await manager.get_or_create_session("a")
    await manager.get_or_create_session("b")
    with pytest.raises(SessionLimitReached):
        await manager.get_or_create_session("c")
    assert {s.output_project_id for s in manager.sessions} == {"a", "b"}


async def test_exit_is_recorded_and_next_attach_starts_again(
    manager_factory: Factory, tmp_path: Path
) -> None:
    manager = await manager_factory(command=ShellCommand(["sh", "-c", "echo run; read x; exit 3"]))
    session = await manager.get_or_create_session("p1")
    probe = Probe.attach(session)
    await probe.wait_for(b"run")
    session.pty.write(b"go\n")
    await asyncio.wait_for(session.wait(), 10)
    assert probe.exits == [ExitStatus(3, None)]
    info = await manager.describe("p1")
    assert info is not None and (info["status"], info["exit_code"], info["pid"]) == (
        "exited",
        3,
        None,
    )
    again = await manager.get_or_create_session("p1")
    assert again is not session and again.pty.running
    assert again.cwd == (tmp_path / "projects" / "p1").resolve()


async def test_idle_reaper_ends_only_idle_sessions(manager_factory: Factory) -> None:
    """R10: idle without clients is reaped (whole tree); a silent one with a client and a busy
    one without clients stay; the reaped row keeps its Claude id and the next attach resumes."""
    manager = await manager_factory(
        idle_timeout=1.0,
        reap_interval=3600,
        command=ShellCommand(
            [
                "sh",
                "-c",
                'sleep 1000 & echo $! > child; if [ "$(basename $PWD)" = busy ]; then while :; do echo tick; sleep 0.2; done; else exec cat; fi',
            ]
        ),
    )
    idle = await manager.get_or_create_session("idle")
    silent = await manager.get_or_create_session("silent")
    busy = await manager.get_or_create_session("busy")
    Probe.attach(silent)
    await manager.update_claude_session_id("idle", "11111111-1111-4111-8111-111111111111")
    idle_tree = await asyncio.to_thread(proctree.find_tree, idle.pty.identity, idle.session_id)
    assert len(idle_tree) >= 2  # sh and its background sleep
    # Wait out the idle timeout (a deadline, not a guess), then reap.
    await asyncio.sleep(1.3)
    assert await manager.cleanup_idle_sessions() == ["idle"]
    assert all(not proctree.is_alive(p) for p in idle_tree)
    assert silent.pty.running and busy.pty.running
    row = await manager.store.get("idle")
    assert row is not None and row.status == "idle"
    assert row.claude_session_id == "11111111-1111-4111-8111-111111111111"
    resumed = await manager.get_or_create_session("idle")
    assert resumed.resumed and resumed.claude_session_id == row.claude_session_id


async def test_close_session_and_forget(manager_factory: Factory) -> None:
    manager = await manager_factory()
    session = await manager.get_or_create_session("p1")
    await manager.update_claude_session_id("p1", "22222222-2222-4222-8222-222222222222")
    assert await manager.close_session("p1")
    assert not session.pty.running
    row = await manager.store.get("p1")
    assert row is not None and row.status == "stopped" and row.claude_session_id is not None
    assert await manager.close_session("p1", forget=True)
    row = await manager.store.get("p1")
    assert row is not None and row.claude_session_id is None
    assert not await manager.close_session("never-seen")


async def test_respawn_that_dies_at_start_is_backed_off_then_failed(
    manager_factory: Factory,
) -> None:
    """R9 for any command: a recovered session whose program keeps dying is not restarted forever."""
    manager = await manager_factory(
        command=ShellCommand(["sh", "-c", "echo died; exit 7"]),
        respawn_attempts=3,
        retry_backoff=0.05,
        early_exit=5.0,
    )
    # A row left running by a previous server.
    first = await manager.get_or_create_session("p1")
    await asyncio.wait_for(first.wait(), 10)
    await manager.store.update("p1", status="running")
    start = time.monotonic()
    session = await manager.get_or_create_session("p1")
    assert session.resumed
    await asyncio.wait_for(session.wait(), 20)
    row = await manager.store.get("p1")
    assert row is not None and row.status == "failed"
    assert row.status_reason is not None and "3 times" in row.status_reason
    assert row.spawn_count == 1 + 3
    # Backoff: 0.05 + 0.1 seconds at least between the three attempts.
    assert time.monotonic() - start >= 0.15
    assert session.buffer.since(0).data.count(b"died") == 3


async def test_cycles_return_to_baseline(manager_factory: Factory) -> None:
    """R12 at the manager level: create/attach/detach/close cycles leak nothing."""
    manager = await manager_factory(kill_grace=0.5)
    # Warm up (aiosqlite thread, first imports) before taking the baseline.
    await manager.get_or_create_session("warm")
    await manager.close_session("warm")
    gc.collect()
    fds, threads, tasks = open_fds(), threads_outside_pools(), len(asyncio.all_tasks())
    children = children_of(os.getpid())
    for i in range(500):
        session = await manager.get_or_create_session(f"p{i % 7}")
        probe = Probe.attach(session)
        session.pty.write(b"x")
        session.detach(probe)
        await manager.close_session(f"p{i % 7}")
        assert len(session.buffer) <= session.buffer.capacity
    gc.collect()
    assert manager.sessions == []
    assert open_fds() == fds
    assert threads_outside_pools() == threads
    assert len(asyncio.all_tasks()) == tasks
    assert children_of(os.getpid()) == children


async def test_shutdown_keeps_rows_running_for_recovery(manager_factory: Factory) -> None:
    manager = await manager_factory()
    session = await manager.get_or_create_session("p1")
    pid = session.pty.pid
    await manager.close_all()
    assert not session.pty.running
    row = await manager.store.get("p1")
    assert row is not None and row.status == "running" and row.pid == pid
    with pytest.raises(ShuttingDown):
        await manager.get_or_create_session("p2")


async def test_recovery_respawns_in_the_stored_cwd_and_argv(
    manager_factory: Factory, tmp_path: Path
) -> None:
    first = await manager_factory(command=ShellCommand(["sh", "-c", "pwd; exec cat"]))
    session = await first.get_or_create_session("p1")
    await first.close_all()
    await first.store.close()
    # A different command in the settings: recovery uses what the row stored.
    second = await manager_factory(command=ShellCommand(["sh", "-c", "echo other"]))
    recovered = second.get_session_by_output_project("p1")
    assert recovered is not None and recovered.resumed
    assert os.readlink(f"/proc/{recovered.pty.pid}/cwd") == str(session.cwd)
    await Probe.attach(recovered).wait_for(str(session.cwd).encode())


def test_settings_are_validated() -> None:
    from wxcode_pty import Settings

    with pytest.raises(ValueError, match="idle_timeout"):
        Settings(idle_timeout=0)
    with pytest.raises(TypeError):
        ShellCommand("bash -l")


class GatedProfile:
    """A shell command whose spawn preparation can be held at a gate, and that may fail."""

    kind = "shell"

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()
        self.fail_after_exit = False
        #: Commands for the next spawns, in order (then the base argv).
        self.then: list[list[str]] = []

    def base_argv(self) -> list[str]:
        return list(self.argv)

    async def prepare(self, request: SpawnRequest, events: ProgramEvents) -> SpawnPlan:
        self.waiting.set()
        await self.gate.wait()
        return SpawnPlan(argv=self.then.pop(0) if self.then else list(request.base_argv))

    def after_exit(
        self, claude_session_id: str | None, status: ExitStatus, early: bool, tail: bytes
    ) -> Retry | None:
        if self.fail_after_exit:
            raise RuntimeError("profile bug")
        return None


async def test_closing_during_a_retry_ends_the_new_program(manager_factory: Factory) -> None:
    """The retry's spawn is being prepared when the session is closed: nothing survives."""
    profile = GatedProfile(["sh", "-c", "echo up; exit 7"])
    manager = await manager_factory(command=profile, retry_backoff=0.01, early_exit=30)
    first = await manager.get_or_create_session("p1")
    await asyncio.wait_for(first.wait(), 10)
    await manager.store.update("p1", status="running")  # as a crashed server leaves it
    profile.gate.clear()
    profile.waiting.clear()
    profile.then = [["sh", "-c", "exit 7"], ["sleep", "1000"]]  # dies, then the retry lives
    starting = asyncio.create_task(manager.get_or_create_session("p1"))
    await asyncio.wait_for(profile.waiting.wait(), 10)  # the first attempt, held
    profile.waiting.clear()
    profile.gate.set()  # let that one through; it dies at once and is retried
    profile.gate.clear()
    session = await asyncio.wait_for(starting, 10)
    assert session.resumed
    await asyncio.wait_for(profile.waiting.wait(), 10)  # the retry, held in its preparation
    closing = asyncio.create_task(manager.close_session("p1"))
    async with asyncio.timeout(10):  # the close has begun before the retry goes on
        while session.closing is None:
            await asyncio.sleep(0)
    profile.gate.set()
    assert await asyncio.wait_for(closing, 15)
    assert not session.pty.running
    assert await asyncio.to_thread(proctree.find_tree, None, session.session_id) == set()
    row = await manager.store.get("p1")
    assert row is not None and row.status == "stopped"


async def test_a_failing_profile_does_not_wedge_the_project(manager_factory: Factory) -> None:
    profile = GatedProfile(["sh", "-c", "exit 3"])
    manager = await manager_factory(command=profile)
    profile.fail_after_exit = True
    session = await manager.get_or_create_session("p1")
    await asyncio.wait_for(session.wait(), 10)
    row = await manager.store.get("p1")
    assert row is not None and row.status == "failed" and "profile bug" in (row.status_reason or "")
    profile.fail_after_exit = False
    again = await asyncio.wait_for(manager.get_or_create_session("p1"), 10)
    assert again is not session


async def test_close_while_starting_leaves_nothing_running(manager_factory: Factory) -> None:
    profile = GatedProfile(["sleep", "1000"])
    manager = await manager_factory(command=profile)
    profile.gate.clear()
    starting = asyncio.create_task(manager.get_or_create_session("p1"))
    await asyncio.wait_for(profile.waiting.wait(), 10)
    closing = asyncio.create_task(manager.close_session("p1"))
    await asyncio.sleep(0)
    profile.gate.set()
    session = await starting
    assert await asyncio.wait_for(closing, 15)
    assert not session.pty.running
    row = await manager.store.get("p1")
    assert row is not None and row.status == "stopped"


async def test_shutdown_of_many_sessions_is_one_pass(manager_factory: Factory) -> None:
    """Many trees end together (one /proc pass per signal for all of them)."""
    manager = await manager_factory(
        command=ShellCommand(["sh", "-c", "sleep 1000 & exec sleep 1001"])
    )
    sessions = [await manager.get_or_create_session(f"p{i}") for i in range(40)]
    markers = [s.session_id for s in sessions]
    assert all((await asyncio.to_thread(proctree.find_marked, markers)).values())
    await asyncio.wait_for(manager.close_all(), 30)
    left = await asyncio.to_thread(proctree.find_marked, markers)
    assert not any(left.values())


class ClosingTracker:
    """A tracker that records being closed."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    def started(self, pid: int) -> None:
        pass

    def feed(self, data: bytes) -> None:
        pass

    async def aclose(self) -> None:
        self.closed.set()


class CancelledAtSpawnProfile:
    """Its plan carries a tracker, and the start is cancelled while the program starts."""

    kind = "shell"

    def __init__(self) -> None:
        self.tracker = ClosingTracker()

    def base_argv(self) -> list[str]:
        return ["sleep", "1000"]

    async def prepare(self, request: SpawnRequest, events: ProgramEvents) -> SpawnPlan:
        starting = asyncio.current_task()
        assert starting is not None
        # Runs on the next pass of the loop: while the spawn's thread forks and execs.
        asyncio.get_running_loop().call_soon(starting.cancel)
        return SpawnPlan(argv=list(request.base_argv), tracker=self.tracker)

    def after_exit(
        self, claude_session_id: str | None, status: ExitStatus, early: bool, tail: bytes
    ) -> Retry | None:
        return None


async def test_a_start_cancelled_during_the_spawn_closes_its_tracker(
    manager_factory: Factory,
) -> None:
    profile = CancelledAtSpawnProfile()
    manager = await manager_factory(command=profile)
    with pytest.raises(asyncio.CancelledError):
        await manager.get_or_create_session("p1")
    await asyncio.wait_for(profile.tracker.closed.wait(), 10)
    row = await manager.store.get("p1")
    assert row is not None
    async with asyncio.timeout(10):
        while (await asyncio.to_thread(proctree.find_marked, [row.session_id]))[row.session_id]:
            await asyncio.sleep(0.02)


async def test_a_row_left_running_by_a_previous_server_shows_no_pid(
    manager_factory: Factory,
) -> None:
    # Without respawn on start, a row marked running names the pid of a program of a previous
    # server's run: no program of this server has it, whatever the advertised address says.
    manager = await manager_factory(respawn_on_start=False, advertise_url="http://127.0.0.1:8765")
    now = time.time()
    await manager.store.put(
        SessionRecord(
            output_project_id="left",
            session_id="0" * 32,
            kind="shell",
            argv=("cat",),
            cwd="/",
            status=SessionStatus.RUNNING,
            created_at=now,
            updated_at=now,
            last_activity=now,
            pid=os.getpid(),
        )
    )
    info = await manager.describe("left")
    assert info is not None and (info["status"], info["pid"]) == ("running", None), info
    listed = {i["output_project_id"]: i for i in await manager.list_sessions()}
    assert listed["left"]["pid"] is None, listed["left"]
