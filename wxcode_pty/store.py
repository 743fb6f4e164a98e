"""``SessionStore``: the session rows, in an SQLite file or a PostgreSQL database.

Owns the rows' shape (``SessionRecord``), the schema (numbered SQL files per engine, each
applied once, atomically with its version bookkeeping), every read and write of a row, and a
run's ordered writes (``RowWriter``). What :meth:`SessionStore.open` is given chooses the
engine: a path is an SQLite file (``store_sqlite``, the embedded default, one server per file),
a ``postgresql://`` URL a PostgreSQL database that several hosts share (``store_postgres``,
``pip install wxcode-pty[postgres]``). On either, a write is durable once it is acknowledged:
it survives a crash of the process and of the machine.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol
from urllib.parse import urlsplit

from .errors import WxcodePtyError
from .store_sqlite import SQLiteEngine

if TYPE_CHECKING:
    from .store_postgres import Claim, PostgresEngine

__all__ = [
    "MigrationError",
    "OwnershipLost",
    "RowWriter",
    "SessionRecord",
    "SessionStatus",
    "SessionStore",
    "StoreLocked",
    "default_migrations_dir",
]

log = logging.getLogger("wxcode_pty")

_MIGRATION_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")
_POSTGRES_SCHEMES: Final = ("postgresql", "postgres")


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


class OwnershipLost(WxcodePtyError):
    """A write of a run whose host no longer owns the row (another host took it over)."""


class StoreLocked(WxcodePtyError):
    """Another process (another server) has the SQLite database open."""


def _lock(path: Path) -> int:
    """An exclusive lock on ``<database>.lock``, held while the store is open."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(f"the database {path} is in use by another server") from None
    return fd


def default_migrations_dir(engine: Literal["sqlite", "postgresql"] = "sqlite") -> Path:
    """The migrations shipped in the wheel, or the repository's own folder in a checkout.

    SQLite's files are at the top of the folder, PostgreSQL's in ``postgresql/``.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if candidate.is_dir():
            return candidate if engine == "sqlite" else candidate / engine
    raise MigrationError(f"no migrations folder found next to {here}")


def _postgres_url(database: str | Path) -> str | None:
    """``database`` itself when it is a PostgreSQL URL, else None (an SQLite path)."""
    if isinstance(database, Path):
        if str(database).partition(":")[0].lower() in _POSTGRES_SCHEMES:
            # Path("postgresql://h/db") is "postgresql:/h/db": the URL cannot be recovered.
            # Not quoted back: the URL may hold a password.
            raise ValueError(
                "the database is a PostgreSQL URL made into a Path (which drops one '/' of"
                " '://'): give the URL as a string"
            )
        return None
    return database if urlsplit(database).scheme.lower() in _POSTGRES_SCHEMES else None


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


_COLUMNS: Final = tuple(f.name for f in fields(SessionRecord))


def _to_row(record: SessionRecord) -> tuple[Any, ...]:
    values = [getattr(record, name) for name in _COLUMNS]
    values[_COLUMNS.index("argv")] = json.dumps(list(record.argv))
    return tuple(values)


def _from_row(row: Iterable[Any]) -> SessionRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["argv"] = tuple(json.loads(values["argv"]))
    values["status"] = SessionStatus(values["status"])
    return SessionRecord(**values)


class _Engine(Protocol):
    """What the store needs of a database: rows in ``_COLUMNS`` order, one statement a write."""

    async def schema_version(self) -> int: ...

    async def migrate(self, number: int, name: str, script: str) -> None:
        """Apply ``script`` and record ``number`` in one transaction, unless already applied."""
        ...

    async def integrity_check(self) -> str: ...

    async def fetch_one(self, output_project_id: str) -> Iterable[Any] | None: ...

    async def fetch_all(self, status: str | None) -> list[Iterable[Any]]:
        """Rows (of ``status`` when given) ordered by project id, byte-wise."""
        ...

    async def upsert(self, row: Sequence[Any]) -> None: ...

    async def update(self, output_project_id: str, changes: Mapping[str, Any]) -> None: ...

    async def delete(self, output_project_id: str) -> None: ...

    async def close(self) -> None: ...


class SessionStore:
    """Persistence of session rows. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(
        self, engine: _Engine, lock_fd: int = -1, shared: PostgresEngine | None = None
    ) -> None:
        self._engine = engine
        self._lock_fd = lock_fd
        #: The PostgreSQL engine when several hosts may share this store, else None.
        self.shared = shared

    @classmethod
    async def open(cls, database: str | Path, migrations_dir: Path | None = None) -> SessionStore:
        """Open (creating an SQLite file if needed) and migrate ``database``.

        ``database`` is an SQLite file's path, or a ``postgresql://`` URL (a string).
        ``migrations_dir`` holds that engine's migration files (default: those shipped).
        Only one server may use an SQLite file (two would respawn the same sessions);
        several hosts share a PostgreSQL database by design.
        """
        url = _postgres_url(database)
        if url is not None:
            postgres = await _open_postgres(url)
            store = cls(postgres, shared=postgres)
            directory = migrations_dir or default_migrations_dir("postgresql")
        else:
            path = Path(database)
            lock_fd = await asyncio.to_thread(_lock, path)
            try:
                engine: _Engine = await SQLiteEngine.open(path, _COLUMNS)
            except BaseException:
                os.close(lock_fd)
                raise
            store = cls(engine, lock_fd)
            directory = migrations_dir or default_migrations_dir()
        try:
            await store._migrate(directory)
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        try:
            await self._engine.close()
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
            try:
                await self._engine.migrate(number, file.name, script)
            except Exception as exc:
                raise MigrationError(f"migration {file.name} failed: {exc}") from exc

    async def schema_version(self) -> int:
        """The number of the last migration applied."""
        return await self._engine.schema_version()

    async def integrity_check(self) -> str:
        """``"ok"``, or what is wrong with the stored data."""
        return await self._engine.integrity_check()

    # -- reads -------------------------------------------------------------------------------

    async def get(self, output_project_id: str) -> SessionRecord | None:
        row = await self._engine.fetch_one(output_project_id)
        return _from_row(row) if row is not None else None

    async def list(self, status: str | None = None) -> list[SessionRecord]:
        """Every row, or those of one status, ordered by project id."""
        return [_from_row(row) for row in await self._engine.fetch_all(status)]

    # -- writes ------------------------------------------------------------------------------
    # Each write is one statement, its own transaction, durable when it returns.

    async def put(self, record: SessionRecord) -> SessionRecord:
        """Insert or replace a whole row."""
        record = replace(record, updated_at=time.time())
        await self._engine.upsert(_to_row(record))
        return record

    async def update(self, output_project_id: str, **changes: Any) -> None:
        """Change some columns of a row (no-op when the row does not exist)."""
        await self._engine.update(output_project_id, _changes(changes))

    def _shared(self) -> PostgresEngine:
        if self.shared is None:
            raise ValueError("only a shared (PostgreSQL) store has hosts and owners")
        return self.shared

    async def update_owned(
        self,
        output_project_id: str,
        owner: tuple[str, int],
        *,
        timeout: float | None = None,
        **changes: Any,
    ) -> None:
        """:meth:`update` while ``owner`` (host id, epoch) holds the row; else OwnershipLost.
        ``timeout``: seconds before the write fails (default: the engine's)."""
        engine = self._shared()
        host_id, epoch = owner
        if not await engine.update_fenced(
            output_project_id, _changes(changes), host_id, epoch, timeout
        ):
            raise OwnershipLost(f"project {output_project_id} is no longer ours")

    async def claim(
        self, record: SessionRecord, host_id: str, seen: SessionRecord | None, grace: float
    ) -> Claim:
        """Write ``record`` as ``host_id``'s, atomically, unless another live host holds the
        row or the row is no longer ``seen`` (see ``PostgresEngine.claim``)."""
        engine = self._shared()
        record = replace(record, updated_at=time.time())
        return await engine.claim(
            _to_row(record), host_id, None if seen is None else seen.updated_at, grace
        )

    async def delete(self, output_project_id: str) -> None:
        await self._engine.delete(output_project_id)

    async def leftovers(self, machine: str) -> Sequence[SessionRecord]:
        """Rows left running by hosts gone from ``machine`` (a shared store)."""
        engine = self._shared()
        return [_from_row(row) for row in await engine.leftovers(machine)]

    def row_writer(
        self,
        output_project_id: str,
        owner: tuple[str, int] | None = None,
        timeout: float | None = None,
    ) -> RowWriter:
        """Ordered writes to one project's row, for the session that runs it; with ``owner``
        (host id, epoch), each write lands only while that owner holds the row, and fails
        after ``timeout`` seconds (a host cut off from the database must not wait long)."""
        return RowWriter(self, output_project_id, owner, timeout)


def _changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Columns to write, checked, in the engines' form, with ``updated_at``."""
    unknown = set(changes) - set(_COLUMNS)
    if unknown or "output_project_id" in changes:
        raise ValueError(f"cannot update columns {sorted(unknown) or ['output_project_id']}")
    if "argv" in changes:
        changes["argv"] = json.dumps(list(changes["argv"]))
    changes["updated_at"] = time.time()
    return changes


async def _open_postgres(url: str) -> PostgresEngine:
    try:
        from . import store_postgres
    except ModuleNotFoundError as exc:
        if exc.name != "asyncpg":
            raise
        raise ModuleNotFoundError(
            "a postgresql:// database needs asyncpg: install wxcode-pty[postgres]",
            name="asyncpg",
        ) from None
    return await store_postgres.PostgresEngine.open(url, _COLUMNS)


class RowWriter:
    """The writes of one running session to its row, applied in the order they were made.

    ``write`` is awaited by a caller that needs the write done; ``record`` is for callers that
    must not wait (the output path learning a new Claude id): it takes its place in the same
    order, and a failure is logged. ``flush`` waits for everything queued: a session flushes
    before it says it has ended, so that no write of its lands after a later one
    (``DELETE ?forget=1``) or after the store is closed. One write is in flight at a time,
    acknowledged before the next starts: the order holds over a pool of connections too.
    """

    def __init__(
        self,
        store: SessionStore,
        output_project_id: str,
        owner: tuple[str, int] | None = None,
        timeout: float | None = None,
    ) -> None:
        self._store = store
        self._project = output_project_id
        self._owner = owner
        self._timeout = timeout
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
        if self._owner is None:
            await self._store.update(self._project, **changes)
        else:
            await self._store.update_owned(
                self._project, self._owner, timeout=self._timeout, **changes
            )

    def _log_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("storing a change of project=%s failed: %s", self._project, task.exception())
