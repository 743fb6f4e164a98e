"""A real server process killed with SIGKILL and SIGTERM: recovery (R7) and shutdown (R11)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path

from .server import ServerProcess, processes_with

MARK = "r7-program"
# Ignores SIGHUP, so that it survives the server's death: recovery must end it itself.
PROGRAM = [
    sys.executable,
    "-c",
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
    "print('started', os.getpid(), flush=True)\n"
    "time.sleep(100000)\n",
    MARK,
]


async def test_sigkill_at_random_moments_respawns_each_session_once(tmp_path: Path) -> None:
    """R7 for a plain command: 5 sessions; SIGKILL at random points, mid-spawn too; restart."""
    server = ServerProcess(tmp_path, "--argv", json.dumps(PROGRAM), "--kill-grace", "0.3")
    projects = [f"p{i}" for i in range(5)]
    rng = random.Random(1)
    try:
        await server.start()
        await server.ready()
        for project in projects:
            await server.post(project)
        for round_ in range(4):
            # Round 0 and 2 kill while recovery is spawning; 1 and 3 once all is running.
            if round_ % 2:
                await server.ready()
            else:
                await asyncio.sleep(rng.random() * 0.3)
            await server.kill(signal.SIGKILL)
            await server.start()
        await server.ready()
        sessions = await server.sessions()
        assert sorted(sessions) == projects
        for project in projects:
            info = sessions[project]
            assert info["status"] == "running", info
            pid = info["pid"]
            assert os.readlink(f"/proc/{pid}/cwd") == str((server.workdir / project).resolve())
        # Exactly one live program per project: no survivor of an earlier run beside it.
        live = processes_with(MARK)
        assert sorted(live) == sorted(s["pid"] for s in sessions.values())
        assert await server.kill(signal.SIGTERM) == 0
        deadline = time.monotonic() + 10
        while processes_with(MARK) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert processes_with(MARK) == []
        with sqlite3.connect(server.db) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            rows = db.execute(
                "SELECT output_project_id, status FROM sessions ORDER BY 1"
            ).fetchall()
            # A graceful shutdown keeps them marked for the next start.
            assert rows == [(p, "running") for p in projects]
    finally:
        await server.close()


async def test_sigterm_closes_clients_ends_trees_and_exits(tmp_path: Path) -> None:
    """R11: 5 sessions and 10 clients; SIGTERM: 1001 to every client, trees ended, exit < 15 s."""
    server = ServerProcess(
        tmp_path, "--argv", json.dumps(["sh", "-c", "sleep 100000 & exec sleep 100001"])
    )
    try:
        await server.start()
        await server.ready()
        clients = [await server.attach(f"p{i % 5}") for i in range(10)]
        pids = [s["pid"] for s in (await server.sessions()).values()]
        assert len(pids) == 5 and all(pids)
        start = time.monotonic()
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(c.wait_closed(timeout=15) for c in clients))
        assert codes == [1001] * 10
        assert server.process is not None
        assert await asyncio.wait_for(server.process.wait(), 15) == 0
        assert time.monotonic() - start < 15
        server.process = None
        for pid in pids:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
            )
        assert processes_with("100000") == []
        with sqlite3.connect(server.db) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        await server.close()


async def test_attach_after_restart_reaches_the_respawned_run(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "--argv", json.dumps(["cat"]))
    try:
        await server.start()
        await server.ready()
        first = await server.attach("p1")
        await first.ws.send_bytes(b"before\n")
        await first.read_until(b"before\r\nbefore\r\n")
        await server.kill(signal.SIGKILL)
        await server.start()
        await server.ready()
        again = await server.attach("p1")
        assert again.hello["resumed"] is True
        assert again.hello["session_id"] != first.hello["session_id"]
    finally:
        await server.close()
