"""The PostgreSQL engine of ``SessionStore``, through asyncpg: one database, several hosts.

A small pool of connections. Each write is one statement, its own transaction, and is on the
server's disk when it is acknowledged: ``synchronous_commit`` is never ``off`` on our
connections, whatever the server, a role, the database or the URL says. Migrations run one
transaction each, together with their row in ``wxcode_pty_migrations``, under an advisory
lock: hosts that start together apply each migration exactly once. A lost connection fails
the statement in flight (asyncpg's exception; whether that write happened is unknown) and the
pool connects anew for the next one; a statement that gets no answer fails after
``STATEMENT_TIMEOUT``. Takes no lock on the database: who runs which session is decided
elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

__all__ = ["STATEMENT_TIMEOUT", "Claim", "Owner", "PostgresEngine"]

#: Seconds a read or write may take before it fails (a dead peer, a stuck server).
STATEMENT_TIMEOUT: Final = 30.0
#: Seconds to wait for a new connection.
CONNECT_TIMEOUT: Final = 10.0
#: The pool: one connection kept, a few more under load (writes are rare and short).
POOL_MIN: Final = 1
POOL_MAX: Final = 5
#: Seconds a graceful close of the pool may take.
CLOSE_TIMEOUT: Final = 5.0
#: Seconds a claim waits for another host's lock on a row.
LOCK_TIMEOUT: Final = 10.0
#: The advisory lock key of migrations ("wxcpty"), one per database.
MIGRATION_LOCK: Final = 0x777863707479

_BOOKKEEPING: Final = """
CREATE TABLE wxcode_pty_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

_ONLY_SEQUENTIAL_SCANS: Final = (
    "SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off;"
    " SET LOCAL enable_bitmapscan = off"
)
_ONLY_INDEX_SCANS: Final = (
    "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
    " SET LOCAL enable_indexscan = on; SET LOCAL enable_indexonlyscan = on; SET LOCAL jit = off"
)


async def _connect_settings(url: str) -> dict[str, str]:
    """Startup parameters for our connections, fixed at open: the setting in force, or "on"
    where it is "off" (the only value that acknowledges a commit before flushing it).

    Given at connect, not SET afterwards: the pool's ``RESET ALL`` on every release would undo
    a SET (and the crash test then loses acknowledged writes)."""
    probe = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    try:
        setting = await probe.fetchval("SHOW synchronous_commit")
    finally:
        await probe.close()
    return {
        "synchronous_commit": "on" if setting == "off" else str(setting),
        # A host that vanishes (no FIN, no RST) must not hold row locks for the kernel's
        # default two hours of keepalive silence, nor a transaction open for ever.
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
        "idle_in_transaction_session_timeout": "30s",
    }


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a project's row: a host, the row's fencing epoch, and how alive it is."""

    owner_host: str | None
    owner_epoch: int
    #: Where the owner takes requests (None: unknown, or its lease has run out).
    address: str | None
    #: The owner's lease runs.
    live: bool
    #: The lease runs, or ran out less than the grace ago: nobody may take the row yet.
    held: bool


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim came to: an epoch (ours now), or why not."""

    epoch: int | None = None
    #: Another host holds the row.
    owner: Owner | None = None
    #: The row changed since the caller read it: read it again.
    changed: bool = False
    #: Our own lease has run out: we may not take anything.
    lost_lease: bool = False


class PostgresEngine:
    """Rows of the ``sessions`` table, read and written as tuples in ``columns`` order."""

    def __init__(
        self,
        url: str,
        settings: dict[str, str],
        pool: asyncpg.Pool[asyncpg.Record],
        columns: tuple[str, ...],
    ) -> None:
        self._url = url
        self._settings = settings
        self._pool = pool
        self._columns = columns
        names = ", ".join(columns)
        self._select = f"SELECT {names} FROM sessions"
        self._select_joined = (
            f"SELECT {', '.join(f's.{c}' for c in columns)} FROM sessions s"
            " JOIN hosts h ON h.host_id = s.owner_host"
        )
        placeholders = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        replace_all = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != "output_project_id")
        self._upsert = (
            f"INSERT INTO sessions ({names}) VALUES ({placeholders})"
            f" ON CONFLICT (output_project_id) DO UPDATE SET {replace_all}"
        )
        owner, epoch = len(columns) + 1, len(columns) + 2
        self._insert = (
            f"INSERT INTO sessions ({names}, owner_host, owner_epoch)"
            f" VALUES ({placeholders}, ${owner}, ${epoch})"
        )
        self._claim = (
            f"{self._upsert}, owner_host = ${owner}, owner_epoch = sessions.owner_epoch + 1"
            " RETURNING owner_epoch"
        )

    @classmethod
    async def open(cls, url: str, columns: tuple[str, ...]) -> PostgresEngine:
        settings = await _connect_settings(url)
        pool = await asyncpg.create_pool(
            url,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            timeout=CONNECT_TIMEOUT,
            # A claim waits for a row lock at most this long (its holder may be gone).
            server_settings={**settings, "lock_timeout": f"{int(LOCK_TIMEOUT * 1000)}ms"},
        )
        assert pool is not None  # typed optional by some asyncpg-stubs versions
        return cls(url, settings, pool, columns)

    async def close(self) -> None:
        try:
            # A graceful close waits for each connection's goodbye, which a database cut off
            # without a word never answers: then the connections are dropped.
            await asyncio.wait_for(self._pool.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            self._pool.terminate()

    async def schema_version(self) -> int:
        async with self._pool.acquire() as connection:
            return await self._applied(connection)

    @staticmethod
    async def _applied(
        connection: asyncpg.Connection[asyncpg.Record]
        | asyncpg.pool.PoolConnectionProxy[asyncpg.Record],
    ) -> int:
        if await connection.fetchval("SELECT to_regclass('wxcode_pty_migrations')") is None:
            return 0
        version = await connection.fetchval(
            "SELECT coalesce(max(version), 0) FROM wxcode_pty_migrations"
        )
        return int(version)

    async def migrate(self, number: int, name: str, script: str) -> None:
        # A connection of its own: closing it releases the lock, whatever happened.
        connection = await asyncpg.connect(
            self._url, timeout=CONNECT_TIMEOUT, server_settings=self._settings
        )
        try:
            # Locked before the transaction begins: PostgreSQL refreshes its catalog caches at
            # BEGIN, so the transaction sees the tables the host before us created. (Locked
            # inside it, a host that waited still saw no bookkeeping table, and failed.)
            await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            async with connection.transaction():
                applied = await self._applied(connection)
                if applied >= number:
                    return  # another host applied it while we waited
                if applied != number - 1:
                    raise RuntimeError(f"the database is at version {applied}, not {number - 1}")
                if applied == 0:
                    await connection.execute(_BOOKKEEPING)
                # No arguments: the simple query protocol, which runs several statements.
                await connection.execute(script)
                await connection.execute(
                    "INSERT INTO wxcode_pty_migrations (version, name) VALUES ($1, $2)",
                    number,
                    name,
                )
        finally:
            await connection.close()

    async def integrity_check(self) -> str:
        """Whether the table and an index of it count the same rows.

        PostgreSQL keeps itself consistent through its WAL; a mismatch here means damaged
        storage (``pg_amcheck`` checks deeper).
        """
        async with (
            self._pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            # SET LOCAL: the settings end with the transaction, not with the pooled connection.
            await connection.execute(_ONLY_SEQUENTIAL_SCANS)
            in_table = await connection.fetchval("SELECT count(*) FROM sessions")
            await connection.execute(_ONLY_INDEX_SCANS)
            in_index = await connection.fetchval("SELECT count(*) FROM sessions")
        if in_table != in_index:
            return f"sessions holds {in_table} rows, its index {in_index}"
        return "ok"

    async def fetch_one(self, output_project_id: str) -> Iterable[Any] | None:
        return await self._pool.fetchrow(
            f"{self._select} WHERE output_project_id = $1",
            output_project_id,
            timeout=STATEMENT_TIMEOUT,
        )

    async def fetch_all(self, status: str | None) -> list[Iterable[Any]]:
        # COLLATE "C": byte order, as SQLite's, whatever the database's locale.
        order = 'ORDER BY output_project_id COLLATE "C"'
        if status is None:
            return list(
                await self._pool.fetch(f"{self._select} {order}", timeout=STATEMENT_TIMEOUT)
            )
        return list(
            await self._pool.fetch(
                f"{self._select} WHERE status = $1 {order}", status, timeout=STATEMENT_TIMEOUT
            )
        )

    async def upsert(self, row: Sequence[Any]) -> None:
        await self._pool.execute(self._upsert, *row, timeout=STATEMENT_TIMEOUT)

    async def update(self, output_project_id: str, changes: Mapping[str, Any]) -> None:
        assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(changes, start=1))
        await self._pool.execute(
            f"UPDATE sessions SET {assignments} WHERE output_project_id = ${len(changes) + 1}",
            *changes.values(),
            output_project_id,
            timeout=STATEMENT_TIMEOUT,
        )

    async def delete(self, output_project_id: str) -> None:
        await self._pool.execute(
            "DELETE FROM sessions WHERE output_project_id = $1",
            output_project_id,
            timeout=STATEMENT_TIMEOUT,
        )

    # -- several hosts (SPEC 12) ----------------------------------------------------------------
    # Leases are judged by the database's clock (now()), never by comparing hosts' clocks.

    async def register_host(
        self, host_id: str, address: str | None, lease: float, machine: str | None
    ) -> None:
        await self._pool.execute(
            "INSERT INTO hosts (host_id, address, lease_until, machine)"
            " VALUES ($1, $2, now() + make_interval(secs => $3), $4)",
            host_id,
            address,
            lease,
            machine,
            timeout=STATEMENT_TIMEOUT,
        )

    async def leftovers(self, machine: str) -> list[Iterable[Any]]:
        """Rows marked running whose owner ran on ``machine`` and whose lease has lapsed."""
        return list(
            await self._pool.fetch(
                f"{self._select_joined} WHERE s.status = 'running' AND h.machine = $1"
                " AND h.lease_until < now()",
                machine,
                timeout=STATEMENT_TIMEOUT,
            )
        )

    async def renew_host(
        self, connection: asyncpg.Connection[asyncpg.Record], host_id: str, lease: float
    ) -> bool:
        """Extend a lease that has not lapsed; False when it had (it never comes back)."""
        status = await connection.execute(
            "UPDATE hosts SET lease_until = now() + make_interval(secs => $2)"
            " WHERE host_id = $1 AND lease_until > now()",
            host_id,
            lease,
        )
        return bool(status == "UPDATE 1")

    async def connect(self) -> asyncpg.Connection[asyncpg.Record]:
        """A connection outside the pool (a lease's renewals must not queue behind writes)."""
        return await asyncpg.connect(
            self._url, timeout=CONNECT_TIMEOUT, server_settings=self._settings
        )

    async def release_host(self, host_id: str) -> None:
        """End a lease at once: peers may take the host's sessions without waiting."""
        await self._pool.execute(
            "UPDATE hosts SET lease_until = '-infinity' WHERE host_id = $1",
            host_id,
            timeout=STATEMENT_TIMEOUT,
        )

    async def live_hosts(self) -> dict[str, str | None]:
        """Hosts whose lease runs, with their addresses."""
        rows = await self._pool.fetch(
            "SELECT host_id, address FROM hosts WHERE lease_until > now()",
            timeout=STATEMENT_TIMEOUT,
        )
        return {row["host_id"]: row["address"] for row in rows}

    async def forget_hosts(self, older_than: float) -> None:
        await self._pool.execute(
            "DELETE FROM hosts WHERE lease_until < now() - make_interval(secs => $1)",
            older_than,
            timeout=STATEMENT_TIMEOUT,
        )

    async def owner(self, output_project_id: str, grace: float) -> Owner | None:
        row = await self._pool.fetchrow(
            "SELECT s.owner_host, s.owner_epoch, h.address,"
            " coalesce(h.lease_until > now(), false) AS live,"
            " coalesce(h.lease_until > now() - make_interval(secs => $2), false) AS held"
            " FROM sessions s LEFT JOIN hosts h ON h.host_id = s.owner_host"
            " WHERE s.output_project_id = $1",
            output_project_id,
            grace,
            timeout=STATEMENT_TIMEOUT,
        )
        return None if row is None else Owner(**dict(row))

    async def owners(self) -> dict[str, str | None]:
        """Each project's owning host's address, for projects whose owner's lease runs."""
        rows = await self._pool.fetch(
            "SELECT s.output_project_id, h.address FROM sessions s"
            " JOIN hosts h ON h.host_id = s.owner_host WHERE h.lease_until > now()",
            timeout=STATEMENT_TIMEOUT,
        )
        return {row["output_project_id"]: row["address"] for row in rows}

    async def owned(self, host_id: str) -> dict[str, int]:
        """The projects whose rows name ``host_id`` as their owner, with their epochs."""
        rows = await self._pool.fetch(
            "SELECT output_project_id, owner_epoch FROM sessions WHERE owner_host = $1",
            host_id,
            timeout=STATEMENT_TIMEOUT,
        )
        return {row["output_project_id"]: row["owner_epoch"] for row in rows}

    async def orphans(self, grace: float) -> list[str]:
        """Projects marked running whose owner's lease lapsed more than ``grace`` ago."""
        rows = await self._pool.fetch(
            "SELECT s.output_project_id FROM sessions s"
            " LEFT JOIN hosts h ON h.host_id = s.owner_host"
            " WHERE s.status = 'running' AND (h.host_id IS NULL"
            " OR h.lease_until < now() - make_interval(secs => $1))"
            ' ORDER BY s.output_project_id COLLATE "C"',
            grace,
            timeout=STATEMENT_TIMEOUT,
        )
        return [row["output_project_id"] for row in rows]

    async def claim(
        self, row: Sequence[Any], host_id: str, seen: float | None, grace: float
    ) -> Claim:
        """Make ``host_id`` the owner of the row's project and write ``row``, atomically.

        ``seen`` is the ``updated_at`` of the row the caller built ``row`` from (None: there
        was none). The row is locked first; then, with a snapshot taken after the lock, the
        current owner's lease is read: whoever claimed the row before us is visible to it.
        """
        project = row[0]
        async with (
            self._pool.acquire(timeout=CONNECT_TIMEOUT) as connection,
            connection.transaction(),
        ):
            # clock_timestamp(), not now(): the row lock below may be waited for, and the
            # lease must hold when the claim is decided, not when the transaction began.
            mine = await connection.fetchval(
                "SELECT lease_until > clock_timestamp() FROM hosts WHERE host_id = $1", host_id
            )
            if not mine:
                return Claim(lost_lease=True)
            current = await connection.fetchrow(
                "SELECT owner_host, owner_epoch, updated_at FROM sessions"
                " WHERE output_project_id = $1 FOR UPDATE",
                project,
                timeout=STATEMENT_TIMEOUT,
            )
            if not await connection.fetchval(
                "SELECT lease_until > clock_timestamp() FROM hosts WHERE host_id = $1", host_id
            ):
                return Claim(lost_lease=True)
            if current is None:
                if seen is not None:
                    return Claim(changed=True)
                inserted = await connection.fetchval(
                    f"{self._insert} ON CONFLICT (output_project_id) DO NOTHING"
                    " RETURNING owner_epoch",
                    *row,
                    host_id,
                    1,
                    timeout=STATEMENT_TIMEOUT,
                )
                return Claim(epoch=inserted) if inserted is not None else Claim(changed=True)
            owner = current["owner_host"]
            if owner is not None and owner != host_id:
                holder = await connection.fetchrow(
                    "SELECT address, lease_until > clock_timestamp() AS live FROM hosts"
                    " WHERE host_id = $1"
                    " AND lease_until > clock_timestamp() - make_interval(secs => $2)",
                    owner,
                    grace,
                    timeout=STATEMENT_TIMEOUT,
                )
                if holder is not None:
                    address = holder["address"] if holder["live"] else None
                    return Claim(
                        owner=Owner(owner, current["owner_epoch"], address, holder["live"], True)
                    )
            if seen is None or current["updated_at"] != seen:
                return Claim(changed=True)
            epoch = await connection.fetchval(self._claim, *row, host_id, timeout=STATEMENT_TIMEOUT)
            return Claim(epoch=epoch)

    async def update_fenced(
        self,
        output_project_id: str,
        changes: Mapping[str, Any],
        owner: str,
        epoch: int,
        timeout: float | None = None,
    ) -> bool:
        """``update``, only while ``owner`` holds the row at ``epoch``; whether it did."""
        assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(changes, start=1))
        n = len(changes)
        status = await self._pool.execute(
            f"UPDATE sessions SET {assignments} WHERE output_project_id = ${n + 1}"
            f" AND owner_host = ${n + 2} AND owner_epoch = ${n + 3}",
            *changes.values(),
            output_project_id,
            owner,
            epoch,
            timeout=timeout or STATEMENT_TIMEOUT,
        )
        return bool(status == "UPDATE 1")
