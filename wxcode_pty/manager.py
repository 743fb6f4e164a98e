"""``PTYSessionManager``: the lifecycle of sessions, one per output project.

Owns the map of live sessions and every transition of a row: spawn, exit, idle reaping,
explicit close, shutdown and restart recovery. A session's program is watched by one
supervisor task that records how it ended, retries a respawn that dies at start (with
exponential backoff, then marks it failed), and lets the command profile ask for one retry
(Claude's fallback to a fresh conversation). The store keeps what a restart needs; the web
layer only calls in here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TypedDict

from . import proctree
from .buffer import ReplayBuffer
from .commands import IdListener, Retry, SpawnRequest
from .pty import BidirectionalPTY, ExitStatus, ReadBudget, SpawnError
from .session import PTYSession
from .settings import Settings, valid_project_id
from .store import SessionRecord, SessionStore

__all__ = ["InvalidProjectId", "PTYSessionManager", "SessionInfo", "SessionLimitReached"]

log = logging.getLogger("wxcode_pty")

#: How much of the output an exiting program's profile may look at (error texts).
_TAIL = 4096


class InvalidProjectId(ValueError):
    """The output project id does not match ``^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$``."""


class SessionLimitReached(Exception):
    """``Settings.max_sessions`` sessions are running already."""


class SessionInfo(TypedDict):
    """A session as the API shows it (SPEC section 9)."""

    session_id: str
    output_project_id: str
    claude_session_id: str | None
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


def _make_dir(path: Path) -> Path:
    """Create ``path`` if needed and return its real path (one trip to a worker thread)."""
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _now() -> float:
    return time.time()


class PTYSessionManager:
    """Creates, finds, reaps and recovers sessions. One per mounted plugin."""

    def __init__(self, settings: Settings, store: SessionStore) -> None:
        self.settings = settings
        self.store = store
        self.profile = settings.command
        self.counters: Counter[str] = Counter()
        self._by_project: dict[str, PTYSession] = {}
        self._by_id: dict[str, PTYSession] = {}
        self._starting: dict[str, asyncio.Task[PTYSession]] = {}
        self._supervisors: dict[str, asyncio.Task[None]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._closed = False
        #: Runs of a previous server whose processes recovery already ended.
        self._swept: set[str] = set()
        #: Shared by all sessions: floods take turns instead of starving the loop.
        self._read_budget = ReadBudget()

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Recover the rows a previous server left running, and start the idle reaper."""
        self._recovery = asyncio.create_task(self._recover())
        await asyncio.shield(self._recovery)
        self._reaper = asyncio.create_task(self._reap_forever())

    async def _recover(self) -> None:
        rows = await self.store.list(status="running")
        if not rows:
            return
        log.info("recovery: %d session(s) were running", len(rows))
        # The old trees go first: a respawn must never run beside its predecessor. One pass
        # over /proc finds the survivors of every row; only those rows need more.
        survivors = await asyncio.to_thread(proctree.find_marked, [r.session_id for r in rows])
        alive = {r.pid for r in rows if r.pid is not None and _same_process(r)}
        await asyncio.gather(
            *(
                self._end_old_tree(row)
                for row in rows
                if survivors[row.session_id] or row.pid in alive
            )
        )
        self._swept.update(row.session_id for row in rows)
        if not self.settings.respawn_on_start:
            return
        results = await asyncio.gather(
            *(self.ensure_session(row.output_project_id) for row in rows), return_exceptions=True
        )
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("respawn of %s failed: %s", row.output_project_id, result)

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
        await self._end_many(list(self._by_project.values()), "shutdown")

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
        return [self._info(row) for row in await self.store.list()]

    async def describe(self, output_project_id: str) -> SessionInfo | None:
        row = await self.store.get(output_project_id)
        return self._info(row) if row is not None else None

    def _info(self, row: SessionRecord) -> SessionInfo:
        session = self._by_project.get(row.output_project_id)
        live = session is not None and session.closing is None
        return SessionInfo(
            session_id=session.session_id if session else row.session_id,
            output_project_id=row.output_project_id,
            claude_session_id=session.claude_session_id if session else row.claude_session_id,
            status="running" if live else row.status,
            status_reason=row.status_reason,
            pid=session.pid if session is not None and live else None,
            cols=session.cols if session else row.cols,
            rows=session.rows if session else row.rows,
            clients=len(session.clients) if session else 0,
            created_at=row.created_at,
            last_activity=session.last_activity if session else row.last_activity,
            exit_code=row.exit_code,
            exit_signal=row.exit_signal,
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
    ) -> tuple[PTYSession, bool]:
        """``(session, created)``: the running session, or a new one and True.

        With ``hold_output``, a new session's output is not read until the caller calls
        ``session.pty.resume_reading()`` (after attaching its client): the first client sees
        the program's output from its first byte, however fast it comes.
        """
        if not valid_project_id(output_project_id):
            raise InvalidProjectId(
                "output project id must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
            )
        while True:
            if self._closed:
                raise SessionLimitReached("the server is shutting down")
            session = self._by_project.get(output_project_id)
            if session is not None and session.closing is None and session.pty.running:
                return session, False
            if session is not None:
                # Ending, or between two attempts of a retry: wait until it is gone (then
                # start afresh) or runs again.
                await session.changed.wait()
                continue
            task = self._starting.get(output_project_id)
            if task is not None:
                return await asyncio.shield(task), False
            if len(self._by_project) + len(self._starting) >= self.settings.max_sessions:
                raise SessionLimitReached(
                    f"session limit reached ({self.settings.max_sessions} running)"
                )
            task = asyncio.create_task(self._start(output_project_id, cols, rows, hold_output))
            self._starting[output_project_id] = task
            try:
                return await asyncio.shield(task), True
            except asyncio.CancelledError:
                if hold_output:
                    # The caller that would have released the output is gone.
                    task.add_done_callback(_release)
                raise

    async def _start(
        self, output_project_id: str, cols: int | None, rows: int | None, hold: bool
    ) -> PTYSession:
        try:
            return await self._spawn_new(output_project_id, cols, rows, hold)
        finally:
            self._starting.pop(output_project_id, None)

    async def _spawn_new(
        self, output_project_id: str, cols: int | None, rows: int | None, hold: bool
    ) -> PTYSession:
        settings = self.settings
        row = await self.store.get(output_project_id)
        if row is not None:
            # Ended runs were swept when they ended; a row still marked running comes from a
            # previous server.
            if row.status == "running" and row.session_id not in self._swept:
                await self._end_old_tree(row)
            cwd = Path(row.cwd)
            base_argv = list(row.argv)
            resumed = row.status in ("running", "idle")
        else:
            cwd = settings.workdir_for(output_project_id)
            base_argv = self.profile.base_argv()
            resumed = False
        try:
            cwd = await asyncio.to_thread(_make_dir, cwd)
        except OSError as exc:
            raise SpawnError(f"cannot create the working directory {cwd}: {exc}") from None
        cols = cols or (row.cols if row else settings.default_cols)
        rows = rows or (row.rows if row else settings.default_rows)
        now = _now()
        session_id = uuid.uuid4().hex
        record = SessionRecord(
            output_project_id=output_project_id,
            session_id=session_id,
            kind=self.profile.kind,
            argv=tuple(base_argv),
            cwd=str(cwd),
            status="running",
            created_at=row.created_at if row else now,
            updated_at=now,
            last_activity=now,
            claude_session_id=row.claude_session_id if row else None,
            cols=cols,
            rows=rows,
            spawn_count=row.spawn_count if row else 0,
        )
        session = PTYSession(
            session_id=session_id,
            output_project_id=output_project_id,
            pty=None,  # type: ignore[arg-type]  # set by _launch before anyone sees it
            cwd=cwd,
            argv=base_argv,
            claude_session_id=record.claude_session_id,
            cols=cols,
            rows=rows,
            resumed=resumed,
            buffer=ReplayBuffer(settings.buffer_size),
        )
        # The new run's id is stored before its process exists: a crash mid-spawn leaves a
        # marker that recovery can find the process by.
        await self.store.put(record)
        await self._launch(session, record.spawn_count, paused=hold)
        self._by_project[output_project_id] = session
        self._by_id[session_id] = session
        self.counters["respawns" if resumed else "spawns"] += 1
        log.info(
            "spawn project=%s session=%s pid=%s resumed=%s",
            output_project_id,
            session_id,
            session.pty.pid,
            resumed,
        )
        self._supervisors[session_id] = asyncio.create_task(self._supervise(session))
        return session

    async def _launch(self, session: PTYSession, spawn_count: int, paused: bool = False) -> None:
        """Plan and start the program of ``session`` (first start or a retry)."""
        settings = self.settings
        request = SpawnRequest(
            output_project_id=session.output_project_id,
            session_id=session.session_id,
            base_argv=session.argv,
            cwd=session.cwd,
            claude_session_id=session.claude_session_id,
            env=settings.child_env(),
            kill_grace=settings.kill_grace,
        )
        plan = None
        try:
            plan = await self.profile.prepare(request, self._id_listener(session))
            session.pty = await BidirectionalPTY.spawn(
                plan.argv,
                cwd=session.cwd,
                env={**request.env, **plan.env},
                on_output=session.on_output,
                cols=session.cols,
                rows=session.rows,
                marker=session.session_id,
                input_limit=settings.input_limit,
                paused=paused,
                budget=self._read_budget,
            )
        except asyncio.CancelledError:
            # Cancelled while the program was being started (its thread ends it): the plan's
            # tracker (a hook socket, a folder) still has to go.
            if plan is not None and plan.tracker is not None:
                closing = asyncio.get_running_loop().create_task(plan.tracker.aclose())
                session.background.add(closing)
                closing.add_done_callback(session.background.discard)
            raise
        except Exception as exc:
            # OSError (no fds left, a socket path too long, ...) is a failed spawn too.
            error = exc if isinstance(exc, SpawnError) else SpawnError(f"cannot start: {exc}")
            if plan is not None and plan.tracker is not None:
                await plan.tracker.aclose()
            with contextlib.suppress(Exception):
                await self.store.update(
                    session.output_project_id, status="failed", status_reason=str(error), pid=None
                )
            log.warning("spawn failed project=%s: %s", session.output_project_id, error)
            raise error from None
        session.match_reads_to_clients()  # clients may stay across a retry
        # Before any await: the tracker must see the program's first bytes.
        session.tracker = plan.tracker
        if plan.tracker is not None:
            plan.tracker.started(session.pty.pid)
        if plan.claude_session_id is not None:
            session.claude_session_id = plan.claude_session_id
        session.started_at = time.monotonic()
        session.notify_changed()
        try:
            await self.store.update(
                session.output_project_id,
                pid=session.pty.pid,
                pid_start_time=session.pty.identity.start_time,
                claude_session_id=session.claude_session_id,
                spawn_count=spawn_count + 1,
                exit_code=None,
                exit_signal=None,
                status_reason=None,
            )
        except Exception as exc:
            # Not recorded, not kept: a program the store does not know would never be ended.
            await session.pty.terminate(settings.kill_grace)
            if session.tracker is not None:
                await session.tracker.aclose()
                session.tracker = None
            raise SpawnError(f"cannot record the session: {exc}") from None

    def _id_listener(self, session: PTYSession) -> IdListener:
        def on_id(claude_session_id: str, reason: str | None) -> None:
            if session.closing is None and claude_session_id != session.claude_session_id:
                task = asyncio.create_task(
                    self.update_claude_session_id(
                        session.output_project_id, claude_session_id, reason=reason
                    )
                )
                session.background.add(task)
                task.add_done_callback(session.background.discard)

        return on_id

    # -- running -----------------------------------------------------------------------------

    async def _supervise(self, session: PTYSession) -> None:
        """Wait for the program to end; retry or record how it ended. Never dies silently:
        whatever happens, the session is finished and leaves the maps."""
        status = ExitStatus(None, None)
        reason: str | None = None
        try:
            status, reason = await self._run(session)
        except Exception as exc:
            log.exception("supervising project=%s failed", session.output_project_id)
            reason = f"internal error: {exc}"
            with contextlib.suppress(Exception):
                await session.pty.terminate(self.settings.kill_grace)
        finally:
            await self._finish(session, status, reason)

    async def _run(self, session: PTYSession) -> tuple[ExitStatus, str | None]:
        settings = self.settings
        attempt = 0
        fallback_used = False
        while True:
            status = await session.pty.wait()
            # Measured before the sweep below, which can take a while.
            early = time.monotonic() - session.started_at < settings.early_exit
            await session.pty.terminate(settings.kill_grace)  # sweep descendants
            if session.tracker is not None:
                await session.tracker.aclose()
                session.tracker = None
            if session.closing is not None:
                return status, None
            retry: Retry | None = None
            if not fallback_used:
                tail = session.buffer.since(max(session.buffer.start, session.buffer.end - _TAIL))
                retry = self.profile.after_exit(session.claude_session_id, status, early, tail.data)
            if retry is not None:
                fallback_used = True
                previous = session.claude_session_id
                session.claude_session_id = retry.claude_session_id
                log.warning("retry project=%s: %s", session.output_project_id, retry.reason)
                await self.store.update(
                    session.output_project_id, claude_session_id=retry.claude_session_id
                )
                if retry.claude_session_id is not None:
                    for client in tuple(session.clients):
                        client.send_claude_session(retry.claude_session_id, previous, retry.reason)
            elif early and session.resumed:
                attempt += 1
                if attempt >= settings.respawn_attempts:
                    return status, (
                        f"the program exited {attempt} times right after start"
                        f" (last: {_describe(status)})"
                    )
                delay = settings.retry_backoff * 2 ** (attempt - 1)
                log.warning(
                    "respawn project=%s died at start (%s); retry in %.1fs",
                    session.output_project_id,
                    _describe(status),
                    delay,
                )
                await asyncio.sleep(delay)
                if session.closing is not None:
                    return status, None
            else:
                return status, None
            try:
                row = await self.store.get(session.output_project_id)
                await self._launch(session, row.spawn_count if row else 0)
            except SpawnError as exc:
                return status, str(exc)
            if session.closing is not None:
                # Ended while the retry was being prepared: _end terminated the old program.
                await session.pty.terminate(settings.kill_grace)

    async def _finish(self, session: PTYSession, status: ExitStatus, reason: str | None) -> None:
        closing = session.closing
        if closing == "shutdown":
            # The row stays "running" with the old pid: the next start ends any survivor of
            # the tree and respawns it.
            pass
        else:
            new_status = closing or ("failed" if reason else "exited")
            try:
                await self.store.update(
                    session.output_project_id,
                    status=new_status,
                    status_reason=reason,
                    pid=None,
                    pid_start_time=None,
                    exit_code=status.code,
                    exit_signal=status.signal,
                    last_activity=session.last_activity,
                    claude_session_id=session.claude_session_id,
                )
            except Exception:
                # The row keeps saying "running": the next start sweeps and respawns it.
                log.exception("recording the end of project=%s failed", session.output_project_id)
        self.counters["exits"] += 1
        log.info(
            "exit project=%s session=%s %s closing=%s",
            session.output_project_id,
            session.session_id,
            _describe(status),
            closing,
        )
        if self._by_project.get(session.output_project_id) is session:
            del self._by_project[session.output_project_id]
        self._by_id.pop(session.session_id, None)
        self._supervisors.pop(session.session_id, None)
        session.ended.set()
        session.notify_changed()
        if closing != "shutdown":
            for client in tuple(session.clients):
                client.send_exit(status)

    async def _end_old_tree(self, row: SessionRecord) -> None:
        """Make sure nothing of a row's previous run survives (pid plus start time, marker)."""
        root = None
        if row.pid is not None and row.pid_start_time is not None:
            root = proctree.ProcessId(row.pid, row.pid_start_time)
        ended = await proctree.end_processes(root, row.session_id, grace=self.settings.kill_grace)
        if ended:
            log.info("ended %d process(es) left from project=%s", len(ended), row.output_project_id)

    # -- changing ----------------------------------------------------------------------------

    async def update_claude_session_id(
        self, output_project_id: str, claude_session_id: str | None, *, reason: str | None = None
    ) -> None:
        """Store the project's current Claude session id and tell the attached clients."""
        session = self._by_project.get(output_project_id)
        previous: str | None
        if session is not None:
            previous = session.claude_session_id
            session.claude_session_id = claude_session_id
        else:
            row = await self.store.get(output_project_id)
            previous = row.claude_session_id if row else None
        await self.store.update(output_project_id, claude_session_id=claude_session_id)
        log.info("claude session project=%s changed", output_project_id)
        if session is not None and claude_session_id is not None and previous != claude_session_id:
            for client in tuple(session.clients):
                client.send_claude_session(claude_session_id, previous, reason)

    def resize(self, session: PTYSession, cols: int, rows: int) -> None:
        session.cols, session.rows = cols, rows
        session.pty.resize(cols, rows)

    # -- ending ------------------------------------------------------------------------------

    async def close_session(self, output_project_id: str, *, forget: bool = False) -> bool:
        """End the project's process tree (status ``stopped``). False when nothing is stored."""
        starting = self._starting.get(output_project_id)
        if starting is not None:
            # A spawn under way would otherwise come alive after the row says "stopped".
            with contextlib.suppress(Exception):
                await asyncio.shield(starting)
        session = self._by_project.get(output_project_id)
        if session is not None:
            await self._end(session, "stopped")
        row = await self.store.get(output_project_id)
        if row is None:
            return session is not None
        changes: dict[str, object] = {}
        if row.status == "running":
            # A row left running by a previous server, not respawned yet.
            await self._end_old_tree(row)
            changes.update(status="stopped", pid=None, pid_start_time=None)
        if forget:
            changes["claude_session_id"] = None
        if changes:
            await self.store.update(output_project_id, **changes)
        return True

    async def cleanup_idle_sessions(self) -> list[str]:
        """End sessions with no client and no output for ``idle_timeout``; their ids."""
        deadline = _now() - self.settings.idle_timeout
        idle = [
            s
            for s in self._by_project.values()
            if s.closing is None and not s.clients and s.last_activity <= deadline
        ]
        await self._end_many(idle, "idle")
        for session in idle:
            self.counters["reaps"] += 1
            log.info("reap project=%s session=%s", session.output_project_id, session.session_id)
        return [s.output_project_id for s in idle]

    async def _end(self, session: PTYSession, reason: str) -> None:
        if session.closing is None:
            session.closing = reason
        await session.pty.terminate(self.settings.kill_grace)
        supervisor = self._supervisors.get(session.session_id)
        if supervisor is not None:
            await asyncio.shield(supervisor)

    async def _end_many(self, sessions: list[PTYSession], reason: str) -> None:
        """End many sessions at once: one pass over /proc per signal for all of them (one
        pass each would make a shutdown of hundreds of sessions quadratic), then each
        session's own, now cheap, sweep."""
        for session in sessions:
            # At once: a client attaching meanwhile must see the session as ending.
            if session.closing is None:
                session.closing = reason
        if len(sessions) > 1:
            await proctree.end_marked(
                [s.session_id for s in sessions], grace=self.settings.kill_grace
            )
        results = await asyncio.gather(
            *(self._end(s, reason) for s in sessions), return_exceptions=True
        )
        for session, result in zip(sessions, results, strict=True):
            if isinstance(result, Exception):
                log.error("ending project=%s failed: %s", session.output_project_id, result)

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
        task.result().pty.resume_reading()


def _same_process(row: SessionRecord) -> bool:
    """The row's program still runs (its pid with its start time)."""
    if row.pid is None or row.pid_start_time is None:
        return False
    return proctree.is_alive(proctree.ProcessId(row.pid, row.pid_start_time))


def _describe(status: ExitStatus) -> str:
    if status.signal:
        return f"killed by {status.signal}"
    return f"exit code {status.code}"
