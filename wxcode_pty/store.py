"""``SessionStore``: session rows in SQLite, through one aiosqlite connection.

Owns the schema (numbered SQL files in ``migrations/``, each applied with its
``PRAGMA user_version`` bump in one transaction) and every read and write of a row. The
database runs in WAL mode with ``synchronous=FULL``: an acknowledged write survives a crash of
the process or the machine. Each write is a single statement, its own transaction; a
migration runs in ``BEGIN IMMEDIATE`` with its version bump.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiosqlite

from .errors import WxcodePtyError

__all__ = [
    "MigrationError",
    "RowWriter",
    "SessionRecord",
    "SessionStatus",
    "SessionStore",
    "StoreLocked",
    "default_migrations_dir",
]

log = logging.getLogger("wxcode_pty")

_MIGRATION_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")


class SessionStatus(StrEnum):
    """What a row says of its project's program (SPEC section 9)."""

    #: Running, or left running by a server that stopped: the next start respawns it.
    RUNNING = "running"
    #: Ended by the idle reaper; the next attach resumes it.
    IDLE = "idle"
    #: The program exited by itself.
    EXITED = "exited"
    #: Ended on request (DELETE).
    STOPPED = "stopped"
    #: It could not be started, or kept dying right after start; ``status_reason`` says why.
    FAILED = "failed"


class MigrationError(WxcodePtyError):
    """A migration file is misnamed or failed; the database is left at the last good version."""


class StoreLocked(WxcodePtyError):
    """Another process (another server) has the database open."""


def _lock(path: Path) -> int:
    """An exclusive lock on ``<database>.lock``, held while the store is open."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(f"the database {path} is in use by another server") from None
    return fd


def default_migrations_dir() -> Path:
    """The migrations shipped in the wheel, or the repository's own folder in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise MigrationError(f"no migrations folder found next to {here}")


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One stored row: what an output project runs and how it last ended."""

    output_project_id: str
    session_id: str
    kind: str
    argv: tuple[str, ...]
    cwd: str
    status: SessionStatus
    created_at: float
    updated_at: float
    last_activity: float
    claude_session_id: str | None = None
    status_reason: str | None = None
    pid: int | None = None
    pid_start_time: int | None = None
    exit_code: int | None = None
    exit_signal: str | None = None
    cols: int = 80
    rows: int = 24
    spawn_count: int = 0


_COLUMNS = tuple(f.name for f in fields(SessionRecord))


def _to_row(record: SessionRecord) -> tuple[Any, ...]:
    values = [getattr(record, name) for name in _COLUMNS]
    values[_COLUMNS.index("argv")] = json.dumps(list(record.argv))
    return tuple(values)


def _from_row(row: Iterable[Any]) -> SessionRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["argv"] = tuple(json.loads(values["argv"]))
    values["status"] = SessionStatus(values["status"])
    return SessionRecord(**values)


class SessionStore:
    """Persistence of session rows. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, db: aiosqlite.Connection, path: Path, lock_fd: int) -> None:
        self._db = db
        self.path = path
        self._lock_fd = lock_fd
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path, migrations_dir: Path | None = None) -> SessionStore:
        """Open (creating if needed) and migrate the database at ``path``.

        Only one server may use a database: two would respawn the same sessions.
        """
        path = Path(path)
        lock_fd = await asyncio.to_thread(_lock, path)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except BaseException:
            os.close(lock_fd)
            raise
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("PRAGMA foreign_keys=ON")
            store = cls(db, path, lock_fd)
            await store._migrate(migrations_dir or default_migrations_dir())
        except BaseException:
            await db.close()
            os.close(lock_fd)
            raise
        return store

    async def close(self) -> None:
        try:
            await self._db.close()
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    async def _migrate(self, directory: Path) -> None:
        migrations: list[tuple[int, Path]] = []
        files = await asyncio.to_thread(lambda: sorted(directory.glob("*.sql")))
        for file in files:
            match = _MIGRATION_NAME.match(file.name)
            if match is None:
                raise MigrationError(f"migration file name must be NNNN_name.sql: {file.name}")
            migrations.append((int(match.group(1)), file))
        numbers = [n for n, _ in migrations]
        if numbers != list(range(1, len(numbers) + 1)):
            raise MigrationError(
                f"migrations must be numbered 0001, 0002, ... without gaps: {numbers}"
            )
        version = await self.schema_version()
        for number, file in migrations:
            if number <= version:
                continue
            script = await asyncio.to_thread(file.read_text, encoding="utf-8")
            async with self._write_lock:
                try:
                    # user_version is transactional: the schema and its number move together.
                    await self._db.executescript(
                        f"BEGIN IMMEDIATE;\n{script}\n;PRAGMA user_version = {number};\nCOMMIT;"
                    )
                except Exception as exc:
                    if self._db.in_transaction:
                        await self._db.execute("ROLLBACK")
                    raise MigrationError(f"migration {file.name} failed: {exc}") from exc

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def integrity_check(self) -> str:
        async with self._db.execute("PRAGMA integrity_check") as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else "no answer"

    # -- reads -------------------------------------------------------------------------------

    async def get(self, output_project_id: str) -> SessionRecord | None:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM sessions WHERE output_project_id = ?"
        async with self._db.execute(sql, (output_project_id,)) as cursor:
            row = await cursor.fetchone()
        return _from_row(row) if row else None

    async def list(self, status: str | None = None) -> list[SessionRecord]:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM sessions"
        params: tuple[str, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            params = (status,)
        async with self._db.execute(sql + " ORDER BY output_project_id", params) as cursor:
            rows = await cursor.fetchall()
        return [_from_row(row) for row in rows]

    # -- writes ------------------------------------------------------------------------------

    async def put(self, record: SessionRecord) -> SessionRecord:
        """Insert or replace a whole row."""
        record = replace(record, updated_at=time.time())
        placeholders = ", ".join("?" for _ in _COLUMNS)
        sql = f"INSERT OR REPLACE INTO sessions ({', '.join(_COLUMNS)}) VALUES ({placeholders})"
        await self._write(sql, _to_row(record))
        return record

    async def update(self, output_project_id: str, **changes: Any) -> None:
        """Change some columns of a row (no-op when the row does not exist)."""
        unknown = set(changes) - set(_COLUMNS)
        if unknown or "output_project_id" in changes:
            raise ValueError(f"cannot update columns {sorted(unknown) or ['output_project_id']}")
        if "argv" in changes:
            changes["argv"] = json.dumps(list(changes["argv"]))
        changes["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in changes)
        sql = f"UPDATE sessions SET {assignments} WHERE output_project_id = ?"
        await self._write(sql, (*changes.values(), output_project_id))

    async def delete(self, output_project_id: str) -> None:
        await self._write("DELETE FROM sessions WHERE output_project_id = ?", (output_project_id,))

    def row_writer(self, output_project_id: str) -> RowWriter:
        """Ordered writes to one project's row, for the session that runs it."""
        return RowWriter(self, output_project_id)

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        # Every write is one statement: in autocommit mode that is its own transaction, which
        # takes the write lock at once (no read-then-write upgrade to fail) and is durable when
        # it returns. One round trip to the database thread instead of three.
        async with self._write_lock:
            await self._db.execute(sql, params)


class RowWriter:
    """The writes of one running session to its row, applied in the order they were made.

    ``write`` is awaited by a caller that needs the write done; ``record`` is for callers that
    must not wait (the output path learning a new Claude id): it takes its place in the same
    order, and a failure is logged. ``flush`` waits for everything queued: a session flushes
    before it says it has ended, so that no write of its lands after a later one
    (``DELETE ?forget=1``) or after the store is closed.
    """

    def __init__(self, store: SessionStore, output_project_id: str) -> None:
        self._store = store
        self._project = output_project_id
        self._last: asyncio.Task[None] | None = None
        self._queued: set[asyncio.Task[None]] = set()

    async def write(self, **changes: Any) -> None:
        """Apply ``changes`` once every earlier write is done; raises what the store raises."""
        await asyncio.shield(self._enqueue(changes))

    def record(self, **changes: Any) -> None:
        """Queue ``changes`` behind the earlier writes without waiting for them."""
        self._enqueue(changes).add_done_callback(self._log_failure)

    async def flush(self) -> None:
        """Wait until every write made so far is done (failed ones included)."""
        while self._queued:
            await asyncio.wait(set(self._queued))

    def _enqueue(self, changes: dict[str, Any]) -> asyncio.Task[None]:
        # The place in the order is taken here, synchronously, not when the task first runs.
        task = asyncio.get_running_loop().create_task(self._apply(self._last, changes))
        self._last = task
        self._queued.add(task)
        task.add_done_callback(self._queued.discard)
        return task

    async def _apply(self, previous: asyncio.Task[None] | None, changes: dict[str, Any]) -> None:
        if previous is not None:
            await asyncio.wait({previous})  # its failure is its caller's, not ours
        await self._store.update(self._project, **changes)

    def _log_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("storing a change of project=%s failed: %s", self._project, task.exception())
