"""The SQLite engine of ``SessionStore``: one file, one aiosqlite connection.

The database runs in WAL mode with ``synchronous=FULL``: an acknowledged write survives a crash
of the process or the machine. Each write is a single statement in autocommit mode, its own
transaction; a migration runs in ``BEGIN IMMEDIATE`` with its ``PRAGMA user_version`` bump.
Owns no policy: the lock file that keeps a second server away is the store's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

__all__ = ["SQLiteEngine"]


class SQLiteEngine:
    """Rows of the ``sessions`` table, read and written as tuples in ``columns`` order."""

    def __init__(self, db: aiosqlite.Connection, columns: tuple[str, ...]) -> None:
        self._db = db
        self._columns = columns
        self._select = f"SELECT {', '.join(columns)} FROM sessions"
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, columns: tuple[str, ...]) -> SQLiteEngine:
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            await db.close()
            raise
        return cls(db, columns)

    async def close(self) -> None:
        await self._db.close()

    async def schema_version(self) -> int:
        rows = await self._query("PRAGMA user_version")
        return int(rows[0][0]) if rows else 0

    async def migrate(self, number: int, name: str, script: str) -> None:
        async with self._write_lock:
            try:
                # user_version is transactional: the schema and its number move together.
                await self._db.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\n;PRAGMA user_version = {number};\nCOMMIT;"
                )
            except Exception:
                # A script that fails midway leaves its transaction open.
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise

    async def integrity_check(self) -> str:
        rows = await self._query("PRAGMA integrity_check")
        return str(rows[0][0]) if rows else "no answer"

    async def fetch_one(self, output_project_id: str) -> Iterable[Any] | None:
        sql = f"{self._select} WHERE output_project_id = ?"
        rows = await self._query(sql, (output_project_id,))
        return rows[0] if rows else None

    async def fetch_all(self, status: str | None) -> list[Iterable[Any]]:
        where, params = ("", ()) if status is None else (" WHERE status = ?", (status,))
        sql = f"{self._select}{where} ORDER BY output_project_id"
        return await self._query(sql, params)

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        # One round trip to the database thread (a cursor's execute, fetch and close are three).
        return list(await self._db.execute_fetchall(sql, params))

    async def upsert(self, row: Sequence[Any]) -> None:
        placeholders = ", ".join("?" for _ in self._columns)
        sql = (
            f"INSERT OR REPLACE INTO sessions ({', '.join(self._columns)}) VALUES ({placeholders})"
        )
        await self._write(sql, tuple(row))

    async def update(self, output_project_id: str, changes: Mapping[str, Any]) -> None:
        assignments = ", ".join(f"{name} = ?" for name in changes)
        sql = f"UPDATE sessions SET {assignments} WHERE output_project_id = ?"
        await self._write(sql, (*changes.values(), output_project_id))

    async def delete(self, output_project_id: str) -> None:
        await self._write("DELETE FROM sessions WHERE output_project_id = ?", (output_project_id,))

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        # Every write is one statement: in autocommit mode that is its own transaction, which
        # takes the write lock at once (no read-then-write upgrade to fail) and is durable when
        # it returns. One round trip to the database thread instead of three.
        async with self._write_lock:
            await self._db.execute(sql, params)
