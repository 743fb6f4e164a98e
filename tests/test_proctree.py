"""proctree on real processes: many trees ended together, liveness checked off the loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from wxcode_pty import proctree
from wxcode_pty.proctree import ProcessId


def count_proc_scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Spy on ``os.listdir``: one entry per listing of ``/proc`` (a full scan)."""
    scans: list[str] = []
    listdir: Callable[[str], list[str]] = os.listdir

    def spy(path: str) -> list[str]:
        if path == "/proc":
            scans.append(path)
        return listdir(path)

    monkeypatch.setattr(os, "listdir", spy)
    return scans


def start_stubborn_tree(cwd: Path, marker: str) -> tuple[subprocess.Popen[bytes], int]:
    """A session leader and its background child, both ignoring SIGHUP and SIGTERM (so that
    every step of the escalation runs); the leader and the child's pid once both run."""
    process = subprocess.Popen(
        ["sh", "-c", "trap '' HUP TERM; sleep 1000 & echo $!; exec sleep 1001"],
        cwd=cwd,
        env={"PATH": os.environ["PATH"], proctree.MARKER_ENV: marker},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None
    child = int(process.stdout.readline())
    process.stdout.close()
    return process, child


async def test_many_trees_end_with_one_scan_per_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty trees, found by root or by marker, end with one /proc scan per signal step for
    all of them together (SIGHUP, SIGTERM, SIGKILL, the sweep after it): four in all."""
    markers = [f"test-{os.urandom(4).hex()}" for _ in range(20)]
    started = [await asyncio.to_thread(start_stubborn_tree, tmp_path, marker) for marker in markers]
    try:
        roots = [proctree.identify(process.pid) for process, _ in started]
        children = [proctree.identify(child) for _, child in started]
        trees = [
            (root, None) if i % 2 else (None, marker)
            for i, (root, marker) in enumerate(zip(roots, markers, strict=True))
        ]
        scans = count_proc_scans(monkeypatch)
        ended = await asyncio.wait_for(proctree.end_trees(trees, grace=0.2), 30)
        assert len(scans) == 4
        for found, root, child in zip(ended, roots, children, strict=True):
            assert root is not None and child is not None and {root, child} <= found
        everything = {p for found in ended for p in found}
        assert await asyncio.to_thread(proctree.alive, everything) == set()
    finally:
        for process, _ in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # what a failed test left running
            await asyncio.to_thread(process.wait)


async def test_alive_knows_a_process_by_its_start_time(tmp_path: Path) -> None:
    process = await asyncio.to_thread(
        subprocess.Popen, ["sleep", "1000"], cwd=tmp_path, start_new_session=True
    )
    running = proctree.identify(process.pid)
    assert running is not None
    other = ProcessId(running.pid, running.start_time + 1)  # the pid, reused later
    assert await asyncio.to_thread(proctree.alive, [running, other]) == {running}
    process.kill()
    await asyncio.to_thread(process.wait)
    assert await asyncio.to_thread(proctree.alive, [running, other]) == set()


async def test_no_trees_is_no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    scans = count_proc_scans(monkeypatch)
    assert await proctree.end_trees([], grace=0.1) == []
    assert scans == []
