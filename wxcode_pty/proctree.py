"""Process identity and ending whole process trees, read from ``/proc``.

A pid alone names nothing for long: it is reused once its process is reaped. Here a process is
``ProcessId(pid, start_time)``, the start time being field 22 of ``/proc/<pid>/stat``, and a
signal is only sent after the start time was checked again.

A session's tree is every process that descends from its program (by parent pid), shares its
session id, or carries its marker in the environment it was started with. The marker catches
what the other two miss: a ``setsid`` grandchild whose parent already exited and was re-parented
to init, or a survivor of a server that was killed with SIGKILL.

This module does not spawn or reap anything; ``pty.py`` owns the program's own pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

__all__ = [
    "MARKER_ENV",
    "ProcessId",
    "each_process",
    "end_marked",
    "end_processes",
    "find_marked",
    "find_tree",
    "identify",
    "is_alive",
]

#: Environment variable that every spawned program (and so every descendant) carries.
MARKER_ENV = "WXCODE_PTY_SESSION"

_PROC = "/proc"


@dataclass(frozen=True, slots=True)
class ProcessId:
    """A process named so that a reused pid can never be mistaken for it."""

    pid: int
    start_time: int


@dataclass(frozen=True, slots=True)
class _Stat:
    pid: int
    ppid: int
    sid: int
    state: str
    start_time: int


def _read_stat(pid: int) -> _Stat | None:
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    close = raw.rfind(b")")
    if close < 0:
        return None
    fields = raw[close + 2 :].split()
    try:
        return _Stat(
            pid=pid,
            state=fields[0].decode(),
            ppid=int(fields[1]),
            sid=int(fields[3]),
            start_time=int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def identify(pid: int) -> ProcessId | None:
    """The identity of a running process, or None when there is none with that pid."""
    stat = _read_stat(pid)
    if stat is None or stat.state in ("Z", "X"):
        return None
    return ProcessId(pid, stat.start_time)


def is_alive(process: ProcessId) -> bool:
    """True while that very process runs (a zombie or a reused pid is not it)."""
    return identify(process.pid) == process


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open(f"{_PROC}/{pid}/environ", "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


def find_tree(root: ProcessId | None, marker_value: str | None = None) -> set[ProcessId]:
    """Every live process of a session: the root, its descendants, its session, its marker.

    Blocking (it reads ``/proc``): call it through ``asyncio.to_thread``.
    """
    stats: dict[int, _Stat] = {}
    children: dict[int, list[int]] = {}
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        stat = _read_stat(int(name))
        if stat is None or stat.state in ("Z", "X"):
            continue
        stats[stat.pid] = stat
        children.setdefault(stat.ppid, []).append(stat.pid)

    found: set[int] = set()
    if root is not None:
        root_stat = stats.get(root.pid)
        if root_stat is not None and root_stat.start_time == root.start_time:
            stack = [root.pid]
            while stack:
                pid = stack.pop()
                if pid not in found:
                    found.add(pid)
                    stack.extend(children.get(pid, ()))
        if root_stat is None or root_stat.start_time == root.start_time:
            # The root led its own session; members outlive it, keeping its pid as their sid
            # (unless that pid was reused, checked above).
            found.update(pid for pid, s in stats.items() if s.sid == root.pid)
    if marker_value is not None:
        marker = f"{MARKER_ENV}={marker_value}".encode()
        me = os.getpid()
        found.update(pid for pid in stats if pid != me and _has_marker(pid, marker))
    found.discard(os.getpid())
    return {ProcessId(pid, stats[pid].start_time) for pid in found}


def find_marked(marker_values: Iterable[str]) -> dict[str, set[ProcessId]]:
    """Live processes carrying each of several markers, in one pass over ``/proc``.

    Blocking: call it through ``asyncio.to_thread``. For restart recovery, where one pass
    instead of one per session is what keeps a restart of hundreds of sessions fast.
    """
    wanted = {f"{MARKER_ENV}={value}".encode(): value for value in marker_values}
    found: dict[str, set[ProcessId]] = {value: set() for value in wanted.values()}
    for pid, entries in each_process("environ"):
        for entry in entries:
            value = wanted.get(entry)
            if value is not None:
                process = identify(pid)
                if process is not None:
                    found[value].add(process)
                break
    return found


def each_process(entry: str) -> Iterator[tuple[int, list[bytes]]]:
    """``(pid, fields)`` for every other process: its NUL-separated ``/proc/<pid>/<entry>``
    (``environ``, ``cmdline``) split. Processes that vanish or hide it are skipped.

    Blocking (it reads ``/proc``): run it in a thread.
    """
    me = os.getpid()
    for name in os.listdir(_PROC):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"{_PROC}/{name}/{entry}", "rb") as f:
                fields = f.read().split(b"\0")
        except OSError:
            continue
        yield int(name), fields


def _signal_all(processes: Iterable[ProcessId], signum: int) -> None:
    for process in processes:
        # Re-check the identity right before the signal: never signal a reused pid.
        if is_alive(process):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)


async def _wait_gone(processes: set[ProcessId], deadline: float) -> set[ProcessId]:
    loop = asyncio.get_running_loop()
    delay = 0.005
    while True:
        alive = {p for p in processes if is_alive(p)}
        if not alive or loop.time() >= deadline:
            return alive
        # Processes that are not our children cannot be awaited; poll with a growing step.
        await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
        delay = min(delay * 2, 0.1)


async def _escalate(find: Callable[[], set[ProcessId]], grace: float) -> set[ProcessId]:
    """SIGHUP, then SIGTERM, then SIGKILL, each after ``grace`` (5 s for the kill), to what
    ``find`` (blocking, run in a thread) returns before each step, and once more after the
    kill for anything forked meanwhile; the union is kept so that a process re-parented away
    is not lost. Returns every process found."""
    loop = asyncio.get_running_loop()
    seen: set[ProcessId] = set()
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGKILL):
        seen |= await asyncio.to_thread(find)
        alive = {p for p in seen if is_alive(p)}
        if not alive:
            break
        _signal_all(alive, signum)
        if signum != signal.SIGKILL:
            # A stopped process would never act on SIGHUP/SIGTERM.
            _signal_all(alive, signal.SIGCONT)
        await _wait_gone(alive, loop.time() + (grace if signum != signal.SIGKILL else 5.0))
    else:
        # One last sweep for anything forked during the SIGKILL step.
        late = {p for p in await asyncio.to_thread(find) if is_alive(p)}
        if late:
            _signal_all(late, signal.SIGKILL)
            await _wait_gone(late, loop.time() + 5.0)
            seen |= late
    return seen


async def end_marked(marker_values: Iterable[str], *, grace: float = 2.0) -> None:
    """End every process carrying any of the markers, with one pass over ``/proc`` per step
    for all of them together."""
    values = list(marker_values)

    def find() -> set[ProcessId]:
        return set().union(*find_marked(values).values())

    await _escalate(find, grace)


async def end_processes(
    root: ProcessId | None, marker_value: str | None, *, grace: float = 2.0
) -> set[ProcessId]:
    """End a whole tree: SIGHUP, then SIGTERM, then SIGKILL, each after ``grace``.

    The tree is looked up again before every step so that processes forked meanwhile are
    caught. Returns the processes that were found (all of them are gone when this returns,
    unless they are unkillable, e.g. in uninterruptible sleep).
    """
    return await _escalate(lambda: find_tree(root, marker_value), grace)
