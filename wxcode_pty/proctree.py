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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "MARKER_ENV",
    "ProcessId",
    "Tree",
    "alive",
    "each_process",
    "end_processes",
    "end_trees",
    "find_marked",
    "find_tree",
    "find_trees",
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


def alive(processes: Iterable[ProcessId]) -> set[ProcessId]:
    """Those of ``processes`` that still run. Blocking (it reads ``/proc``): run it in a
    thread, once for a whole set."""
    return {process for process in processes if is_alive(process)}


def _read_fields(pid: int | str, entry: str) -> list[bytes] | None:
    """``/proc/<pid>/<entry>`` split at NULs; None when the process vanished or hides it."""
    try:
        with open(f"{_PROC}/{pid}/{entry}", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return None


#: A session's tree: its program (None when unknown) and its marker value (None: no marker).
Tree = tuple[ProcessId | None, str | None]


def find_tree(root: ProcessId | None, marker_value: str | None = None) -> set[ProcessId]:
    """Every live process of a session: the root, its descendants, its session, its marker.

    Blocking (it reads ``/proc``): call it through ``asyncio.to_thread``.
    """
    return find_trees([(root, marker_value)])[0]


def find_trees(trees: Sequence[Tree]) -> list[set[ProcessId]]:
    """The live processes of each of several trees (see :func:`find_tree`), in one pass over
    ``/proc`` for all of them.

    Blocking (it reads ``/proc``): call it through ``asyncio.to_thread``.
    """
    me = os.getpid()
    stats: dict[int, _Stat] = {}
    children: dict[int, list[int]] = {}
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        stat = _read_stat(int(name))
        if stat is None or stat.state in ("Z", "X") or stat.pid == me:
            continue
        stats[stat.pid] = stat
        children.setdefault(stat.ppid, []).append(stat.pid)

    found: list[set[int]] = [set() for _ in trees]
    by_session: dict[int, list[int]] = {}
    by_marker: dict[bytes, list[int]] = {}
    for i, (root, marker_value) in enumerate(trees):
        if marker_value is not None:
            by_marker.setdefault(f"{MARKER_ENV}={marker_value}".encode(), []).append(i)
        if root is None:
            continue
        root_stat = stats.get(root.pid)
        if root_stat is not None and root_stat.start_time == root.start_time:
            stack = [root.pid]
            while stack:
                pid = stack.pop()
                if pid not in found[i]:
                    found[i].add(pid)
                    stack.extend(children.get(pid, ()))
        if root_stat is None or root_stat.start_time == root.start_time:
            # The root led its own session; members outlive it, keeping its pid as their sid
            # (unless that pid was reused, checked above).
            by_session.setdefault(root.pid, []).append(i)
    for pid, stat in stats.items():
        for i in by_session.get(stat.sid, ()):
            found[i].add(pid)
        if by_marker:
            for entry in _read_fields(pid, "environ") or ():
                if entry in by_marker:
                    for i in by_marker[entry]:
                        found[i].add(pid)
                    break
    return [{ProcessId(pid, stats[pid].start_time) for pid in pids} for pids in found]


def find_marked(marker_values: Iterable[str]) -> dict[str, set[ProcessId]]:
    """Live processes carrying each of several markers, in one pass over ``/proc``.

    Blocking: call it through ``asyncio.to_thread``. For restart recovery, where one pass
    instead of one per session is what keeps a restart of hundreds of sessions fast.
    """
    values = list(marker_values)
    return dict(zip(values, find_trees([(None, v) for v in values]), strict=True))


def each_process(entry: str) -> Iterator[tuple[int, list[bytes]]]:
    """``(pid, fields)`` for every other process: its NUL-separated ``/proc/<pid>/<entry>``
    (``environ``, ``cmdline``) split. Processes that vanish or hide it are skipped.

    Blocking (it reads ``/proc``): run it in a thread.
    """
    me = os.getpid()
    for name in os.listdir(_PROC):
        if name.isdigit() and int(name) != me:
            fields = _read_fields(name, entry)
            if fields is not None:
                yield int(name), fields


def _signal_all(processes: Iterable[ProcessId], signums: Sequence[int]) -> set[ProcessId]:
    """Send ``signums`` to each process that still runs; those it was sent to. Blocking (it
    reads ``/proc``): run it in a thread."""
    signalled: set[ProcessId] = set()
    for process in processes:
        # Re-check the identity right before the signal: never signal a reused pid.
        if is_alive(process):
            with contextlib.suppress(ProcessLookupError):
                for signum in signums:
                    os.kill(process.pid, signum)
                signalled.add(process)
    return signalled


async def _wait_gone(processes: set[ProcessId], deadline: float) -> None:
    loop = asyncio.get_running_loop()
    delay = 0.005
    # Processes that are not our children cannot be awaited; poll with a growing step, each
    # poll one thread hop for the whole set.
    while await asyncio.to_thread(alive, processes) and loop.time() < deadline:
        await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
        delay = min(delay * 2, 0.1)


#: The escalation: each signal, and how long to wait for it to take (None: the grace). The
#: second SIGKILL is a last sweep for anything forked during the first.
_STEPS = (
    (signal.SIGHUP, None),
    (signal.SIGTERM, None),
    (signal.SIGKILL, 5.0),
    (signal.SIGKILL, 5.0),
)


async def end_trees(trees: Sequence[Tree], *, grace: float = 2.0) -> list[set[ProcessId]]:
    """End several whole trees (see :func:`find_tree`) together: SIGHUP, then SIGTERM, then
    SIGKILL, each after ``grace`` (5 s for the kill), and once more after the kill for
    anything forked meanwhile.

    Before each step, one pass over ``/proc`` finds every tree again, so that processes forked
    meanwhile are caught; what was found earlier is kept, so that a process re-parented away
    is not lost. Returns the processes found for each tree (all of them are gone when this
    returns, unless they are unkillable, e.g. in uninterruptible sleep).
    """
    if not trees:
        return []
    loop = asyncio.get_running_loop()
    seen: list[set[ProcessId]] = [set() for _ in trees]

    def find_and_signal(signums: Sequence[int]) -> set[ProcessId]:
        for known, found in zip(seen, find_trees(trees), strict=True):
            known |= found
        return _signal_all(set().union(*seen), signums)

    for signum, wait in _STEPS:
        # A stopped process would never act on SIGHUP/SIGTERM.
        signums = [signum] if signum == signal.SIGKILL else [signum, signal.SIGCONT]
        signalled = await asyncio.to_thread(find_and_signal, signums)
        if not signalled:
            break
        await _wait_gone(signalled, loop.time() + (grace if wait is None else wait))
    return seen


async def end_processes(
    root: ProcessId | None, marker_value: str | None, *, grace: float = 2.0
) -> set[ProcessId]:
    """End one whole tree (see :func:`end_trees`); the processes that were found."""
    return (await end_trees([(root, marker_value)], grace=grace))[0]
