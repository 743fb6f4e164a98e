"""SessionStore on a real SQLite file: migrations, round trips, and crash safety (R8)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from wxcode_pty.store import (
    MigrationError,
    SessionRecord,
    SessionStore,
    StoreLocked,
    default_migrations_dir,
)

ROOT = Path(__file__).resolve().parent.parent


def record(project: str, **changes: object) -> SessionRecord:
    values: dict[str, object] = dict(
        output_project_id=project,
        session_id="s1",
        kind="shell",
        argv=("bash", "-l"),
        cwd="/srv/x",
        status="running",
        created_at=1.0,
        updated_at=1.0,
        last_activity=1.0,
    )
    values.update(changes)
    return SessionRecord(**values)  # type: ignore[arg-type]


async def test_round_trip_and_update(tmp_path: Path) -> None:
    store = await SessionStore.open(tmp_path / "db.sqlite")
    try:
        await store.put(record("a", claude_session_id="c1", pid=42, pid_start_time=7))
        await store.update("a", status="idle", pid=None)
        row = await store.get("a")
        assert row is not None
        assert (row.argv, row.claude_session_id, row.status, row.pid) == (
            ("bash", "-l"),
            "c1",
            "idle",
            None,
        )
        assert [r.output_project_id for r in await store.list(status="idle")] == ["a"]
        with pytest.raises(ValueError):
            await store.update("a", no_such_column=1)
        with pytest.raises(sqlite3.IntegrityError):
            await store.update("a", status="bogus")
        # The refused write left the row as it was.
        assert (await store.get("a")) == row
    finally:
        await store.close()


async def test_database_settings(tmp_path: Path) -> None:
    store = await SessionStore.open(tmp_path / "db.sqlite")
    await store.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(
            list(default_migrations_dir().glob("*.sql"))
        )


async def test_migrations_apply_once(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_one.sql").write_text("CREATE TABLE one (x INTEGER);")
    store = await SessionStore.open(tmp_path / "db.sqlite", migrations)
    await store.close()
    (migrations / "0002_two.sql").write_text(
        "CREATE TABLE two (x INTEGER); INSERT INTO one VALUES (1);"
    )
    for _ in range(2):
        store = await SessionStore.open(tmp_path / "db.sqlite", migrations)
        assert await store.schema_version() == 2
        await store.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        assert db.execute("SELECT count(*) FROM one").fetchone()[0] == 1


async def test_failing_migration_rolls_back(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_one.sql").write_text("CREATE TABLE one (x INTEGER);")
    (migrations / "0002_bad.sql").write_text(
        "CREATE TABLE two (x INTEGER);\nINSERT INTO nowhere VALUES (1);"
    )
    with pytest.raises(MigrationError, match=r"0002_bad\.sql"):
        await SessionStore.open(tmp_path / "db.sqlite", migrations)
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "one" in tables and "two" not in tables
    # Fixed, it applies on the next start.
    (migrations / "0002_bad.sql").write_text("CREATE TABLE two (x INTEGER);")
    store = await SessionStore.open(tmp_path / "db.sqlite", migrations)
    assert await store.schema_version() == 2
    await store.close()


async def test_misnumbered_migrations_are_refused(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0002_two.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="without gaps"):
        await SessionStore.open(tmp_path / "db.sqlite", migrations)
    (migrations / "two.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        await SessionStore.open(tmp_path / "db.sqlite", migrations)


async def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    """R8: kill -9 during writes, many times; every acknowledged write is there."""
    path = tmp_path / "db.sqlite"
    rng = random.Random(11)
    acknowledged: list[str] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_ in range(8):
        writer = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "tests" / "programs" / "store_writer.py"),
            str(path),
            f"r{round_}",
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert writer.stdout is not None
        assert (await asyncio.wait_for(writer.stdout.readline(), 30)).strip() == b"open"
        # Kill after a random number of acknowledged writes (0..15), mid-write or between.
        for _ in range(rng.randint(0, 15)):
            line = await asyncio.wait_for(writer.stdout.readline(), 30)
            acknowledged.append(line.decode().strip())
        writer.send_signal(signal.SIGKILL)
        rest, _ = await writer.communicate()
        # Lines printed before the kill are acknowledged too.
        acknowledged.extend(line for line in rest.decode().split() if line)
        assert writer.returncode == -signal.SIGKILL
    store = await SessionStore.open(path)
    try:
        assert await store.integrity_check() == "ok"
        rows = {r.output_project_id: r for r in await store.list()}
        for project in acknowledged:
            assert rows[project].claude_session_id == "c" + project.split("-")[1]
            assert rows[project].status == "idle"
    finally:
        await store.close()


async def test_one_server_per_database(tmp_path: Path) -> None:
    """Two servers on one database would respawn the same sessions: the second is refused."""
    first = await SessionStore.open(tmp_path / "db.sqlite")
    try:
        with pytest.raises(StoreLocked, match="in use by another server"):
            await SessionStore.open(tmp_path / "db.sqlite")
    finally:
        await first.close()
    second = await SessionStore.open(tmp_path / "db.sqlite")
    await second.close()
