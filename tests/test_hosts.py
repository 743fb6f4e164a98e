"""Several hosts on one PostgreSQL database (SPEC 12), as managers in one process: leases,
atomic claims, fencing tokens, handover, self-fencing. Real PostgreSQL, real PTYs.

The same scenarios through real server processes behind HAProxy are in ``test_cluster.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from wxcode_pty import PTYSessionManager
from wxcode_pty.manager import HostFenced, OwnedElsewhere
from wxcode_pty.session import PTYSession
from wxcode_pty.store import OwnershipLost, SessionRecord, SessionStatus, SessionStore

Factory = Callable[..., Awaitable[PTYSessionManager]]


def programs_in(folder: Path) -> list[int]:
    """Live processes whose working directory is ``folder``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") == str(folder):
                with open(f"/proc/{entry}/stat") as stat:
                    if stat.read().rpartition(")")[2].split()[0] != "Z":
                        found.append(int(entry))
        except OSError:
            continue
    return found


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)
    assert condition(), what


@pytest.fixture
def hosts(manager_factory: Factory, postgres_url: str) -> Factory:
    """Managers that share one database, each with its own advertised address."""

    async def make(name: str, lease: float = 2.0, **overrides: object) -> PTYSessionManager:
        return await manager_factory(
            database=overrides.pop("database", postgres_url),
            advertise_url=f"http://{name}.invalid:8765",
            host_lease=lease,
            **overrides,
        )

    return make


def record(project: str, cwd: Path) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        output_project_id=project,
        session_id=uuid.uuid4().hex,
        kind="shell",
        argv=("cat",),
        cwd=str(cwd),
        status=SessionStatus.RUNNING,
        created_at=now,
        updated_at=now,
        last_activity=now,
    )


async def test_racing_hosts_start_one_program(hosts: Factory, tmp_path: Path) -> None:
    managers = [await hosts(name) for name in ("a", "b", "c")]
    calls = [managers[n % 3].ensure_session("p") for n in range(30)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    created = [r for r in results if isinstance(r, tuple) and r[1]]
    assert len(created) == 1, results
    session: PTYSession = created[0][0]
    owner = next(m for m in managers if m.get_session_by_output_project("p") is session)
    for result in results:
        if isinstance(result, tuple):
            assert result[0] is session
        else:
            assert isinstance(result, OwnedElsewhere), result
            assert result.address == owner.settings.advertise_url
    assert [m for m in managers if m.get_session_by_output_project("p")] == [owner]
    assert programs_in((tmp_path / "projects" / "p").resolve()) == [session.pid]


async def test_a_new_owner_fences_the_old_owners_writes(postgres_url: str, tmp_path: Path) -> None:
    store = await SessionStore.open(postgres_url)
    try:
        engine = store.shared
        assert engine is not None
        await engine.register_host("h1", "http://h1.invalid", 30, None)
        await engine.register_host("h2", "http://h2.invalid", 30, None)
        first = await store.claim(record("p", tmp_path), "h1", None, 0.0)
        assert first.epoch == 1
        row = await store.get("p")
        # h1 holds it: h2 may not take it.
        refused = await store.claim(record("p", tmp_path), "h2", row, 0.0)
        assert refused.epoch is None and refused.owner is not None
        assert refused.owner.owner_host == "h1" and refused.owner.address == "http://h1.invalid"
        # A claim made from a row that changed meanwhile is refused too (read it again).
        await engine.release_host("h1")
        stale = await store.claim(record("p", tmp_path), "h2", None, 0.0)
        assert stale.changed and stale.epoch is None
        second = await store.claim(record("p", tmp_path), "h2", row, 0.0)
        assert second.epoch == 2
        taken = await store.get("p")
        assert taken is not None
        with pytest.raises(OwnershipLost):
            await store.update_owned("p", ("h1", 1), status=SessionStatus.STOPPED, pid=None)
        assert await store.get("p") == taken
        await store.update_owned("p", ("h2", 2), pid=4242)
        after = await store.get("p")
        assert after is not None and after.pid == 4242
        # A lapsed lease never comes back: renewing it fails.
        connection = await engine.connect()
        try:
            assert not await engine.renew_host(connection, "h1", 30)
            assert await engine.renew_host(connection, "h2", 30)
        finally:
            await connection.close()
    finally:
        await store.close()


async def test_shutdown_hands_sessions_over_without_waiting_for_the_lease(
    hosts: Factory, tmp_path: Path
) -> None:
    lease = 60.0  # far longer than the test may take: only a handover can pass it
    a = await hosts("a", lease)
    projects = ["p1", "p2", "p3"]
    for project in projects:
        await a.ensure_session(project)
    b = await hosts("b", lease)
    await a.close_all()
    await wait_until(
        lambda: all(b.get_session_by_output_project(p) for p in projects), 15, "handed over"
    )
    for project in projects:
        session = b.get_session_by_output_project(project)
        assert session is not None and session.resumed
        assert programs_in((tmp_path / "projects" / project).resolve()) == [session.pid]
        info = await b.describe(project)
        assert info is not None and info["host"] == "http://b.invalid:8765"
    assert b.counters["takeovers"] == 3


@pytest.fixture
async def login_of_its_own(
    postgres_url: str,
) -> AsyncIterator[tuple[str, Callable[[], Awaitable[None]]]]:
    """A database URL with a role of its own, and a function that cuts that role off (no new
    connections, the current ones ended): a host that lost the database."""
    role = f"host_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'secret'")
    await admin.execute(f"GRANT ALL ON SCHEMA public TO {role}")
    parts = urlsplit(postgres_url)
    netloc = f"{role}:secret@{parts.hostname}:{parts.port}"
    url = urlunsplit(parts._replace(netloc=netloc))

    async def cut() -> None:
        await admin.execute(f"ALTER ROLE {role} NOLOGIN")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )

    try:
        yield url, cut
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await admin.close()


async def test_a_host_that_loses_the_database_ends_its_programs_before_a_peer_takes_them(
    hosts: Factory,
    postgres_url: str,
    login_of_its_own: tuple[str, Callable[[], Awaitable[None]]],
    tmp_path: Path,
) -> None:
    lease = 3.0
    b = await hosts("b", lease)  # migrates the schema; the role below gets rights on it
    url, cut = login_of_its_own
    admin = await asyncpg.connect(postgres_url)
    role = urlsplit(url).username
    await admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
    await admin.close()
    a = await hosts("a", lease, database=url)
    projects = ["q1", "q2"]
    ended: dict[str, float] = {}
    waits = []
    for project in projects:
        session = await a.get_or_create_session(project)

        async def note_end(session: PTYSession = session, project: str = project) -> None:
            await session.wait()
            ended[project] = time.clock_gettime(time.CLOCK_BOOTTIME)

        waits.append(asyncio.create_task(note_end()))
    await cut()
    cut_at = time.clock_gettime(time.CLOCK_BOOTTIME)
    await wait_until(lambda: len(ended) == len(projects), 0.8 * lease + 5, "a fenced itself")
    with pytest.raises(HostFenced):
        await a.ensure_session("q3")
    for project in projects:
        assert programs_in((tmp_path / "projects" / project).resolve()) == []
    await wait_until(
        lambda: all(b.get_session_by_output_project(p) for p in projects), 2 * lease + 10, "taken"
    )
    ticks = os.sysconf("SC_CLK_TCK")
    for project in projects:
        taken = b.get_session_by_output_project(project)
        assert taken is not None and taken.resumed
        # Ended before the lease could lapse, and before the peer started any program (the
        # kernel's start time of the peer's program, on the same boot clock).
        assert ended[project] - cut_at < lease
        assert max(ended.values()) < taken.pty.identity.start_time / ticks
    assert a.counters["fences"] == 1 and b.counters["takeovers"] == 2


async def test_a_host_ends_a_session_whose_row_names_another_owner(
    hosts: Factory, postgres_url: str
) -> None:
    a = await hosts("a", 2.0)
    session = await a.get_or_create_session("p")
    admin = await asyncpg.connect(postgres_url)
    try:
        # As a takeover that this host did not see coming would leave it (or a hand edit).
        await admin.execute(
            "UPDATE sessions SET owner_epoch = owner_epoch + 1 WHERE output_project_id = 'p'"
        )
    finally:
        await admin.close()
    await asyncio.wait_for(session.wait(), 10)
    assert a.get_session_by_output_project("p") is None
    row = await a.store.get("p")
    # Its writes were refused: the row still says running, for the owner it names.
    assert row is not None and row.status == SessionStatus.RUNNING


async def test_a_takeover_does_not_restart_a_session_stopped_meanwhile(
    hosts: Factory, tmp_path: Path
) -> None:
    a = await hosts("a", 60.0)
    b = await hosts("b", 60.0)
    await a.ensure_session("p")
    assert await a.close_session("p")
    assert a.lease is not None
    await a.lease.leave()  # a's lease ends: its rows are free to take
    # The scan saw "p" running a moment ago; the row says stopped now.
    await b._take_over(["p"])
    assert b.get_session_by_output_project("p") is None
    row = await b.store.get("p")
    assert row is not None and row.status == SessionStatus.STOPPED
    assert programs_in((tmp_path / "projects" / "p").resolve()) == []
