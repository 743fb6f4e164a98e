"""``PTYSessionManager``: the registry of sessions, one per output project.

Finds, limits and lists sessions; starts a project's session when none runs (race-free: one
spawn per project however many callers ask at once); reaps idle sessions; at start, ends what a
previous server left running and respawns it; at shutdown, ends every session. What happens
inside one session's run (its program, retries, clients, its row) is the session's own
business (``session.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from . import proctree
from .claude import ClaudeCommand
from .commands import CommandProfile, ShellCommand
from .errors import WxcodePtyError
from .hosts import HostFenced, HostLease
from .pty import BidirectionalPTY, ExitStatus, ReadBudget, SpawnError
from .session import CloseReason, PTYSession
from .settings import Settings, valid_project_id
from .store import OwnershipLost, SessionRecord, SessionStatus, SessionStore

if TYPE_CHECKING:
    from .store_postgres import Owner

__all__ = [
    "HostFenced",
    "InvalidProjectId",
    "OwnedElsewhere",
    "PTYSessionManager",
    "SessionInfo",
    "SessionLimitReached",
    "ShuttingDown",
    "check_project_id",
]

log = logging.getLogger("wxcode_pty")


class InvalidProjectId(WxcodePtyError, ValueError):
    """The output project id does not match ``^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$``."""


class SessionLimitReached(WxcodePtyError):
    """``Settings.max_sessions`` sessions are running already."""


class ShuttingDown(WxcodePtyError):
    """The server is shutting down: no session is started any more."""


class NotRunning(WxcodePtyError):
    """A takeover found the row no longer marked running (stopped meanwhile)."""


class OwnedElsewhere(WxcodePtyError):
    """Another host owns the project (a shared store): requests go to ``address``, its
    advertised URL, or, when that is None (the owner gave none, or its lease is lapsing),
    nowhere yet."""

    def __init__(self, output_project_id: str, address: str | None) -> None:
        where = address or "no address yet"
        super().__init__(f"project {output_project_id} runs on another host ({where})")
        self.address = address


def check_project_id(output_project_id: str) -> str:
    """``output_project_id`` itself, or InvalidProjectId: checked before any lookup or spawn."""
    if not valid_project_id(output_project_id):
        raise InvalidProjectId("output project id must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    return output_project_id


class SessionInfo(TypedDict):
    """A session as the API shows it (SPEC section 9)."""

    session_id: str
    output_project_id: str
    claude_session_id: str | None
    claude_state: str | None
    claude_state_detail: str | None
    claude_state_since: float | None
    kind: str
    status: str
    status_reason: str | None
    pid: int | None
    cols: int
    rows: int
    clients: int
    created_at: float
    last_activity: float
    exit_code: int | None
    exit_signal: str | None
    #: The owning host's advertised URL (several hosts), else this host's (or None).
    host: str | None


def _make_dir(path: Path) -> Path:
    """Create ``path`` if needed and return its real path (one trip to a worker thread)."""
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _old_tree(row: SessionRecord) -> proctree.Tree:
    """What may be left of a row's previous run: its program (pid plus start time, never a
    reused pid) and anything carrying its marker."""
    root = None
    if row.pid is not None and row.pid_start_time is not None:
        root = proctree.ProcessId(row.pid, row.pid_start_time)
    return root, row.session_id


class PTYSessionManager:
    """Creates, finds, reaps and recovers sessions. One per mounted plugin."""

    def __init__(self, settings: Settings, store: SessionStore) -> None:
        self.settings = settings
        self.store = store
        self.counters: Counter[str] = Counter()
        self._by_project: dict[str, PTYSession] = {}
        self._by_id: dict[str, PTYSession] = {}
        self._starting: dict[str, asyncio.Task[PTYSession]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._closed = False
        #: Runs of a previous server whose processes recovery already ended.
        self._swept: set[str] = set()
        #: Shared by all sessions: floods take turns instead of starving the loop.
        self._read_budget = ReadBudget()
        #: Closes started by the ownership check, kept until they finish.
        self._tasks: set[asyncio.Task[None]] = set()
        #: Every session whose program may run, starting ones included (the fence ends them).
        self._runs: set[PTYSession] = set()
        #: On a shared store: the (host id, epoch) under which each running session was claimed.
        self._owners: dict[str, tuple[str, int]] = {}
        #: This host's lease when the store is shared by several hosts (SPEC 12).
        self.lease: HostLease | None = None
        if store.shared is not None:
            self.lease = HostLease(
                store.shared,
                address=settings.advertise_url,
                lease=settings.host_lease,
                on_fence=self._fence,
                on_orphans=self._take_over,
                on_owned=self._check_owned,
            )

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Recover the rows a previous server left running, and start the idle reaper.

        On a shared store, join the hosts instead: the rows of hosts that are gone are taken
        over as their leases lapse (``hosts.py``), this host's previous run's included.
        """
        if self.lease is not None:
            await self.lease.join()
            await self._end_leftovers()
        else:
            self._recovery = asyncio.create_task(self._recover())
            await asyncio.shield(self._recovery)
        self._reaper = asyncio.create_task(self._reap_forever())

    async def _recover(self) -> None:
        rows = await self.store.list(status=SessionStatus.RUNNING)
        if not rows:
            return
        log.info("recovery: %d session(s) were running", len(rows))
        # The old trees go first, all together: a respawn must never run beside its
        # predecessor.
        await self._sweep(rows)
        if not self.settings.respawn_on_start:
            return
        results = await asyncio.gather(
            *(self.ensure_session(row.output_project_id) for row in rows), return_exceptions=True
        )
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("respawn of %s failed: %s", row.output_project_id, result)

    async def _end_leftovers(self) -> None:
        """On a shared store: end what hosts killed on this machine left running (programs
        that ignored the hangup), before a peer or this host starts those sessions again."""
        assert self.lease is not None
        if self.lease.machine is None:
            return
        await self._sweep(await self.store.leftovers(self.lease.machine))

    async def _sweep(self, rows: Sequence[SessionRecord]) -> None:
        """End what is left of these rows' previous runs, all trees together."""
        if not rows:
            return
        ended = await proctree.end_trees(
            [_old_tree(row) for row in rows], grace=self.settings.kill_grace
        )
        for row, processes in zip(rows, ended, strict=True):
            if processes:
                log.info(
                    "ended %d process(es) left from project=%s",
                    len(processes),
                    row.output_project_id,
                )
        self._swept.update(row.session_id for row in rows)

    @property
    def accepting(self) -> bool:
        """False once shutdown has begun: no session is started any more."""
        return not self._closed

    def stop_accepting(self) -> None:
        """Shutdown begins (the host's ``on_shutdown``): refuse new sessions from now on."""
        self._closed = True

    async def close_all(self) -> None:
        """Shutdown: end every tree but keep running rows marked for recovery."""
        self._closed = True
        for background in (self._reaper, self._recovery):
            if background is not None and not background.done():
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        for starting in list(self._starting.values()):
            with contextlib.suppress(Exception):
                await starting
        await self._end_many(list(self._by_project.values()), CloseReason.SHUTDOWN)
        if self.lease is not None:
            # After the programs ended: peers take the rows over at once, not after the lease.
            await self.lease.leave()

    # -- lookup ------------------------------------------------------------------------------

    def get_session(self, session_id: str) -> PTYSession | None:
        return self._by_id.get(session_id)

    def get_session_by_output_project(self, output_project_id: str) -> PTYSession | None:
        return self._by_project.get(output_project_id)

    @property
    def sessions(self) -> list[PTYSession]:
        return list(self._by_project.values())

    async def list_sessions(self) -> list[SessionInfo]:
        """Every known session, running or not, ordered by project id."""
        rows = await self.store.list()
        owners = await self.store.shared.owners() if self.store.shared is not None else {}
        return [self._info(row, owners.get(row.output_project_id)) for row in rows]

    async def describe(self, output_project_id: str) -> SessionInfo | None:
        row = await self.store.get(check_project_id(output_project_id))
        if row is None:
            return None
        host = self.settings.advertise_url
        if self.store.shared is not None and output_project_id not in self._by_project:
            owner = await self.store.shared.owner(output_project_id, self.grace)
            host = owner.address if owner is not None and owner.live else None
        return self._info(row, host)

    async def owner_elsewhere(self, output_project_id: str) -> OwnedElsewhere | None:
        """On a shared store: OwnedElsewhere when another host holds the project's row."""
        shared = self.store.shared
        if shared is None or output_project_id in self._by_project:
            return None
        owner = await shared.owner(check_project_id(output_project_id), self.grace)
        return self._elsewhere(output_project_id, owner)

    def _elsewhere(self, output_project_id: str, owner: Owner | None) -> OwnedElsewhere | None:
        """OwnedElsewhere when ``owner`` is another host that holds the row, else None."""
        if owner is None or not owner.held or owner.owner_host == self._host_id():
            return None
        return OwnedElsewhere(output_project_id, owner.address if owner.live else None)

    @property
    def grace(self) -> float:
        return self.lease.grace if self.lease is not None else 0.0

    def _host_id(self) -> str | None:
        return self.lease.host_id if self.lease is not None else None

    def _info(self, row: SessionRecord, host: str | None = None) -> SessionInfo:
        session = self._by_project.get(row.output_project_id)
        live = session is not None and session.closing is None
        remote_pid = None
        if session is not None:
            host = self.settings.advertise_url
        elif (
            host is not None
            and host != self.settings.advertise_url
            and row.status == SessionStatus.RUNNING
        ):
            remote_pid = row.pid  # another live host runs it: the pid on that host
        return SessionInfo(
            session_id=session.session_id if session else row.session_id,
            output_project_id=row.output_project_id,
            claude_session_id=session.claude_session_id if session else row.claude_session_id,
            claude_state=session.claude_state if session and live else None,
            claude_state_detail=session.claude_state_detail if session and live else None,
            claude_state_since=session.claude_state_since if session and live else None,
            kind=row.kind,
            status=SessionStatus.RUNNING if live else row.status,
            status_reason=row.status_reason,
            pid=session.pid if session is not None and live else remote_pid,
            cols=session.cols if session else row.cols,
            rows=session.rows if session else row.rows,
            clients=len(session.clients) if session else 0,
            created_at=row.created_at,
            last_activity=session.last_activity if session else row.last_activity,
            exit_code=row.exit_code,
            exit_signal=row.exit_signal,
            host=host,
        )

    # -- creating ----------------------------------------------------------------------------

    async def get_or_create_session(
        self, output_project_id: str, *, cols: int | None = None, rows: int | None = None
    ) -> PTYSession:
        """The project's running session, started if needed. Race-free: one spawn per project."""
        session, _ = await self.ensure_session(output_project_id, cols=cols, rows=rows)
        return session

    async def create_session(
        self, output_project_id: str, *, cols: int | None = None, rows: int | None = None
    ) -> PTYSession:
        """Like :meth:`get_or_create_session`, but the session must not be running yet."""
        session, created = await self.ensure_session(output_project_id, cols=cols, rows=rows)
        if not created:
            raise ValueError(f"a session for {output_project_id!r} is already running")
        return session

    async def ensure_session(
        self,
        output_project_id: str,
        *,
        cols: int | None = None,
        rows: int | None = None,
        hold_output: bool = False,
        orphan: bool = False,
    ) -> tuple[PTYSession, bool]:
        """``(session, created)``: the running session, or a new one and True.

        With ``hold_output``, a new session's output is not read until the caller calls
        ``session.release_output()`` (after attaching its client): the first client sees the
        program's output from its first byte, however fast it comes. With ``orphan`` (a
        takeover), a session is started only while its row is still marked running.
        """
        check_project_id(output_project_id)
        while True:
            if self._closed:
                raise ShuttingDown("the server is shutting down")
            if self.lease is not None and not self.lease.holding:
                raise HostFenced("this host cannot reach the database to confirm its lease")
            session = self._by_project.get(output_project_id)
            if session is not None and session.running:
                return session, False
            if session is not None:
                # Ending, or between two attempts of a retry: wait until it is gone (then
                # start afresh) or runs again.
                await session.changed()
                continue
            task = self._starting.get(output_project_id)
            if task is not None:
                return await asyncio.shield(task), False
            if len(self._by_project) + len(self._starting) >= self.settings.max_sessions:
                raise SessionLimitReached(
                    f"session limit reached ({self.settings.max_sessions} running)"
                )
            task = asyncio.create_task(
                self._start(output_project_id, cols, rows, hold_output, orphan)
            )
            self._starting[output_project_id] = task
            try:
                return await asyncio.shield(task), True
            except asyncio.CancelledError:
                if hold_output:
                    # The caller that would have released the output is gone.
                    task.add_done_callback(_release)
                raise

    async def _start(
        self, output_project_id: str, cols: int | None, rows: int | None, hold: bool, orphan: bool
    ) -> PTYSession:
        try:
            return await self._spawn_new(output_project_id, cols, rows, hold, orphan)
        finally:
            self._starting.pop(output_project_id, None)

    async def _spawn_new(
        self, output_project_id: str, cols: int | None, rows: int | None, hold: bool, orphan: bool
    ) -> PTYSession:
        while True:
            row = await self.store.get(output_project_id)
            if orphan and (row is None or row.status != SessionStatus.RUNNING):
                # Stopped (or forgotten) since the scan saw it: a takeover must not undo that.
                raise NotRunning(f"project {output_project_id} is no longer marked running")
            session = await self._spawn_from(output_project_id, row, cols, rows, hold)
            if session is not None:
                return session
            # Another host wrote the row between our read and our claim: read it again.

    async def _spawn_from(
        self,
        output_project_id: str,
        row: SessionRecord | None,
        cols: int | None,
        rows: int | None,
        hold: bool,
    ) -> PTYSession | None:
        settings = self.settings
        profile = self._profile_for(row)
        if row is not None:
            # Ended runs were swept when they ended; a row still marked running comes from a
            # previous server. On a shared store, only once the row is ours: until then its
            # run may be a live peer's.
            if self._left_running(row) and self.lease is None:
                await self._end_old_tree(row)
            cwd = Path(row.cwd)
            base_argv = list(row.argv)
            resumed = row.status in (SessionStatus.RUNNING, SessionStatus.IDLE)
        else:
            cwd = settings.workdir_for(output_project_id)
            base_argv = profile.base_argv()
            resumed = False
        try:
            cwd = await asyncio.to_thread(_make_dir, cwd)
        except OSError as exc:
            raise SpawnError(f"cannot create the working directory {cwd}: {exc}") from None
        cols = cols or (row.cols if row else settings.default_cols)
        rows = rows or (row.rows if row else settings.default_rows)
        now = time.time()
        record = SessionRecord(
            output_project_id=output_project_id,
            session_id=uuid.uuid4().hex,
            kind=profile.kind,
            argv=tuple(base_argv),
            cwd=str(cwd),
            status=SessionStatus.RUNNING,
            created_at=row.created_at if row else now,
            updated_at=now,
            last_activity=now,
            claude_session_id=row.claude_session_id if row else None,
            cols=cols,
            rows=rows,
            spawn_count=row.spawn_count if row else 0,
        )
        # The new run's id is stored before its process exists: a crash mid-spawn leaves a
        # marker that recovery can find the process by.
        owner: tuple[str, int] | None = None
        if self.lease is None:
            await self.store.put(record)
        else:
            owner = await self._claim(record, row)
            if owner is None:
                return None
            if row is not None and self._left_running(row):
                # What may be left of a gone host's run on this machine.
                await self._end_old_tree(row)
        session = PTYSession(
            session_id=record.session_id,
            output_project_id=output_project_id,
            cwd=cwd,
            argv=base_argv,
            profile=profile,
            settings=settings,
            recorder=self.store.row_writer(
                output_project_id, owner, timeout=self.lease.grace if self.lease else None
            ),
            claude_session_id=record.claude_session_id,
            cols=cols,
            rows=rows,
            resumed=resumed,
            spawn_count=record.spawn_count,
            created_at=record.created_at,
            budget=self._read_budget,
            on_end=self._on_session_end,
        )
        if owner is not None and not self._still_ours(owner):
            raise HostFenced("this host lost its lease while claiming the session")
        self._runs.add(session)
        try:
            await session.start(hold_output=hold)
        except BaseException:
            self._runs.discard(session)
            raise
        if owner is not None and not self._still_ours(owner):
            # Fenced (and perhaps joined again under a new id) while it started: the fence
            # killed its program if it had one; the session ends here.
            await session.close(CloseReason.FENCED)
            raise HostFenced("this host lost its lease while starting the session")
        if owner is not None:
            self._owners[output_project_id] = owner
        self._by_project[output_project_id] = session
        self._by_id[session.session_id] = session
        self.counters["respawns" if resumed else "spawns"] += 1
        log.info(
            "spawn project=%s session=%s pid=%s resumed=%s",
            output_project_id,
            session.session_id,
            session.pid,
            resumed,
        )
        return session

    async def _claim(
        self, record: SessionRecord, row: SessionRecord | None
    ) -> tuple[str, int] | None:
        """Own the project's row on a shared store: (host id, epoch), or None when the row
        changed since it was read."""
        assert self.lease is not None
        host_id = self.lease.host_id
        if host_id is None or not self.lease.holding:
            raise HostFenced("this host cannot reach the database to confirm its lease")
        claim = await self.store.claim(record, host_id, row, self.lease.grace)
        if claim.lost_lease:
            self.lease.lost()
            raise HostFenced("this host's lease has lapsed")
        if claim.owner is not None:
            raise OwnedElsewhere(record.output_project_id, claim.owner.address)
        if claim.epoch is None:
            return None
        return host_id, claim.epoch

    def _still_ours(self, owner: tuple[str, int]) -> bool:
        """The lease under which ``owner`` was claimed is still this host's, and holds."""
        assert self.lease is not None
        return self.lease.holding and self.lease.host_id == owner[0]

    def _left_running(self, row: SessionRecord) -> bool:
        return row.status == SessionStatus.RUNNING and row.session_id not in self._swept

    def _profile_for(self, row: SessionRecord | None) -> CommandProfile:
        """What runs a project: the configured command for a new one; for a stored one, what
        its row says (a changed configuration applies to new sessions only, SPEC 5.8)."""
        configured = self.settings.command
        if row is None or row.kind == configured.kind:
            return configured
        if row.kind == "claude":
            return ClaudeCommand(executable=row.argv[0])
        if row.kind == "shell":
            return ShellCommand(list(row.argv))
        log.warning(
            "project=%s was started by a command of kind %r, which is not configured now;"
            " running its stored argv as it is",
            row.output_project_id,
            row.kind,
        )
        return ShellCommand(list(row.argv))

    def _on_session_end(self, session: PTYSession, status: ExitStatus) -> None:
        self.counters["exits"] += 1
        self._runs.discard(session)
        if self._by_project.get(session.output_project_id) is session:
            del self._by_project[session.output_project_id]
            self._owners.pop(session.output_project_id, None)
        self._by_id.pop(session.session_id, None)

    async def _end_old_tree(self, row: SessionRecord) -> None:
        """Make sure nothing of a row's previous run survives."""
        root, marker = _old_tree(row)
        ended = await proctree.end_processes(root, marker, grace=self.settings.kill_grace)
        if ended:
            log.info("ended %d process(es) left from project=%s", len(ended), row.output_project_id)

    # -- changing ----------------------------------------------------------------------------

    async def update_claude_session_id(
        self, output_project_id: str, claude_session_id: str | None, *, reason: str | None = None
    ) -> None:
        """Store the project's current Claude session id and tell the attached clients.

        On a shared store, OwnedElsewhere when another host owns the project: call that one.
        """
        session = self._by_project.get(check_project_id(output_project_id))
        if session is not None:
            await session.set_claude_session_id(claude_session_id, reason=reason)
        elif self.store.shared is None:
            await self.store.update(output_project_id, claude_session_id=claude_session_id)
        else:
            owner = await self.store.shared.owner(output_project_id, self.grace)
            if owner is None:
                return
            if moved := self._elsewhere(output_project_id, owner):
                raise moved
            await self._write_not_running(
                output_project_id, owner, claude_session_id=claude_session_id
            )

    # -- ending ------------------------------------------------------------------------------

    async def close_session(self, output_project_id: str, *, forget: bool = False) -> bool:
        """End the project's process tree (status ``stopped``). False when nothing is stored.

        With ``forget``, the stored Claude session id is dropped too, after every write of the
        ended run (the next start begins a new conversation).
        """
        check_project_id(output_project_id)
        starting = self._starting.get(output_project_id)
        if starting is not None:
            # A spawn under way would otherwise come alive after the row says "stopped".
            with contextlib.suppress(Exception):
                await asyncio.shield(starting)
        session = self._by_project.get(output_project_id)
        owner = None
        if session is not None:
            await session.close(CloseReason.STOPPED)
        elif self.store.shared is not None:
            owner = await self.store.shared.owner(output_project_id, self.grace)
            if moved := self._elsewhere(output_project_id, owner):
                raise moved
        row = await self.store.get(output_project_id)
        if row is None:
            return session is not None
        changes: dict[str, Any] = {}
        if row.status == SessionStatus.RUNNING:
            # A row left running by a previous server (or a host that is gone), not respawned.
            await self._end_old_tree(row)
            changes.update(status=SessionStatus.STOPPED, pid=None, pid_start_time=None)
        if forget:
            changes["claude_session_id"] = None
        if changes:
            await self._write_not_running(output_project_id, owner, **changes)
        return True

    async def _write_not_running(
        self, output_project_id: str, owner: Owner | None, **changes: Any
    ) -> None:
        """Write the row of a project this host does not run: on a shared store, only if
        nobody took the row over since ``owner`` was read (compare and set on its epoch)."""
        if owner is None or owner.owner_host is None:
            await self.store.update(output_project_id, **changes)
            return
        try:
            await self.store.update_owned(
                output_project_id, (owner.owner_host, owner.owner_epoch), **changes
            )
        except OwnershipLost:
            # Taken over meanwhile: the request belongs to the new owner now.
            moved = await self.owner_elsewhere(output_project_id)
            raise moved or OwnedElsewhere(output_project_id, None) from None

    async def cleanup_idle_sessions(self) -> list[str]:
        """End sessions with no client and no activity for ``idle_timeout``; their ids."""
        now = time.monotonic()
        idle = [
            s
            for s in self._by_project.values()
            if s.closing is None and s.idle_for(now) >= self.settings.idle_timeout
        ]
        await self._end_many(idle, CloseReason.IDLE)
        for session in idle:
            self.counters["reaps"] += 1
            log.info("reap project=%s session=%s", session.output_project_id, session.session_id)
        return [s.output_project_id for s in idle]

    async def _end_many(
        self, sessions: list[PTYSession], reason: CloseReason, grace: float | None = None
    ) -> None:
        """End many sessions at once: their trees together, one pass over /proc per signal
        for all of them (one pass each would make a shutdown of hundreds quadratic)."""
        for session in sessions:
            # At once: a client attaching meanwhile must see the session as ending.
            session.mark_closing(reason)
        await BidirectionalPTY.terminate_all(
            [s.pty for s in sessions], self.settings.kill_grace if grace is None else grace
        )
        results = await asyncio.gather(*(s.close(reason) for s in sessions), return_exceptions=True)
        for session, result in zip(sessions, results, strict=True):
            if isinstance(result, Exception):
                log.error("ending project=%s failed: %s", session.output_project_id, result)

    # -- several hosts -----------------------------------------------------------------------

    async def _fence(self) -> None:
        """This host's lease can no longer be confirmed: end every program it runs, starting
        ones included, quickly (a peer may take them 0.4 of the lease from now, SPEC 12)."""
        assert self.lease is not None
        self.counters["fences"] += 1
        runs = list(self._runs)
        for session in runs:
            session.mark_closing(CloseReason.FENCED)
        # First each program's own process group, from the loop: no worker thread, no /proc
        # pass (the partition that cut the database may have hung the shared filesystem, and
        # with it every worker thread).
        grace = self.lease.lease / 20
        programs = [p for p in (s.program for s in runs) if p is not None]
        for program in programs:
            program.signal_group(signal.SIGHUP)
            program.signal_group(signal.SIGCONT)
        await asyncio.sleep(grace)
        for program in programs:
            program.signal_group(signal.SIGKILL)
        # Then the whole trees (what left the group too), and the sessions' ends.
        running = [s for s in runs if self._by_project.get(s.output_project_id) is s]
        await self._end_many(running, CloseReason.FENCED, grace=grace)
        log.error("fenced: ended %d session(s)", len(runs))

    def _background(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _check_owned(self, owned: dict[str, int]) -> None:
        """End the sessions whose rows no longer name this host and their epoch (a takeover
        this host did not see coming; rows edited by hand): their writes would be refused."""
        for project, (host_id, epoch) in list(self._owners.items()):
            session = self._by_project.get(project)
            if session is not None and session.closing is None and owned.get(project) != epoch:
                log.error("project=%s is no longer owned by host %s: ending it", project, host_id)
                self._background(session.close(CloseReason.FENCED))

    async def _take_over(self, projects: list[str]) -> None:
        """Start the sessions of hosts whose leases lapsed, as restart recovery does."""
        projects = [p for p in projects if p not in self._by_project]
        results = await asyncio.gather(
            *(self.ensure_session(p, orphan=True) for p in projects), return_exceptions=True
        )
        for project, result in zip(projects, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, OwnedElsewhere | NotRunning):
                    log.warning("taking over project=%s failed: %s", project, result)
            elif result[1]:
                self.counters["takeovers"] += 1
                log.info("took over project=%s", project)

    async def _reap_forever(self) -> None:
        interval = self.settings.effective_reap_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.cleanup_idle_sessions()
            except Exception:
                log.exception("idle reaping failed")


def _release(task: asyncio.Task[PTYSession]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().release_output()
