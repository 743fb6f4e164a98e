"""``PTYSession``: one running program with its metadata, replay buffer and attached clients.

The session is the fan-out point: every chunk the program writes is appended to the buffer and
handed to each attached client, synchronously and without waiting on any of them (a client
queues what it gets and sends it on its own schedule). Lifecycle decisions (spawn, exit,
reaping) belong to the manager.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .buffer import ReplayBuffer

if TYPE_CHECKING:
    from .commands import Tracker
    from .pty import BidirectionalPTY, ExitStatus

__all__ = ["PTYSession", "SessionClient"]

#: Up to this many clients, each read from the PTY is handed on at once (its sends overlap the
#: kernel refilling the PTY); with more, a wakeup's reads go out as one chunk, since a frame to
#: each of them per 4 KiB read costs more than it saves (measured with 50 MB to 2-10 clients).
_EAGER_CLIENTS = 5


class SessionClient(Protocol):
    """Something attached to a session: a WebSocket, a test probe.

    Output is read from the program while no client is attached or at least one is not
    ``congested``: all clients being slow slows the program down, one slow client does not.
    """

    @property
    def congested(self) -> bool:
        """True while this client has a large backlog of output to send."""
        ...

    def send_output(self, data: bytes) -> None:
        """New output; must not block or await."""
        ...

    def send_claude_session(
        self, claude_session_id: str, previous: str | None, reason: str | None
    ) -> None:
        """The Claude session id changed."""
        ...

    def send_exit(self, status: ExitStatus) -> None:
        """The program ended; no more output follows."""
        ...


@dataclass(eq=False)
class PTYSession:
    """One run of a program for one output project."""

    session_id: str
    output_project_id: str
    pty: BidirectionalPTY
    cwd: Path
    argv: list[str]
    claude_session_id: str | None = None
    cols: int = 80
    rows: int = 24
    resumed: bool = False
    buffer: ReplayBuffer = field(default_factory=ReplayBuffer)
    clients: set[SessionClient] = field(default_factory=set)
    created_at: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.time)
    tracker: Tracker | None = None
    #: Why the session is being ended by the server ("idle", "stopped", "shutdown"), if it is.
    closing: str | None = None
    #: ``time.monotonic()`` of the latest spawn, to tell a program that died at start.
    started_at: float = 0.0
    #: Small tasks (store writes) that must not be garbage-collected while running.
    background: set[asyncio.Task[None]] = field(default_factory=set)
    #: Set once the program is gone and its row records how it ended.
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set (and replaced) whenever a program starts or the session ends.
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: ``clients`` as of the last attach or detach, for the hot path: a client that detaches
    #: while output is handed out leaves this tuple as it was.
    _fanout: tuple[SessionClient, ...] = field(default=(), init=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self.pty.pid if self.pty.running else None

    @property
    def exit_status(self) -> ExitStatus | None:
        return self.pty.exit_status

    def notify_changed(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def touch(self) -> None:
        self.last_activity = time.time()

    def on_output(self, data: bytes) -> None:
        """The hot path (every read from the PTY): buffer, fan out, let the tracker look."""
        self.buffer.append(data)
        self.last_activity = time.time()
        fanout = self._fanout
        # A client's backlog only changes with what it is sent: all congested is known here.
        congested = bool(fanout)
        for client in fanout:
            client.send_output(data)
            congested = congested and client.congested
        if self.tracker is not None:
            self.tracker.feed(data)
        if congested:
            self.pty.pause_reading()

    def attach(self, client: SessionClient) -> None:
        """Add a client: it gets every chunk of output from now on."""
        self.clients.add(client)
        self.match_reads_to_clients()

    def detach(self, client: SessionClient) -> None:
        """Remove a client; the others may be ready for more output."""
        self.clients.discard(client)
        self.match_reads_to_clients()
        self.pty.resume_reading()

    def match_reads_to_clients(self) -> None:
        """Hand on each read at once for a few clients, gathered for many."""
        self._fanout = tuple(self.clients)
        self.pty.gather_reads = len(self.clients) > _EAGER_CLIENTS

    def drained(self) -> None:
        """Called by a client that caught up: reading goes on if it was paused."""
        self.pty.resume_reading()
