"""Command profiles: what a session runs, decided on the server, never by a client.

A profile turns a stored record (base argv, cwd, Claude session id) into a ``SpawnPlan`` (the
exact argv and extra environment of one spawn), may watch the running program, and may ask
for one retry after an early exit. ``ShellCommand`` runs any program as it is;
``ClaudeCommand`` (in ``claude.py``) adds session ids, resume and tracking.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .pty import ExitStatus

__all__ = [
    "ClaudeState",
    "CommandProfile",
    "ProgramEvents",
    "Retry",
    "ShellCommand",
    "SpawnPlan",
    "SpawnRequest",
    "Tracker",
    "default_shell",
]


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    """What the manager knows when it is about to start a program."""

    output_project_id: str
    session_id: str
    base_argv: Sequence[str]
    cwd: Path
    claude_session_id: str | None
    env: Mapping[str, str]
    #: Seconds for each step of SIGHUP, SIGTERM, SIGKILL when the profile ends a process.
    kill_grace: float


class Tracker(Protocol):
    """Watches one running program (e.g. for Claude session id changes)."""

    def started(self, pid: int) -> None:
        """The program runs as ``pid``."""
        ...

    def feed(self, data: bytes) -> None:
        """The program wrote ``data`` (called on the hot path: must be cheap)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SpawnPlan:
    """The exact command of one spawn. ``argv`` may add per-spawn flags to the base argv.

    ``claude_session_id`` None leaves the session's id as it is. ``tracker`` watches the
    program once it runs; the manager closes it when the program ends.
    """

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    claude_session_id: str | None = None
    tracker: Tracker | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Start again at once with another Claude session id, telling clients ``reason``."""

    claude_session_id: str | None
    reason: str


class ClaudeState(StrEnum):
    """What Claude is doing (SPEC 8.1)."""

    #: Spawned; Claude has not started its session yet.
    STARTING = "starting"
    #: At the prompt, waiting for a new request.
    READY = "ready"
    #: Running a turn.
    WORKING = "working"
    #: Needs the user: a permission prompt or a question.
    WAITING = "waiting"


class ProgramEvents(Protocol):
    """What a profile's tracker reports about the running program (the session listens).

    Called from the loop; must not block or await.
    """

    def on_claude_id(self, claude_session_id: str, reason: str | None) -> None:
        """The current Claude session id is ``claude_session_id``."""
        ...

    def on_claude_state(self, state: ClaudeState, detail: str | None) -> None:
        """Claude is now in ``state`` (``detail``: e.g. the permission it asks for)."""
        ...


class CommandProfile(Protocol):
    """The server-side choice of what to run."""

    @property
    def kind(self) -> str:
        """Stored with each row, so that a restart knows how to respawn it."""
        ...

    def base_argv(self) -> list[str]:
        """The argv stored for a new session (without per-spawn flags)."""
        ...

    async def prepare(self, request: SpawnRequest, events: ProgramEvents) -> SpawnPlan:
        """The command of one spawn; ``events`` is for the plan's tracker."""
        ...

    def after_exit(
        self, claude_session_id: str | None, status: ExitStatus, early: bool, tail: bytes
    ) -> Retry | None:
        """The program ended (``early``: soon after its start; ``tail``: its last output)
        while the session held ``claude_session_id``: a ``Retry``, or None."""
        ...


def default_shell() -> str:
    """The user's login shell, or /bin/sh."""
    shell = os.environ.get("SHELL")
    if shell and shutil.which(shell):
        return shell
    return "/bin/sh"


@dataclass(frozen=True, slots=True)
class ShellCommand:
    """Run ``argv`` as it is, in the session's directory."""

    argv: Sequence[str]
    kind: str = "shell"

    def __post_init__(self) -> None:
        if isinstance(self.argv, str):
            raise TypeError("ShellCommand takes an argv list, e.g. ShellCommand(['bash', '-l'])")
        if not self.argv:
            raise ValueError("ShellCommand needs a program to run")

    def base_argv(self) -> list[str]:
        return list(self.argv)

    async def prepare(self, request: SpawnRequest, events: ProgramEvents) -> SpawnPlan:
        return SpawnPlan(argv=list(request.base_argv))

    def after_exit(
        self, claude_session_id: str | None, status: ExitStatus, early: bool, tail: bytes
    ) -> Retry | None:
        return None
