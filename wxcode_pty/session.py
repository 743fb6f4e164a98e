"""``PTYSession``: one program's run for one output project, from its start to its end.

The session owns everything about that run: starting the program (and starting it again when a
respawn dies at start, or when the command profile asks for one retry), input, resize (the most
recently active client's size, as tmux's ``latest``), attaching and detaching clients, the
fan-out of output to them with all of flow control, how the run ended, and telling its clients.
What a restart needs goes through a narrow ``Recorder`` (the project's row); the session never
sees the manager, and the manager never writes the session's fields.

Flow control in one place: output is read while no client is attached or at least one keeps
up; when every client is congested, reading pauses (the program blocks on a full PTY) until one
drains. A session started with ``hold_output`` reads nothing until its first client is in
place, so that client sees the program's output from its first byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from .answers import AnswerFilter
from .buffer import Replay, ReplayBuffer
from .commands import ClaudeState, CommandProfile, Retry, SpawnRequest, Tracker
from .errors import WxcodePtyError
from .pty import BidirectionalPTY, ExitStatus, ReadBudget, SpawnError
from .screen import ScreenModel
from .settings import Settings
from .store import SessionStatus
from .termstate import TerminalTimeline

__all__ = ["CloseReason", "PTYSession", "Recorder", "SessionClient"]

log = logging.getLogger("wxcode_pty")

#: With more clients than this, a wakeup's reads always go out as one chunk, since a frame to
#: each of them per small read costs more than the wait it saves (bench/README.md); with fewer,
#: the PTY decides by the terminal's mode (``BidirectionalPTY._on_readable``).
_EAGER_CLIENTS = 5
#: How much of the output an exiting program's profile may look at (error texts).
_TAIL = 4096


class CloseReason(StrEnum):
    """Why the server ends a session."""

    #: No client and no output for ``idle_timeout``: the row says ``idle``.
    IDLE = "idle"
    #: Ended on request (DELETE): the row says ``stopped``.
    STOPPED = "stopped"
    #: The server shuts down: the row stays ``running`` so that the next start respawns it.
    SHUTDOWN = "shutdown"
    #: The host lost its lease (several hosts): the row stays ``running`` for the host that
    #: takes it over; clients are told to reconnect (1001).
    FENCED = "fenced"


class Recorder(Protocol):
    """The session's row, written in order (``store.RowWriter``)."""

    async def write(self, **changes: Any) -> None:
        """Store ``changes`` after every earlier change; raises when the store fails."""
        ...

    def record(self, **changes: Any) -> None:
        """Queue ``changes`` behind the earlier ones, without waiting."""
        ...

    async def flush(self) -> None:
        """Wait until every change made so far is stored (or has failed)."""
        ...


class SessionClient(Protocol):
    """Something attached to a session: a WebSocket client, a test probe.

    Every method is called from the loop and must neither block nor await.
    """

    #: The client's own terminal size, applied when it becomes the active client (if it
    #: ``may_resize``).
    cols: int
    rows: int
    may_resize: bool

    @property
    def congested(self) -> bool:
        """True while this client has a large backlog of output to send."""
        ...

    def send_output(self, data: bytes) -> None:
        """New output."""
        ...

    def send_claude_session(
        self, claude_session_id: str, previous: str | None, reason: str | None
    ) -> None:
        """The Claude session id changed."""
        ...

    def send_claude_state(self, state: ClaudeState, detail: str | None, since: float) -> None:
        """Claude's state changed (SPEC 8.1)."""
        ...

    def send_size(self, cols: int, rows: int) -> None:
        """The PTY's size changed (another client became the active one, or this one)."""
        ...

    def send_exit(self, status: ExitStatus) -> None:
        """The program ended; no more output follows."""
        ...

    def send_moved(self) -> None:
        """The session will run on another host (this one lost its lease): reconnect."""
        ...


class PTYSession:
    """One run of a program for one output project. Make it, then :meth:`start` it."""

    def __init__(
        self,
        *,
        session_id: str,
        output_project_id: str,
        cwd: Path,
        argv: list[str],
        profile: CommandProfile,
        settings: Settings,
        recorder: Recorder,
        claude_session_id: str | None = None,
        cols: int = 80,
        rows: int = 24,
        resumed: bool = False,
        spawn_count: int = 0,
        created_at: float | None = None,
        budget: ReadBudget | None = None,
        on_end: Callable[[PTYSession, ExitStatus], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.output_project_id = output_project_id
        self.cwd = cwd
        #: The stored command, without per-spawn flags.
        self.argv = argv
        self.profile = profile
        self.claude_session_id = claude_session_id
        self.cols = cols
        self.rows = rows
        #: True when this run continues one that a restart or the reaper ended.
        self.resumed = resumed
        self.created_at = time.time() if created_at is None else created_at
        #: What Claude is doing (None for other programs, SPEC 8.1), since when (epoch seconds).
        self.claude_state: ClaudeState | None = None
        self.claude_state_detail: str | None = None
        self.claude_state_since: float | None = None
        self.buffer = ReplayBuffer(settings.buffer_size)
        #: The terminal state at every offset of the buffer's window (the replay's prelude).
        self._terminal = TerminalTimeline(settings.buffer_size)
        #: One answer per terminal query, however many clients are attached.
        self._answers = AnswerFilter()
        self._answer_timer: asyncio.TimerHandle | None = None
        #: The program's current screen, for a client whose replay window cannot show it:
        #: made when the window first drops a byte (until then the window is the whole run).
        self._screen: ScreenModel | None = None
        self._screen_task: asyncio.Task[None] | None = None
        self.clients: set[SessionClient] = set()
        #: The attached clients, least recently active first (attached, typed or resized). The
        #: last is the active client: its size is the PTY's, its answers to queries go first,
        #: only its focus reports pass; when it leaves, the one before it takes over.
        self._recent: list[SessionClient] = []
        self._settings = settings
        self._recorder = recorder
        self._budget = budget
        self._on_end = on_end
        self._spawn_count = spawn_count
        self._pty: BidirectionalPTY | None = None
        self._tracker: Tracker | None = None
        self._closing: CloseReason | None = None
        self._held = False
        self._started_at = 0.0
        #: ``time.monotonic()`` of the last input, output, attach or detach: durations are
        #: measured on a clock that a change of the wall clock cannot move.
        self._active_at = time.monotonic()
        self._supervisor: asyncio.Task[None] | None = None
        self._close_requested = asyncio.Event()
        #: Calls of the host's ``on_claude_state`` still running.
        self._callbacks: set[asyncio.Task[None]] = set()
        #: Set (and replaced) whenever a program starts or the session ends.
        self._changed = asyncio.Event()
        self._ended: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        #: ``clients`` as of the last attach or detach, for the hot path: a client that
        #: detaches while output is handed out leaves this tuple as it was.
        self._fanout: tuple[SessionClient, ...] = ()

    # -- facts -------------------------------------------------------------------------------

    @property
    def pty(self) -> BidirectionalPTY:
        """The current program (a retry replaces it)."""
        if self._pty is None:
            raise RuntimeError("the session has not been started")
        return self._pty

    @property
    def program(self) -> BidirectionalPTY | None:
        """The current program, or None before the first one is spawned (while starting)."""
        return self._pty

    @property
    def pid(self) -> int | None:
        return self._pty.pid if self._pty is not None and self._pty.running else None

    @property
    def running(self) -> bool:
        """The program runs and the session is not being ended."""
        return self._closing is None and self._pty is not None and self._pty.running

    @property
    def closing(self) -> CloseReason | None:
        """Why the server is ending this session, if it is."""
        return self._closing

    @property
    def last_activity(self) -> float:
        """Wall-clock time of the last input, output, attach or detach."""
        return time.time() - (time.monotonic() - self._active_at)

    def idle_for(self, now: float) -> float:
        """Seconds (``time.monotonic()``) without a client and without activity; 0 if any."""
        return 0.0 if self.clients else now - self._active_at

    def _touch(self) -> None:
        self._active_at = time.monotonic()

    async def changed(self) -> None:
        """Wait until a program starts (a retry) or the session ends."""
        await self._changed.wait()

    def _notify_changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self) -> ExitStatus:
        """Wait until the run has ended, its row records how, and its clients were told."""
        return await asyncio.shield(self._ended)

    # -- start -------------------------------------------------------------------------------

    async def start(self, *, hold_output: bool = False) -> None:
        """Start the program; from then on the session watches it until it ends.

        Raises ``SpawnError`` (the row then says ``failed``). With ``hold_output``, nothing is
        read until :meth:`release_output`.
        """
        self._held = hold_output
        await self._launch()
        self._supervisor = asyncio.create_task(self._supervise())

    def release_output(self) -> None:
        """Start reading a held session's output (its first client is in place, or gone)."""
        if self._held:
            self._held = False
            if self._pty is not None:
                self._pty.resume_reading()

    async def _launch(self) -> None:
        """Plan and start the program (first start or a retry), and record it."""
        settings = self._settings
        request = SpawnRequest(
            output_project_id=self.output_project_id,
            session_id=self.session_id,
            base_argv=self.argv,
            cwd=self.cwd,
            claude_session_id=self.claude_session_id,
            env=settings.child_env(),
            kill_grace=settings.kill_grace,
        )
        plan = None
        try:
            plan = await self.profile.prepare(request, self)
            pty = await BidirectionalPTY.spawn(
                plan.argv,
                cwd=self.cwd,
                env={**request.env, **plan.env},
                on_output=self._on_output,
                cols=self.cols,
                rows=self.rows,
                marker=self.session_id,
                input_limit=settings.input_limit,
                paused=self._held,
                budget=self._budget,
                kill_grace=settings.kill_grace,
            )
        except asyncio.CancelledError:
            # Cancelled while the program was being started (its thread ends it): the plan's
            # tracker (a hook socket, a folder) still has to go.
            if plan is not None and plan.tracker is not None:
                await asyncio.shield(plan.tracker.aclose())
            raise
        except Exception as exc:
            # OSError (no fds left, a socket path too long, ...) is a failed spawn too.
            error = exc if isinstance(exc, SpawnError) else SpawnError(f"cannot start: {exc}")
            if plan is not None and plan.tracker is not None:
                await plan.tracker.aclose()
            with contextlib.suppress(Exception):
                await self._recorder.write(
                    status=SessionStatus.FAILED, status_reason=str(error), pid=None
                )
            log.warning("spawn failed project=%s: %s", self.output_project_id, error)
            raise error from None
        self._pty = pty
        self._match_reads_to_clients()  # clients may stay across a retry
        # A new program has asked nothing yet: answers held for the old one must not reach it.
        self._answers = AnswerFilter()
        for client in self.clients:
            self._answers.attach(client)
        if self._answer_timer is not None:
            self._answer_timer.cancel()
            self._answer_timer = None
        # Before any await: the tracker must see the program's first bytes.
        self._tracker = plan.tracker
        if plan.tracker is not None:
            plan.tracker.started(pty.pid)
        if plan.claude_session_id is not None:
            self.claude_session_id = plan.claude_session_id
            self.on_claude_state(ClaudeState.STARTING, None)
        self._started_at = time.monotonic()
        self._spawn_count += 1
        self._notify_changed()
        try:
            await self._recorder.write(
                pid=pty.pid,
                pid_start_time=pty.identity.start_time,
                claude_session_id=self.claude_session_id,
                spawn_count=self._spawn_count,
                exit_code=None,
                exit_signal=None,
                status_reason=None,
            )
        except Exception as exc:
            # Not recorded, not kept: a program the store does not know would never be ended.
            await pty.terminate()
            await self._close_tracker()
            raise SpawnError(f"cannot record the session: {exc}") from None

    # -- output and flow control -------------------------------------------------------------

    def _on_output(self, data: bytes) -> None:
        """The hot path (every read from the PTY): buffer, terminal state, queries, fan out,
        let the tracker look."""
        screen = self._screen
        if screen is None and self.buffer.end + len(data) > self.buffer.capacity:
            screen = self._start_screen()
        self.buffer.append(data)
        self._terminal.feed(data)
        if screen is not None:
            screen.feed(data)
        self._active_at = now = time.monotonic()
        fanout = self._fanout
        if len(fanout) > 1:  # with one client there is nothing to de-duplicate
            self._answers.on_output(data, now)
        # A client's backlog only changes with what it is sent: all congested is known here.
        congested = bool(fanout)
        for client in fanout:
            client.send_output(data)
            congested = congested and client.congested
        if self._tracker is not None:
            self._tracker.feed(data)
        if congested and self._pty is not None:
            self._pty.pause_reading()

    def drained(self) -> None:
        """A client caught up: reading goes on if it was paused (and not held)."""
        if not self._held and self._pty is not None:
            self._pty.resume_reading()

    def _match_reads_to_clients(self) -> None:
        """Gather a wakeup's reads for many clients; for a few the PTY decides by its mode."""
        self._fanout = tuple(self.clients)
        if self._pty is not None:
            self._pty.gather_reads = len(self.clients) > _EAGER_CLIENTS

    # -- clients -----------------------------------------------------------------------------

    def replay(self, since: int | None) -> Replay:
        """What a client attaching now is sent before live output (see ``ReplayBuffer``)."""
        return self.buffer.since(since)

    def prelude(self, offset: int) -> bytes:
        """What puts a freshly reset terminal into the state in force at ``offset`` (of the
        replay window): modes the program set once, before the window."""
        return self._terminal.prelude(offset)

    def _start_screen(self) -> ScreenModel:
        """The window is about to drop its first byte: from now on the screen is followed,
        starting with the whole run so far."""
        screen = self._screen = ScreenModel(self.cols, self.rows)
        screen.feed(self.buffer.since(0).data)
        self._screen_task = asyncio.get_running_loop().create_task(screen.run(self._history))
        return screen

    async def screen_caught_up(self) -> None:
        """Let the screen model parse what it has queued (in slices, yielding to the loop),
        so that :meth:`screen_replay` has little left to do synchronously."""
        if self._screen is not None:
            await self._screen.catch_up()

    def screen_replay(self) -> tuple[Replay, bytes | None]:
        """For a client whose replay window does not reach back to the start of the run: the
        program's current screen (with scrollback) and the modes in force, to write into a
        freshly reset terminal, standing for every byte up to the returned replay's end.
        None when the screen model failed (then the raw window is the fallback)."""
        replay = self.buffer.since(None)
        if self._screen is None:
            return replay, None
        snapshot = self._screen.snapshot(lambda: self._history(replay))
        if snapshot is None:
            return replay, None
        return replay, snapshot + self._terminal.prelude(replay.end, screens=False)

    def _history(self, replay: Replay | None = None) -> bytes:
        """What a rebuilt screen model is fed: the modes at the window's start, its bytes."""
        replay = replay or self.buffer.since(None)
        return self._terminal.prelude(replay.start) + replay.data

    @property
    def active_client(self) -> SessionClient | None:
        """The most recently active attached client."""
        return self._recent[-1] if self._recent else None

    def fit_to(self, cols: int, rows: int) -> None:
        """A client about to attach brings this size: the PTY takes it (its ``hello`` then
        says so). Attaching makes that client the active one."""
        self._apply_size(cols, rows)

    def attach(self, client: SessionClient) -> None:
        """Add a client: it gets every chunk of output from now on, and is the active one."""
        self.clients.add(client)
        self._answers.attach(client)
        self._make_active(client)
        self._match_reads_to_clients()
        self._touch()

    def detach(self, client: SessionClient) -> None:
        """Remove a client; the others may be ready for more output, and the one active
        before it is active again (its size applies)."""
        if client not in self.clients:
            return
        self.clients.discard(client)
        self._answers.detach(client)
        was_active = self.active_client is client
        self._recent.remove(client)
        if was_active and self._recent:
            self._make_active(self._recent[-1])
        self._match_reads_to_clients()
        self._touch()
        self.drained()

    def input(self, client: SessionClient, data: bytes) -> None:
        """Input from ``client``. Typed input makes it the active client (and its size the
        PTY's, tmux's ``latest``); a terminal's answer to a query is passed once, the active
        client's first (SPEC 6.5). Input from a client no longer attached is ignored.

        Raises ``InputOverflow`` when the program does not read its input, ``PTYClosed`` when
        it has exited.
        """
        if client not in self.clients:
            return
        now = time.monotonic()
        active = client is self.active_client
        filtered = self._answers.filter_input(client, data, active=active, now=now)
        if filtered.typed and not active:
            self._make_active(client)
        if filtered.data:
            self.pty.write(filtered.data)
        self._schedule_answers()
        self._touch()

    def resize(self, client: SessionClient) -> None:
        """``client``'s terminal changed size (its ``cols``, ``rows``): it is the active
        client, and its size is the PTY's."""
        if client in self.clients:
            self._make_active(client)

    def _make_active(self, client: SessionClient) -> None:
        recent = self._recent
        if not recent or recent[-1] is not client:
            with contextlib.suppress(ValueError):
                recent.remove(client)
            recent.append(client)
        if client.may_resize:
            self._apply_size(client.cols, client.rows)

    def _schedule_answers(self) -> None:
        """Answers held back from other clients go out when the active one did not answer."""
        deadline = self._answers.deadline
        timer = self._answer_timer
        if deadline is None or (timer is not None and timer.when() <= deadline):
            return
        if timer is not None:
            timer.cancel()
        self._answer_timer = asyncio.get_running_loop().call_at(deadline, self._release_answers)

    def _release_answers(self) -> None:
        self._answer_timer = None
        due = self._answers.release(time.monotonic())
        if due and self._pty is not None and self._closing is None:
            with contextlib.suppress(WxcodePtyError):  # the program is gone or not reading
                self._pty.write(due)
        self._schedule_answers()

    def _apply_size(self, cols: int, rows: int) -> None:
        if (cols, rows) != (self.cols, self.rows):
            self.cols, self.rows = cols, rows
            if self._screen is not None:
                self._screen.resize(cols, rows)
            if self._pty is not None:
                self._pty.resize(cols, rows)
            for client in tuple(self.clients):
                client.send_size(cols, rows)

    # -- the Claude session id ---------------------------------------------------------------

    def on_claude_id(self, claude_session_id: str, reason: str | None) -> None:
        """The profile's tracker learned the current id (from the output path: no waiting)."""
        if self._closing is None and claude_session_id != self.claude_session_id:
            self._change_claude_id(claude_session_id, reason)
            self._recorder.record(claude_session_id=claude_session_id)

    def on_claude_state(self, state: ClaudeState, detail: str | None) -> None:
        """The profile's tracker learned what Claude is doing: tell the clients and the host."""
        if self._closing is not None or (state, detail) == (
            self.claude_state,
            self.claude_state_detail,
        ):
            return
        self.claude_state, self.claude_state_detail = state, detail
        self.claude_state_since = since = time.time()
        for client in tuple(self.clients):
            client.send_claude_state(state, detail, since)
        if self._settings.on_claude_state is not None:
            task = asyncio.get_running_loop().create_task(self._tell_host(state, detail))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    async def _tell_host(self, state: ClaudeState, detail: str | None) -> None:
        callback = self._settings.on_claude_state
        try:
            if callback is not None:
                await callback(self.output_project_id, state, detail)
        except Exception:
            log.exception("on_claude_state failed project=%s", self.output_project_id)

    async def set_claude_session_id(
        self, claude_session_id: str | None, *, reason: str | None = None
    ) -> None:
        """Store the current Claude session id and tell the clients."""
        self._change_claude_id(claude_session_id, reason)
        await self._recorder.write(claude_session_id=claude_session_id)

    def _change_claude_id(self, claude_session_id: str | None, reason: str | None) -> None:
        previous, self.claude_session_id = self.claude_session_id, claude_session_id
        log.info("claude session project=%s changed", self.output_project_id)
        if claude_session_id is not None and claude_session_id != previous:
            for client in tuple(self.clients):
                client.send_claude_session(claude_session_id, previous, reason)

    # -- the end -----------------------------------------------------------------------------

    async def close(self, reason: CloseReason) -> None:
        """End the program's whole tree and wait until the session has ended."""
        self.mark_closing(reason)
        if self._pty is not None:
            await self._pty.terminate()
        if self._supervisor is not None:
            await asyncio.shield(self._supervisor)

    def mark_closing(self, reason: CloseReason) -> None:
        """Say at once that the session is ending (a batch of closes marks all first)."""
        if self._closing is None and not self._ended.done():
            self._closing = reason
            self._close_requested.set()

    async def _supervise(self) -> None:
        """Wait for the program to end; retry or record how it ended. Never dies silently:
        whatever happens, the session ends and its clients are told."""
        status = ExitStatus(None, None)
        reason: str | None = None
        try:
            status, reason = await self._run()
        except Exception as exc:
            log.exception("supervising project=%s failed", self.output_project_id)
            reason = f"internal error: {exc}"
            if self._pty is not None:
                with contextlib.suppress(Exception):
                    await self._pty.terminate()
            with contextlib.suppress(Exception):
                await self._close_tracker()
        finally:
            await self._finish(status, reason)

    async def _run(self) -> tuple[ExitStatus, str | None]:
        settings = self._settings
        attempt = 0
        fallback_used = False
        while True:
            status = await self.pty.wait()
            # Measured before the sweep below, which can take a while.
            early = time.monotonic() - self._started_at < settings.early_exit
            await self.pty.terminate()  # sweep descendants
            await self._close_tracker()
            if self._closing is not None:
                return status, None
            retry: Retry | None = None
            if not fallback_used:
                tail = self.buffer.since(max(self.buffer.start, self.buffer.end - _TAIL))
                retry = self.profile.after_exit(self.claude_session_id, status, early, tail.data)
            if retry is not None:
                fallback_used = True
                log.warning("retry project=%s: %s", self.output_project_id, retry.reason)
                await self.set_claude_session_id(retry.claude_session_id, reason=retry.reason)
            elif early and self.resumed:
                attempt += 1
                if attempt >= settings.respawn_attempts:
                    return status, (
                        f"the program exited {attempt} times right after start"
                        f" (last: {describe(status)})"
                    )
                delay = settings.retry_backoff * 2 ** (attempt - 1)
                log.warning(
                    "respawn project=%s died at start (%s); retry in %.1fs",
                    self.output_project_id,
                    describe(status),
                    delay,
                )
                # A close (DELETE, shutdown, the reaper) does not wait out the backoff.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._close_requested.wait(), delay)
                if self._closing is not None:
                    return status, None
            else:
                return status, None
            try:
                await self._launch()
            except SpawnError as exc:
                return status, str(exc)
            if self._closing is not None:
                # Ended while the retry was being prepared: close() ended the old program.
                await self.pty.terminate()

    async def _finish(self, status: ExitStatus, reason: str | None) -> None:
        """Record how the run ended and let go of everything; the session ends whatever
        fails here (a session that never ends would make every later attach wait)."""
        closing = self._closing
        try:
            await self._record_end(status, reason)
            if self._answer_timer is not None:
                self._answer_timer.cancel()
                self._answer_timer = None
            if self._screen_task is not None:
                self._screen_task.cancel()
                await asyncio.wait({self._screen_task})
            self.claude_state = self.claude_state_detail = self.claude_state_since = None
            if self._callbacks:
                # The host's calls get a moment to finish; one that hangs is not waited for.
                await asyncio.wait(set(self._callbacks), timeout=5)
                for task in self._callbacks:
                    task.cancel()
                await asyncio.wait(set(self._callbacks))
        except Exception:
            log.exception("ending project=%s failed", self.output_project_id)
        finally:
            log.info(
                "exit project=%s session=%s %s closing=%s",
                self.output_project_id,
                self.session_id,
                describe(status),
                closing,
            )
            if self._on_end is not None:
                self._on_end(self, status)
            self._ended.set_result(status)
            self._notify_changed()
            if closing is CloseReason.FENCED:
                for client in tuple(self.clients):
                    client.send_moved()
            elif closing is not CloseReason.SHUTDOWN:
                for client in tuple(self.clients):
                    client.send_exit(status)

    async def _record_end(self, status: ExitStatus, reason: str | None) -> None:
        closing = self._closing
        if closing not in (CloseReason.SHUTDOWN, CloseReason.FENCED):
            # After a shutdown the row stays "running" with the old pid: the next start ends
            # any survivor of the tree and respawns it. A fenced host's writes would not land.
            if closing is CloseReason.IDLE:
                final = SessionStatus.IDLE
            elif closing is CloseReason.STOPPED:
                final = SessionStatus.STOPPED
            else:
                final = SessionStatus.FAILED if reason else SessionStatus.EXITED
            try:
                await self._recorder.write(
                    status=final,
                    status_reason=reason,
                    pid=None,
                    pid_start_time=None,
                    exit_code=status.code,
                    exit_signal=status.signal,
                    last_activity=self.last_activity,
                    claude_session_id=self.claude_session_id,
                )
            except Exception:
                # The row keeps saying "running": the next start sweeps and respawns it.
                log.exception("recording the end of project=%s failed", self.output_project_id)
        await self._recorder.flush()

    async def _close_tracker(self) -> None:
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            await tracker.aclose()


def describe(status: ExitStatus) -> str:
    """How a program ended, for logs and reasons."""
    if status.signal:
        return f"killed by {status.signal}"
    return f"exit code {status.code}"
