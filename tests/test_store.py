"""SessionStore on both engines, a real SQLite file and a real PostgreSQL server: migrations,
round trips, ordered writes, and crash safety (R8).

The PostgreSQL server is started once for the session from the machine's binaries (Debian's
``postgresql``, installed by ``.ci/run``); each test gets a database of its own, created with a
typical production locale (ICU ``en-US``, not byte order).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import wxcode_pty
from wxcode_pty.store import (
    MigrationError,
    SessionRecord,
    SessionStatus,
    SessionStore,
    StoreLocked,
    default_migrations_dir,
)

from .postgres import PostgresServer, postgres_database

ROOT = Path(__file__).resolve().parent.parent
WRITER = ROOT / "tests" / "programs" / "store_writer.py"


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


@dataclass
class Backend:
    """A fresh, empty database of one engine, and a way to look into it past the store."""

    engine: str
    database: str | Path

    @property
    def integrity_error(self) -> type[Exception]:
        if self.engine == "sqlite":
            return sqlite3.IntegrityError
        return asyncpg.IntegrityConstraintViolationError

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        if isinstance(self.database, Path):
            path = self.database

            def read() -> list[tuple[Any, ...]]:
                with sqlite3.connect(path) as db:
                    return db.execute(sql).fetchall()

            return await asyncio.to_thread(read)
        connection = await asyncpg.connect(self.database)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    async def execute(self, script: str) -> None:
        if isinstance(self.database, Path):
            path = self.database

            def run() -> None:
                with sqlite3.connect(path) as db:
                    db.executescript(script)

            await asyncio.to_thread(run)
            return
        connection = await asyncpg.connect(self.database)
        try:
            await connection.execute(script)
        finally:
            await connection.close()

    async def version(self) -> int:
        if self.engine == "sqlite":
            return int((await self.fetch("PRAGMA user_version"))[0][0])
        rows = await self.fetch("SELECT coalesce(max(version), 0) FROM wxcode_pty_migrations")
        return int(rows[0][0])

    async def tables(self) -> set[str]:
        if self.engine == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        return {row[0] for row in await self.fetch(sql)}


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", tmp_path / "db.sqlite")
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    async for url in postgres_database(server):
        yield Backend("postgresql", url)


async def _applied_once(backend: Backend, migrations: Path) -> None:
    """Two starts on the migrations 0001 and 0002: version 2, and 0002's insert ran once."""
    for _ in range(2):
        store = await SessionStore.open(backend.database, migrations)
        assert await store.schema_version() == 2
        await store.close()
    assert await backend.fetch("SELECT count(*) FROM one") == [(1,)]


# -- both engines --------------------------------------------------------------------------


async def test_round_trip_and_update(backend: Backend) -> None:
    store = await SessionStore.open(backend.database)
    try:
        await store.put(record("a", claude_session_id="c1", pid=42, pid_start_time=2**40))
        await store.update("a", status=SessionStatus.IDLE, pid=None, argv=["claude", "-c"])
        row = await store.get("a")
        assert row is not None
        assert (row.argv, row.claude_session_id, row.status, row.pid, row.pid_start_time) == (
            ("claude", "-c"),
            "c1",
            "idle",
            None,
            2**40,
        )
        assert row.updated_at > 1.0
        assert [r.output_project_id for r in await store.list(status="idle")] == ["a"]
        assert await store.list(status="running") == []
        assert await store.get("nobody") is None
        with pytest.raises(ValueError):
            await store.update("a", no_such_column=1)
        with pytest.raises(backend.integrity_error):
            await store.update("a", status="bogus")
        # The refused write left the row as it was.
        assert (await store.get("a")) == row
        # An update of a missing row changes nothing.
        await store.update("nobody", status="idle")
        assert await store.get("nobody") is None
    finally:
        await store.close()


async def test_put_replaces_the_whole_row_and_delete_removes_it(backend: Backend) -> None:
    store = await SessionStore.open(backend.database)
    try:
        for project in ("a", "B", "_x"):
            await store.put(record(project, claude_session_id="c1", exit_code=3))
        stored = await store.put(record("a", session_id="s2", cols=120))
        row = await store.get("a")
        assert row == stored
        assert (row.session_id, row.cols, row.claude_session_id, row.exit_code) == (
            "s2",
            120,
            None,
            None,
        )
        # Byte order, whatever the database's locale.
        assert [r.output_project_id for r in await store.list()] == ["B", "_x", "a"]
        await store.delete("a")
        await store.delete("a")
        assert await store.get("a") is None
        assert [r.output_project_id for r in await store.list()] == ["B", "_x"]
    finally:
        await store.close()


_UPDATE_LOG = {
    # Each update of a row appends its spawn_count: the order in which the writes landed.
    "sqlite": """
        CREATE TABLE landed (n INTEGER);
        CREATE TRIGGER log_update AFTER UPDATE ON sessions
        BEGIN INSERT INTO landed VALUES (NEW.spawn_count); END;
    """,
    "postgresql": """
        CREATE TABLE landed (seq BIGSERIAL, n INTEGER);
        CREATE FUNCTION log_update() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN INSERT INTO landed (n) VALUES (NEW.spawn_count); RETURN NEW; END $$;
        CREATE TRIGGER log_update AFTER UPDATE ON sessions
        FOR EACH ROW EXECUTE FUNCTION log_update();
    """,
}


async def test_row_writer_keeps_the_order_of_writes(backend: Backend) -> None:
    """Writes queued without waiting land in the order they were made, over PostgreSQL's
    pool of connections too."""
    store = await SessionStore.open(backend.database)
    try:
        await store.put(record("p1"))
        await backend.execute(_UPDATE_LOG[backend.engine])
        writer = store.row_writer("p1")
        for n in range(1, 101):
            writer.record(spawn_count=n, claude_session_id=f"id-{n}")
        await writer.write(status_reason="last")
        order = "seq" if backend.engine == "postgresql" else "rowid"
        landed = [row[0] for row in await backend.fetch(f"SELECT n FROM landed ORDER BY {order}")]
        assert landed == [*range(1, 101), 100]
        row = await store.get("p1")
        assert row is not None
        assert (row.spawn_count, row.claude_session_id, row.status_reason) == (
            100,
            "id-100",
            "last",
        )
        # A failed write does not stop the ones after it, and flush still returns.
        writer.record(status="bogus")
        writer.record(claude_session_id="still")
        await asyncio.wait_for(writer.flush(), 30)
        row = await store.get("p1")
        assert row is not None and (row.claude_session_id, row.status) == ("still", "running")
    finally:
        await store.close()


async def test_migrations_apply_once(backend: Backend, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_one.sql").write_text("CREATE TABLE one (x INTEGER);")
    store = await SessionStore.open(backend.database, migrations)
    assert await store.schema_version() == 1
    await store.close()
    (migrations / "0002_two.sql").write_text(
        "CREATE TABLE two (x INTEGER); INSERT INTO one VALUES (1);"
    )
    await _applied_once(backend, migrations)


async def test_failing_migration_rolls_back(backend: Backend, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_one.sql").write_text("CREATE TABLE one (x INTEGER);")
    (migrations / "0002_bad.sql").write_text(
        "CREATE TABLE two (x INTEGER);\nINSERT INTO one VALUES (1);\nINSERT INTO nowhere VALUES (1);"
    )
    with pytest.raises(MigrationError, match=r"0002_bad\.sql"):
        await SessionStore.open(backend.database, migrations)
    assert await backend.version() == 1
    tables = await backend.tables()
    assert "one" in tables and "two" not in tables
    assert await backend.fetch("SELECT count(*) FROM one") == [(0,)]
    # Fixed, it applies on the next start, once.
    (migrations / "0002_bad.sql").write_text(
        "CREATE TABLE two (x INTEGER); INSERT INTO one VALUES (1);"
    )
    await _applied_once(backend, migrations)


async def test_misnumbered_migrations_are_refused(backend: Backend, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0002_two.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="without gaps"):
        await SessionStore.open(backend.database, migrations)
    (migrations / "two.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        await SessionStore.open(backend.database, migrations)


async def test_shipped_migrations_are_applied(backend: Backend) -> None:
    store = await SessionStore.open(backend.database)
    try:
        shipped = default_migrations_dir("sqlite" if backend.engine == "sqlite" else "postgresql")
        assert await store.schema_version() == len(list(shipped.glob("*.sql"))) > 0
        assert await store.integrity_check() == "ok"
    finally:
        await store.close()


async def _run_writer(
    database: str | Path, prefix: str, writes: int
) -> tuple[asyncio.subprocess.Process, list[str]]:
    """The writer, after ``writes`` acknowledged writes: it is still writing."""
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WRITER),
        str(database),
        prefix,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert writer.stdout is not None
    first = await asyncio.wait_for(writer.stdout.readline(), 30)
    assert first.strip() == b"open", first
    acknowledged = []
    for _ in range(writes):
        line = await asyncio.wait_for(writer.stdout.readline(), 30)
        acknowledged.append(line.decode().strip())
    return writer, acknowledged


async def _kill(writer: asyncio.subprocess.Process) -> list[str]:
    """SIGKILL the writer (unless it died already); the lines it printed before dying are
    acknowledged writes too."""
    with contextlib.suppress(ProcessLookupError):
        writer.send_signal(signal.SIGKILL)
    rest, _ = await writer.communicate()
    return [line for line in rest.decode().split() if line]


async def _assert_all_present(database: str | Path, acknowledged: list[str]) -> None:
    store = await SessionStore.open(database)
    try:
        assert await store.integrity_check() == "ok"
        rows = {r.output_project_id: r for r in await store.list()}
        missing = [project for project in acknowledged if project not in rows]
        assert not missing, f"acknowledged writes lost: {missing}"
        for project in acknowledged:
            assert rows[project].claude_session_id == "c" + project.split("-")[1]
            assert rows[project].status == "idle"
    finally:
        await store.close()


async def test_acknowledged_writes_survive_sigkill(backend: Backend) -> None:
    """R8: kill -9 during writes, many times; every acknowledged write is there."""
    rng = random.Random(11)
    acknowledged: list[str] = []
    for round_ in range(8):
        # Killed after a random number of acknowledged writes (0..15), mid-write or between.
        writer, written = await _run_writer(backend.database, f"r{round_}", rng.randint(0, 15))
        acknowledged += written + await _kill(writer)
        assert writer.returncode == -signal.SIGKILL
    assert acknowledged
    await _assert_all_present(backend.database, acknowledged)


# -- SQLite ----------------------------------------------------------------------------------


async def test_sqlite_database_settings(tmp_path: Path) -> None:
    store = await SessionStore.open(tmp_path / "db.sqlite")
    await store.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(
            list(default_migrations_dir().glob("*.sql"))
        )


async def test_one_server_per_sqlite_database(tmp_path: Path) -> None:
    """Two servers on one file would respawn the same sessions: the second is refused."""
    first = await SessionStore.open(tmp_path / "db.sqlite")
    try:
        with pytest.raises(StoreLocked, match="in use by another server"):
            await SessionStore.open(tmp_path / "db.sqlite")
    finally:
        await first.close()
    second = await SessionStore.open(tmp_path / "db.sqlite")
    await second.close()


# -- PostgreSQL ------------------------------------------------------------------------------


async def test_hosts_share_a_postgres_database(postgres_url: str) -> None:
    """Unlike an SQLite file, a PostgreSQL database is opened by several hosts at once."""
    first = await SessionStore.open(postgres_url)
    second = await SessionStore.open(postgres_url)
    try:
        await first.put(record("a"))
        await second.update("a", claude_session_id="c2")
        row = await first.get("a")
        assert row is not None and row.claude_session_id == "c2"
    finally:
        await first.close()
        await second.close()


async def test_concurrent_opens_apply_each_migration_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """Hosts starting together: each migration runs exactly once, and every open succeeds."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    # The sleeps keep each migration's transaction open while the other hosts arrive.
    (migrations / "0001_one.sql").write_text("CREATE TABLE one (x INTEGER); SELECT pg_sleep(0.2);")
    (migrations / "0002_two.sql").write_text("INSERT INTO one VALUES (2); SELECT pg_sleep(0.2);")
    (migrations / "0003_three.sql").write_text("INSERT INTO one VALUES (3);")
    stores = await asyncio.gather(*(SessionStore.open(postgres_url, migrations) for _ in range(6)))
    try:
        assert [await store.schema_version() for store in stores] == [3] * 6
    finally:
        for store in stores:
            await store.close()
    backend = Backend("postgresql", postgres_url)
    assert await backend.fetch("SELECT x FROM one ORDER BY x") == [(2,), (3,)]
    assert await backend.fetch("SELECT version FROM wxcode_pty_migrations ORDER BY 1") == [
        (1,),
        (2,),
        (3,),
    ]


async def test_a_migration_and_its_bookkeeping_are_one_transaction(
    postgres_url: str, tmp_path: Path
) -> None:
    """The script succeeds, recording its version fails: nothing of the script remains."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_one.sql").write_text("CREATE TABLE one (x INTEGER);")
    (migrations / "0002_two.sql").write_text(
        "CREATE TABLE two (x INTEGER);"
        " INSERT INTO wxcode_pty_migrations (version, name) VALUES (2, 'taken');"
    )
    with pytest.raises(MigrationError, match=r"0002_two\.sql.*wxcode_pty_migrations_pkey"):
        await SessionStore.open(postgres_url, migrations)
    backend = Backend("postgresql", postgres_url)
    assert await backend.version() == 1
    assert await backend.tables() == {"one", "wxcode_pty_migrations"}


async def test_a_lost_connection_fails_the_write_and_the_next_one_reconnects(
    postgres_url: str,
) -> None:
    store = await SessionStore.open(postgres_url)
    admin = await asyncpg.connect(postgres_url)
    try:
        await store.put(record("a"))
        async with admin.transaction():
            # Hold the row so that the store's write waits on the server, then cut it off.
            await admin.execute("SELECT 1 FROM sessions WHERE output_project_id = 'a' FOR UPDATE")
            write = asyncio.create_task(store.update("a", status="idle"))
            backend_pid = None
            for _ in range(500):
                backend_pid = await admin.fetchval(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if backend_pid is not None:
                    break
                await asyncio.sleep(0.01)
            assert backend_pid is not None, "the write never reached the server"
            await admin.execute("SELECT pg_terminate_backend($1)", backend_pid)
            with pytest.raises(asyncpg.ConnectionDoesNotExistError):
                await write
        row = await store.get("a")
        assert row is not None and row.status == "running"
        await store.update("a", status="idle")
        row = await store.get("a")
        assert row is not None and row.status == "idle"
    finally:
        await admin.close()
        await store.close()


async def test_acknowledged_writes_survive_a_postgres_crash(postgres_bindir: Path) -> None:
    """A writer and the server both die; every acknowledged write is there after recovery.

    The server acknowledges commits before flushing them (``synchronous_commit=off``, WAL
    written every 10 s): the store must commit durably anyway.
    """
    server = PostgresServer(
        postgres_bindir, {"synchronous_commit": "off", "wal_writer_delay": "10s"}
    )
    try:
        await asyncio.to_thread(server.start)
        rng = random.Random(5)
        acknowledged: list[str] = []
        for round_ in range(3):
            writer, written = await _run_writer(server.url, f"r{round_}", rng.randint(3, 15))
            # The server dies first, right after an acknowledged write: the writer then fails
            # on the lost connection, or is killed in its next write.
            await asyncio.to_thread(server.crash)
            acknowledged += written + await _kill(writer)
            await asyncio.to_thread(server.start)
        await _assert_all_present(server.url, acknowledged)
    finally:
        await asyncio.to_thread(server.remove)


# -- choosing the engine ---------------------------------------------------------------------


async def test_a_postgres_url_without_asyncpg_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if asyncpg were not installed: importing it fails.
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    monkeypatch.delitem(sys.modules, "wxcode_pty.store_postgres", raising=False)
    monkeypatch.delattr(wxcode_pty, "store_postgres", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"install wxcode-pty\[postgres\]"):
        await SessionStore.open("postgresql://127.0.0.1:1/none")


async def test_a_postgres_url_made_into_a_path_is_refused() -> None:
    with pytest.raises(ValueError, match="as a string"):
        await SessionStore.open(Path("postgresql://127.0.0.1:1/none"))
