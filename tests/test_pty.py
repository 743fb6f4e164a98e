"""BidirectionalPTY on real PTYs: every byte, exit statuses, whole trees, bounded input."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import os
import random
import select
import selectors
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from wxcode_pty import proctree
from wxcode_pty import pty as pty_module
from wxcode_pty.pty import BidirectionalPTY, ExitStatus, InputOverflow, SpawnError
from wxcode_pty.settings import build_child_env

from .conftest import environ_of, open_fds, program_runs, py, status_of
from .test_proctree import count_proc_scans


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.changed = asyncio.Event()

    def __call__(self, chunk: bytes) -> None:
        self.data += chunk
        self.changed.set()

    async def wait_for(self, needle: bytes, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while needle not in self.data:
                self.changed.clear()
                await self.changed.wait()


async def spawn(
    argv: list[str],
    sink: Sink,
    cwd: Path,
    cols: int = 80,
    rows: int = 24,
    input_limit: int = 1 << 20,
) -> BidirectionalPTY:
    env = build_child_env(("PATH", "HOME", "LANG"), {}, "xterm-256color")
    return await BidirectionalPTY.spawn(
        argv,
        cwd=cwd,
        env=env,
        on_output=sink,
        marker="test-" + os.urandom(4).hex(),
        cols=cols,
        rows=rows,
        input_limit=input_limit,
    )


async def test_every_byte_then_the_exit_code(tmp_path: Path, no_stray_children: None) -> None:
    """R5: 10 KiB and exit 3 -- all of it delivered, then the status; no zombie, no fd leak."""
    baseline = open_fds()
    sink = Sink()
    pty = await spawn(
        py("import sys; sys.stdout.write('x' * 10240); sys.stdout.flush(); sys.exit(3)"),
        sink,
        tmp_path,
    )
    status = await asyncio.wait_for(pty.wait(), 10)
    assert status == ExitStatus(3, None)
    assert bytes(sink.data) == b"x" * 10240
    await pty.terminate()
    with pytest.raises(ChildProcessError):
        os.waitpid(pty.pid, os.WNOHANG)
    assert open_fds() == baseline


async def test_large_output_is_complete_when_the_program_exits(tmp_path: Path) -> None:
    """The tail of the output survives the exit (no EIO before the last byte)."""
    payload = tmp_path / "payload"
    payload.write_bytes(bytes(range(32, 127)) * 30000)  # 2.85 MB, no newlines to translate
    sink = Sink()
    pty = await spawn(["cat", str(payload)], sink, tmp_path)
    assert await asyncio.wait_for(pty.wait(), 30) == ExitStatus(0, None)
    assert bytes(sink.data) == payload.read_bytes()


@pytest.mark.parametrize("raw", [False, True], ids=["output-processed", "stty-raw"])
async def test_a_stream_of_lines_is_complete_and_in_order(tmp_path: Path, raw: bool) -> None:
    """Lines as programs write them: with output processing (reads joined per wakeup) each
    newline arrives as CR LF, with ``stty raw`` (reads handed on one by one) unchanged."""
    payload = tmp_path / "lines"
    payload.write_bytes(b"".join(b"%08d %s\n" % (i, b"y" * (i % 90)) for i in range(40000)))
    sink = Sink()
    setup = "stty raw -echo; " if raw else ""
    pty = await spawn(["sh", "-c", f"{setup}exec cat {payload}"], sink, tmp_path)
    assert await asyncio.wait_for(pty.wait(), 30) == ExitStatus(0, None)
    expected = payload.read_bytes()
    assert bytes(sink.data) == (expected if raw else expected.replace(b"\n", b"\r\n"))


async def test_killed_by_a_signal(tmp_path: Path) -> None:
    sink = Sink()
    pty = await spawn(
        py("import os, signal; print('ready', flush=True); os.kill(os.getpid(), signal.SIGKILL)"),
        sink,
        tmp_path,
    )
    status = await asyncio.wait_for(pty.wait(), 10)
    assert status == ExitStatus(None, "SIGKILL")
    assert b"ready" in sink.data


async def test_terminate_ends_the_whole_tree(tmp_path: Path) -> None:
    """R6: background, setsid and nohup descendants, and a program ignoring SIGTERM."""
    pids_file = tmp_path / "pids"
    script = (
        "trap '' TERM; "
        "sleep 1000 & echo $! >> pids; "
        "setsid sleep 1000 & echo $! >> pids; "
        "nohup sleep 1000 >/dev/null 2>&1 & echo $! >> pids; "
        "setsid sh -c 'trap \"\" HUP TERM; sleep 1000' & echo $! >> pids; "
        "echo started; while :; do sleep 1; done"
    )
    sink = Sink()
    pty = await spawn(["sh", "-c", script], sink, tmp_path)
    await sink.wait_for(b"started")
    pids = [int(line) for line in pids_file.read_text().split()]
    tree = await asyncio.to_thread(proctree.find_tree, pty.identity, pty.marker)
    assert {p.pid for p in tree} >= set(pids)
    await asyncio.wait_for(pty.terminate(grace=0.5), 20)
    for process in tree:
        assert not proctree.is_alive(process), process


async def test_exit_of_the_program_ends_leftover_descendants(tmp_path: Path) -> None:
    sink = Sink()
    # The leftover runs in a session of its own but still holds the terminal; the program
    # exits once it runs. Its end, not a terminate() of ours, must end the leftover.
    script = (
        "setsid sh -c 'echo $$ > pid; exec sleep 1000' & "
        "while [ ! -s pid ]; do sleep 0.01; done; echo bye"
    )
    pty = await spawn(["sh", "-c", script], sink, tmp_path)
    await asyncio.wait_for(pty.wait(), 20)
    leftover = proctree.identify(int((tmp_path / "pid").read_text()))
    assert leftover is None or "sleep" not in Path(f"/proc/{leftover.pid}/cmdline").read_text()


async def test_input_to_a_program_that_never_reads_is_bounded(
    tmp_path: Path, loop_watchdog: list[float]
) -> None:
    """A 1 MiB paste must not stall the loop; past the bound, input is refused."""
    sink = Sink()
    pty = await spawn(
        py("import time; print('up', flush=True); time.sleep(1000)"),
        sink,
        tmp_path,
        input_limit=1 << 20,
    )
    await sink.wait_for(b"up")
    chunk = b"y" * 65536
    accepted = 0
    with pytest.raises(InputOverflow):
        for _ in range(64):
            pty.write(chunk)
            accepted += len(chunk)
            await asyncio.sleep(0)
    assert 1 << 20 >= pty.pending_input >= (1 << 20) - len(chunk)
    assert accepted <= (1 << 20) + 65536
    await asyncio.sleep(0.2)
    assert loop_watchdog[0] < 0.2
    await pty.terminate(grace=0.5)


async def test_input_reaches_the_program_in_order(tmp_path: Path) -> None:
    """300 KB through a PTY in raw mode (so no byte is special) arrive whole and in order."""
    sink = Sink()
    pty = await spawn(
        ["sh", "-c", "stty raw -echo; echo ready; head -c 300000 | md5sum; echo done"],
        sink,
        tmp_path,
    )
    await sink.wait_for(b"ready")
    data = random.Random(3).randbytes(300000)
    pty.write(data)
    await sink.wait_for(b"done", timeout=30)
    assert hashlib.md5(data).hexdigest().encode() in sink.data
    await pty.terminate(grace=0.5)


async def test_child_environment_and_signals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S7: only allowed variables; nested-Claude variables removed; SIGPIPE not ignored."""
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("CLAUDECODE", "1")
    monkeypatch.setenv("CLAUDE_CODE_ENTRYPOINT", "cli")
    env = build_child_env(("PATH", "HOME", "CLAUDE*"), {"EXTRA": "yes"}, "xterm-256color")
    assert (
        "SECRET_TOKEN" not in env
        and "CLAUDECODE" not in env
        and "CLAUDE_CODE_ENTRYPOINT" not in env
    )
    sink = Sink()
    # Not Python (it ignores SIGPIPE itself) nor a shell (it adds PWD).
    pty = await BidirectionalPTY.spawn(
        ["sleep", "1000"], cwd=tmp_path, env=env, on_output=sink, marker="m1"
    )
    await program_runs(pty.pid, ["sleep", "1000"])
    child_env = environ_of(pty.pid)
    assert set(child_env) == set(env) | {proctree.MARKER_ENV}
    assert child_env["TERM"] == "xterm-256color" and child_env["EXTRA"] == "yes"
    ignored = int(status_of(pty.pid)["SigIgn"], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert os.readlink(f"/proc/{pty.pid}/cwd") == str(tmp_path)
    # The master fd is not inherited by the child.
    child_fds = os.listdir(f"/proc/{pty.pid}/fd")
    assert sorted(child_fds) == ["0", "1", "2"]
    await pty.terminate(grace=0.5)


async def test_the_pty_is_the_controlling_terminal(tmp_path: Path) -> None:
    """Job control and /dev/tty need it: the program leads its session and its terminal."""
    sink = Sink()
    pty = await spawn(["sh", "-c", "echo tty=$(tty); exec sleep 1000"], sink, tmp_path)
    await sink.wait_for(b"tty=/dev/pts/")
    stat = Path(f"/proc/{pty.pid}/stat").read_text().rsplit(")", 1)[1].split()
    session, tty_nr, foreground = int(stat[3]), int(stat[4]), int(stat[5])
    assert session == pty.pid and tty_nr != 0 and foreground == pty.pid
    await pty.terminate(grace=0.5)


async def test_resize_reaches_the_program(tmp_path: Path) -> None:
    sink = Sink()
    pty = await spawn(
        ["sh", "-c", "trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done"],
        sink,
        tmp_path,
        cols=80,
        rows=24,
    )
    await sink.wait_for(b"ready")
    pty.resize(132, 43)
    await sink.wait_for(b"43 132")
    await pty.terminate(grace=0.5)


async def test_missing_executable_is_a_clear_error(tmp_path: Path) -> None:
    baseline = open_fds()
    with pytest.raises(SpawnError, match="executable not found: no-such-program"):
        await spawn(["no-such-program"], Sink(), tmp_path)
    with pytest.raises(SpawnError, match="working directory"):
        await spawn(["cat"], Sink(), tmp_path / "missing")
    assert open_fds() == baseline


async def cancel_a_spawn(cwd: Path, marker: str) -> None:
    """Start ``sleep`` and cancel the spawn while its thread forks and execs."""
    spawning = asyncio.create_task(
        BidirectionalPTY.spawn(
            ["sleep", "1000"],
            cwd=cwd,
            env=build_child_env(("PATH",), {}, "xterm-256color"),
            on_output=Sink(),
            marker=marker,
        )
    )
    await asyncio.sleep(0)  # the thread is starting the program
    spawning.cancel()
    with pytest.raises(asyncio.CancelledError):
        await spawning


async def test_a_cancelled_spawn_leaves_no_program(tmp_path: Path) -> None:
    """The fork and exec run in a thread: cancelled meanwhile, what it started is ended."""
    baseline = open_fds()
    marker = "test-" + os.urandom(4).hex()
    await cancel_a_spawn(tmp_path, marker)
    async with asyncio.timeout(10):
        while (await asyncio.to_thread(proctree.find_marked, [marker]))[marker] or (
            open_fds() != baseline
        ):
            await asyncio.sleep(0.02)


def test_a_spawn_cancelled_as_its_loop_closes_leaves_no_program(tmp_path: Path) -> None:
    """A host that closes its loop without waiting for executors (as ``web.run_app`` does):
    the program the spawn thread started is still ended."""
    marker = "test-" + os.urandom(4).hex()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(cancel_a_spawn(tmp_path, marker))
    finally:
        loop.close()
    deadline = time.monotonic() + 10
    while proctree.find_marked([marker])[marker]:
        assert time.monotonic() < deadline, "the spawned program outlived its loop"
        time.sleep(0.02)


async def test_signals_the_server_ignores_are_at_their_default_in_the_program(
    tmp_path: Path,
) -> None:
    """Started by ``nohup`` or as a shell's background job, the server ignores SIGHUP, SIGINT
    and SIGQUIT; its programs must not (Ctrl-C must still interrupt them)."""
    wanted = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)
    gnu_env = shutil.which("env")
    resets = (
        gnu_env is not None
        and (
            await asyncio.to_thread(
                subprocess.run, [gnu_env, "--default-signal", "true"], capture_output=True
            )
        ).returncode
        == 0
    )
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in wanted}
    try:
        if resets:
            # Without a preexec_fn, so that the spawn can use vfork.
            assert await asyncio.to_thread(pty_module._session_prefix) == [
                gnu_env,
                "--default-signal",
                shutil.which("setsid"),
                "-c",
            ]
        sink = Sink()
        pty = await spawn(["sh", "-c", "echo tty=$(tty); exec sleep 1000"], sink, tmp_path)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    await sink.wait_for(b"tty=/dev/pts/")
    await program_runs(pty.pid, ["sleep", "1000"])
    status = status_of(pty.pid)
    mask = sum(1 << (signum - 1) for signum in wanted)
    assert int(status["SigIgn"], 16) & mask == 0 and int(status["SigBlk"], 16) == 0
    await pty.terminate(grace=0.5)


async def test_no_output_is_handed_on_once_reading_is_paused(tmp_path: Path) -> None:
    """A client that becomes congested pauses reading from inside the output callback: the
    rest of that wakeup's reads must wait too."""
    chunks: list[bytes] = []
    handed_while_paused: list[int] = []
    delivered = asyncio.Event()

    def on_output(chunk: bytes) -> None:
        if pty.reading_paused:
            handed_while_paused.append(len(chunk))
        chunks.append(chunk)
        pty.pause_reading()  # as a congested session does
        delivered.set()

    pty = await BidirectionalPTY.spawn(
        ["yes", "0123456789abcdef"],
        cwd=tmp_path,
        env=build_child_env(("PATH",), {}, "xterm-256color"),
        on_output=on_output,
        marker="test-" + os.urandom(4).hex(),
    )
    # Each resume is one wakeup; a flooding program fills whole 4,095-byte reads, after
    # which the loop would go on reading if it did not look at the pause.
    for _ in range(20):
        delivered.clear()
        pty.resume_reading()
        await asyncio.wait_for(delivered.wait(), 10)
    assert any(len(chunk) >= 4095 for chunk in chunks)
    assert handed_while_paused == []
    await pty.terminate(grace=0.5)


async def test_a_relative_program_path_is_found_from_the_working_directory(
    tmp_path: Path,
) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello-from-cwd\n")
    script.chmod(0o755)
    sink = Sink()
    pty = await spawn(["./hello.sh"], sink, tmp_path)
    await sink.wait_for(b"hello-from-cwd")
    assert (await pty.wait()).code == 0


async def test_many_ptys_end_with_one_scan_per_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ending twenty sessions together scans /proc once per signal step for all of them,
    and each one's own terminate afterwards scans nothing and still has the status."""
    sinks = [Sink() for _ in range(20)]
    ptys = [
        await spawn(["sh", "-c", "sleep 1000 & echo started; exec sleep 1001"], sink, tmp_path)
        for sink in sinks
    ]
    for sink in sinks:
        await sink.wait_for(b"started")
    try:
        scans = count_proc_scans(monkeypatch)
        statuses = await asyncio.wait_for(BidirectionalPTY.terminate_all(ptys, grace=0.5), 30)
        # SIGHUP ends every tree; the next step's scan finds nothing left.
        assert len(scans) == 2
        assert statuses == [ExitStatus(None, "SIGHUP")] * len(ptys)
        for pty in ptys:
            assert await asyncio.wait_for(pty.terminate(), 10) == ExitStatus(None, "SIGHUP")
        assert len(scans) == 2
    finally:
        monkeypatch.undo()
        for pty in ptys:
            await pty.terminate(grace=0.5)


async def test_terminate_reads_no_proc_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding, signalling and waiting for a tree read /proc in threads, never on the loop."""
    loop_thread = threading.get_ident()
    on_loop: list[str] = []
    real_open = builtins.open
    real_listdir = os.listdir

    def note(path: object) -> None:
        if threading.get_ident() == loop_thread and str(path).startswith("/proc"):
            on_loop.append(str(path))

    def open_spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        note(file)
        return real_open(file, *args, **kwargs)

    def listdir_spy(path: str) -> list[str]:
        note(path)
        return real_listdir(path)

    sink = Sink()
    # A process that ignores SIGHUP makes the escalation go on to SIGTERM.
    script = "sleep 1000 & (trap '' HUP; exec sleep 1000) & echo started; wait"
    pty = await spawn(["sh", "-c", script], sink, tmp_path)
    await sink.wait_for(b"started")
    tree = await asyncio.to_thread(proctree.find_tree, pty.identity, pty.marker)
    assert len(tree) == 3
    monkeypatch.setattr(builtins, "open", open_spy)
    monkeypatch.setattr(os, "listdir", listdir_spy)
    await asyncio.wait_for(pty.terminate(grace=0.3), 20)
    monkeypatch.undo()
    assert on_loop == []
    assert await asyncio.to_thread(proctree.alive, tree) == set()


async def test_a_reap_held_by_another_thread_does_not_spin_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another thread holds Popen's waitpid lock (a ``wait()`` in a thread), the exit
    cannot be reaped: the loop must wait for it, not poll the readable pidfd flat out."""
    sink = Sink()
    pty = await spawn(["sh", "-c", "echo started; exec sleep 0.3"], sink, tmp_path)
    await sink.wait_for(b"started")
    # Loop iterations are counted as well as CPU time: on a busy machine a spinning loop
    # gets little CPU, but still thousands of iterations.
    selector: selectors.BaseSelector = vars(asyncio.get_running_loop())["_selector"]
    real_select = selector.select
    wakeups = [0]

    def select_spy(timeout: float | None = None) -> Any:
        wakeups[0] += 1
        return real_select(timeout)

    lock: threading.Lock = vars(pty._process)["_waitpid_lock"]
    lock.acquire()
    try:
        pidfd = os.pidfd_open(pty.pid)
        try:
            readable, _, _ = await asyncio.to_thread(select.select, [pidfd], [], [], 10)
        finally:
            os.close(pidfd)
        assert readable, "the program did not exit"
        monkeypatch.setattr(selector, "select", select_spy)
        cpu_before = time.process_time()
        await asyncio.sleep(0.5)  # the window in which the loop's work is measured
        spent = time.process_time() - cpu_before
        monkeypatch.undo()
    finally:
        lock.release()
    assert wakeups[0] < 50 and spent < 0.05, (
        f"{wakeups[0]} loop iterations, {spent:.2f} s of CPU in 0.5 s while the reap was held"
    )
    assert await asyncio.wait_for(pty.wait(), 10) == ExitStatus(0, None)


async def test_the_spawns_kill_grace_ends_leftovers(tmp_path: Path) -> None:
    """After the program's own exit, its leftovers are ended with the grace given to spawn."""
    sink = Sink()
    # The leftover holds the terminal and ignores SIGHUP and SIGTERM: only SIGKILL, after
    # twice the grace, ends it and with it the output.
    script = (
        "setsid sh -c 'trap \"\" HUP TERM; echo $$ > pid; exec sleep 1000' & "
        "while [ ! -s pid ]; do sleep 0.01; done; echo bye"
    )
    started = time.monotonic()
    pty = await BidirectionalPTY.spawn(
        ["sh", "-c", script],
        cwd=tmp_path,
        env=build_child_env(("PATH",), {}, "xterm-256color"),
        on_output=sink,
        marker="test-" + os.urandom(4).hex(),
        kill_grace=0.1,
    )
    assert await asyncio.wait_for(pty.wait(), 20) == ExitStatus(0, None)
    # Linger 0.5 s, then two graces of 0.1 s (not of 1 s each).
    assert time.monotonic() - started < 1.8
    leftover = proctree.identify(int((tmp_path / "pid").read_text()))
    assert leftover is None or "sleep" not in Path(f"/proc/{leftover.pid}/cmdline").read_text()
