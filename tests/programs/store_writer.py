"""Writes rows through SessionStore in a loop and prints each write once it is acknowledged.

The database is the first argument: an SQLite path or a postgresql:// URL.

Used by the crash test: the parent kills this process with SIGKILL at a random moment and then
checks that every acknowledged write is in the database.
"""

from __future__ import annotations

import asyncio
import sys
import time

from wxcode_pty.store import SessionRecord, SessionStatus, SessionStore


async def main(database: str, prefix: str) -> None:
    store = await SessionStore.open(database)
    print("open", flush=True)
    n = 0
    while True:
        now = time.time()
        project = f"{prefix}-{n}"
        await store.put(
            SessionRecord(
                output_project_id=project,
                session_id=f"s{n}",
                kind="shell",
                argv=("cat",),
                cwd="/tmp",
                status=SessionStatus.RUNNING,
                created_at=now,
                updated_at=now,
                last_activity=now,
            )
        )
        await store.update(project, claude_session_id=f"c{n}", status=SessionStatus.IDLE)
        print(project, flush=True)
        n += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
