"""``ClaudeCommand``: the Claude Code CLI with a session id that is always known.

The plugin picks the Claude session id (a UUID) before Claude starts. Spawn rule: when the
transcript of that id exists for the session's realpath cwd, start with ``--resume <id>``,
otherwise with ``--session-id <id>``; never both. Before a spawn, any live Claude process still
holding the id is ended (two processes on one id corrupt its transcript); other programs that
mention the id, such as a ``grep`` of it, are left alone.

While Claude runs, the current id is tracked, strongest signal first: a silent SessionStart
hook injected with ``--settings`` (it reports to a per-spawn Unix socket); Claude's own
``sessions/<pid>.json``; ``session_id`` in stream-json ``init``/``result`` lines of the output;
the ``claude --resume <id>`` hint printed on exit. A change seen only in the output is believed
when its transcript exists (looked up in a thread: the output path touches no file). When a
resume fails because the conversation is gone, one retry starts a fresh conversation and says
why.

The same silent hooks report what Claude is doing (SPEC 8.1): ``UserPromptSubmit``,
``PreToolUse`` and ``PostToolUse`` (a tool ran: a permission prompt was approved) mean working,
``Notification`` waiting for the user (unless it only says Claude has sat idle),
``SessionStart`` and ``Stop`` ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import proctree
from .commands import ClaudeState, ProgramEvents, Retry, SpawnPlan, SpawnRequest

if TYPE_CHECKING:
    from .pty import ExitStatus

__all__ = [
    "ClaudeCommand",
    "ClaudeTracker",
    "project_dir",
    "project_folder",
    "state_of",
    "transcript_path",
]

log = logging.getLogger("wxcode_pty")

_HOOK_SCRIPT = Path(__file__).resolve().parent / "claude_hook.py"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_RESUME_HINT = re.compile(rb"claude\s+--resume\s+(" + _UUID.pattern.encode() + rb")")
_STREAM_ID = re.compile(rb'"session_id"\s*:\s*"(' + _UUID.pattern.encode() + rb')"')
#: Flags the plugin owns; the stored argv never carries them.
_SESSION_FLAGS = frozenset({"--session-id", "--resume", "-r", "--continue", "-c", "--fork-session"})
#: Flags whose value is the conversation a Claude process holds.
_ID_FLAGS = frozenset({"--session-id", "--resume", "-r"})
#: Programs that run Claude as a script (``node cli.js``, the stand-in's ``python3 claude``).
_INTERPRETER = re.compile(r"(node|nodejs|bun|deno|python[0-9.]*)")
#: Interpreter options after which no script file follows (code or a module instead).
_NO_SCRIPT = frozenset({"-c", "-e", "-m", "-p", "--eval", "--print"})
#: Compared without white space: the TUI may draw spaces as cursor moves.
_GONE_TEXTS = (b"NoconversationfoundwithsessionID", b"isalreadyinuse")
_SPACE = re.compile(rb"\s+")
#: Longest partial line kept while looking for stream-json ids.
_MAX_LINE = 1 << 20
_MAX_FOLDER = 200


def project_folder(cwd: str | Path) -> str:
    """Claude's folder name for a project: every non-alphanumeric UTF-16 unit becomes '-';
    past 200 characters, cut and suffixed with a base-36 hash of the path."""
    raw = str(cwd).encode("utf-16-le")
    units = [int.from_bytes(raw[i : i + 2], "little") for i in range(0, len(raw), 2)]
    name = "".join(chr(u) if chr(u).isascii() and chr(u).isalnum() else "-" for u in units)
    if len(name) <= _MAX_FOLDER:
        return name
    digest = 0
    for unit in units:  # JavaScript's (h << 5) - h + c on a signed 32-bit int
        digest = ((digest << 5) - digest + unit) & 0xFFFFFFFF
    if digest >= 1 << 31:
        digest -= 1 << 32
    digest = abs(digest)
    digits = ""
    while True:
        digest, rest = divmod(digest, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[rest] + digits
        if digest == 0:
            break
    return f"{name[:_MAX_FOLDER]}-{digits}"


def project_dir(config_dir: str | Path, cwd: str | Path) -> Path:
    """Claude's folder for the conversations started in ``cwd``. Blocking: it resolves
    ``cwd``'s symbolic links, as Claude does."""
    return Path(config_dir) / "projects" / project_folder(os.path.realpath(cwd))


def transcript_path(config_dir: str | Path, cwd: str | Path, claude_session_id: str) -> Path:
    """Where Claude keeps the conversation ``claude_session_id`` started in ``cwd``."""
    return project_dir(config_dir, cwd) / f"{claude_session_id}.jsonl"


def _strip_flags(argv: Sequence[str]) -> list[str]:
    """``argv`` without the per-spawn session flags (and their values)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _SESSION_FLAGS:
            skip = "=" not in arg and name in ("--session-id", "--resume", "-r")
            continue
        kept.append(arg)
    return kept


def _holds(argv: Sequence[str], claude_session_id: str) -> bool:
    """True when ``claude_session_id`` is the value of a session flag in ``argv``
    (``--resume X``, ``-r X``, ``--resume=X``, ``--session-id X``, ...)."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        name, inline, value = arg.partition("=")
        if inline and name.startswith("--"):
            if name in _ID_FLAGS and value == claude_session_id:
                return True
        elif arg in _ID_FLAGS and argv[i + 1 : i + 2] == [claude_session_id]:
            return True
    return False


def _runs_claude(pid: int, argv: Sequence[str], executable: str | None) -> bool:
    """True when the process runs Claude: its executable, its ``argv[0]`` or the script its
    interpreter runs is named ``claude``, lies in an ``@anthropic-ai/claude-code`` package, or
    is ``executable`` (a resolved path). Blocking (it reads ``/proc``)."""
    programs = list(argv[:1])
    with contextlib.suppress(OSError):
        programs.append(os.readlink(f"/proc/{pid}/exe"))
    if any(_INTERPRETER.fullmatch(os.path.basename(program)) for program in programs):
        for arg in argv[1:]:
            if arg in _NO_SCRIPT:
                break
            if not arg.startswith("-"):
                programs.append(arg)
                break
    return any(
        os.path.basename(program) == "claude"
        or "/@anthropic-ai/claude-code" in program
        or (
            executable is not None
            and os.path.isabs(program)
            and os.path.realpath(program) == executable
        )
        for program in programs
    )


def _cmdline(fields: list[bytes]) -> list[str]:
    if fields and not fields[-1]:
        fields = fields[:-1]  # the NUL that ends the last argument
    return [os.fsdecode(field) for field in fields]


def _executable(program: str, cwd: Path, path: str | None) -> str | None:
    """The resolved path of the configured Claude, looked up as the spawn will."""
    found = shutil.which(program if "/" not in program else os.path.join(cwd, program), path=path)
    return os.path.realpath(found) if found is not None else None


def _holders(
    claude_session_id: str, config_dir: Path, executable: str | None
) -> set[proctree.ProcessId]:
    """Live Claude processes holding a Claude session id: by the session flags of their
    command line, or by Claude's own ``sessions/<pid>.json``. Other programs that mention
    the id (a ``grep -r <id>``, an editor) are not holders. Blocking: run it in a thread."""
    found: set[proctree.ProcessId] = set()
    needle = claude_session_id.encode()
    for pid, fields in proctree.each_process("cmdline"):
        if any(needle in field for field in fields):
            argv = _cmdline(fields)
            if _holds(argv, claude_session_id) and _runs_claude(pid, argv, executable):
                process = proctree.identify(pid)
                if process is not None:
                    found.add(process)
    with contextlib.suppress(OSError):
        for file in (config_dir / "sessions").glob("*.json"):
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
                data = json.loads(file.read_text())
                if data.get("sessionId") != claude_session_id:
                    continue
                pid = int(data["pid"])
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = _cmdline(f.read().split(b"\0"))
                if _runs_claude(pid, argv, executable):
                    process = proctree.identify(pid)
                    if process is not None:
                        found.add(process)
    return found


@dataclass(frozen=True, slots=True)
class ClaudeCommand:
    """Run the Claude Code CLI, resuming each project's conversation across restarts.

    ``executable``: the ``claude`` program (looked up on PATH). ``args``: extra arguments
    (never session flags: those are the plugin's). ``config_dir``: Claude's config folder;
    by default ``CLAUDE_CONFIG_DIR`` of the program's environment, else ``~/.claude``.
    ``hook``: inject the SessionStart hook (the most reliable way to follow ``/clear``).
    """

    executable: str = "claude"
    args: Sequence[str] = ()
    config_dir: str | Path | None = None
    hook: bool = True
    env: Mapping[str, str] = field(default_factory=dict)
    kind: str = "claude"

    def __post_init__(self) -> None:
        if isinstance(self.args, str):
            raise TypeError(
                "ClaudeCommand args is a list, e.g. ClaudeCommand(args=['--model', 'sonnet'])"
            )
        owned = [a for a in self.args if a.split("=", 1)[0] in _SESSION_FLAGS]
        if owned:
            raise ValueError(
                f"ClaudeCommand args may not contain session flags (the plugin sets them): {owned}"
            )

    def base_argv(self) -> list[str]:
        return [self.executable, *self.args]

    def resolve_config_dir(self, env: Mapping[str, str]) -> Path:
        if self.config_dir is not None:
            return Path(self.config_dir)
        if env.get("CLAUDE_CONFIG_DIR"):
            return Path(env["CLAUDE_CONFIG_DIR"])
        return Path(env.get("HOME") or os.path.expanduser("~")) / ".claude"

    async def prepare(self, request: SpawnRequest, events: ProgramEvents) -> SpawnPlan:
        config_dir = self.resolve_config_dir(request.env)
        claude_id = request.claude_session_id or str(uuid.uuid4())
        executable = await asyncio.to_thread(
            _executable, self.executable, request.cwd, request.env.get("PATH")
        )
        holders = await asyncio.to_thread(_holders, claude_id, config_dir, executable)
        for holder in holders:
            log.warning(
                "ending pid %d: it still holds the Claude session to be resumed", holder.pid
            )
            await proctree.end_processes(holder, None, grace=request.kill_grace)
        folder = await asyncio.to_thread(project_dir, config_dir, request.cwd)
        exists = await asyncio.to_thread(folder.joinpath(f"{claude_id}.jsonl").exists)
        argv = _strip_flags(request.base_argv)
        argv += ["--resume", claude_id] if exists else ["--session-id", claude_id]
        env: dict[str, str] = dict(self.env)
        if self.config_dir is not None:
            env["CLAUDE_CONFIG_DIR"] = str(self.config_dir)
        tracker = ClaudeTracker(config_dir, folder, claude_id, events)
        if self.hook:
            socket_path, token = await tracker.listen()
            argv += ["--settings", _hook_settings()]
            env["WXCODE_PTY_HOOK"] = socket_path
            env["WXCODE_PTY_HOOK_TOKEN"] = token
        return SpawnPlan(argv=argv, env=env, claude_session_id=claude_id, tracker=tracker)

    def after_exit(
        self, claude_session_id: str | None, status: ExitStatus, early: bool, tail: bytes
    ) -> Retry | None:
        if not early or status.code == 0:
            return None
        text = _SPACE.sub(b"", _ANSI.sub(b"", tail))
        if not any(gone in text for gone in _GONE_TEXTS):
            return None
        return Retry(
            claude_session_id=str(uuid.uuid4()),
            reason=(
                f"the stored conversation {claude_session_id} could not be resumed;"
                " a new conversation was started"
            ),
        )


#: The hooks injected: SessionStart follows the id; the others follow Claude's state (SPEC 8.1).
_HOOK_EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "Notification",
    "Stop",
    "SessionEnd",
)


def _hook_settings() -> str:
    command = f"{_shell_quote(sys.executable)} -I {_shell_quote(str(_HOOK_SCRIPT))}"
    hook = {"hooks": [{"type": "command", "command": command}]}
    return json.dumps({"hooks": {event: [hook] for event in _HOOK_EVENTS}}, separators=(",", ":"))


def state_of(event: Mapping[str, object]) -> tuple[ClaudeState, str | None] | None:
    """Claude's state after a hook ``event`` (SPEC 8.1); None when it does not change it."""
    name = event.get("hook_event_name")
    if name in ("SessionStart", "Stop"):
        return ClaudeState.READY, None
    if name in ("UserPromptSubmit", "PreToolUse", "PostToolUse"):
        # PostToolUse: a tool ran, so a permission prompt (waiting) was answered yes.
        return ClaudeState.WORKING, None
    if name == "Notification":
        kind = event.get("notification_type")
        message = event.get("message")
        if isinstance(kind, str) and "idle" in kind:
            # Claude has only sat at its prompt for a while: it is still ready.
            return ClaudeState.READY, None
        return ClaudeState.WAITING, message[:200] if isinstance(message, str) else None
    return None


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


class ClaudeTracker:
    """Follows the Claude session id of one running Claude process.

    ``folder`` is Claude's folder for the project's conversations (``project_dir``, resolved
    once, off the loop): an id seen only in the output or the pid file is believed when its
    transcript is there, which is checked in a thread, never on the output path.
    """

    def __init__(
        self, config_dir: Path, folder: Path, claude_session_id: str, events: ProgramEvents
    ) -> None:
        self.config_dir = config_dir
        self.folder = folder
        self.current = claude_session_id
        self._events = events
        #: Ids this process has moved away from: a weaker signal that still shows one of them
        #: (the pid file is rewritten a moment after the hook) must not move it back.
        self._left: set[str] = set()
        self._line = bytearray()
        self._server: asyncio.base_events.Server | None = None
        self._hook_folder: str | None = None
        self._token = secrets.token_urlsafe(16)
        self._poller: asyncio.Task[None] | None = None
        #: Signals seen so far, and the number of the last one a hook confirmed: an id still
        #: waiting for its check when a hook reports a later change is stale.
        self._signals = 0
        self._confirmed_at = 0
        #: Unconfirmed ids (signal number, id), checked in order by ``_checker``.
        self._unchecked: deque[tuple[int, str]] = deque()
        self._checker: asyncio.Task[None] | None = None

    async def listen(self) -> tuple[str, str]:
        """Start the hook's socket, in a private folder; returns its path and token."""
        self._hook_folder = await asyncio.to_thread(tempfile.mkdtemp, prefix="wxcode-pty-hook-")
        path = os.path.join(self._hook_folder, "hook.sock")
        self._server = await asyncio.start_unix_server(self._on_hook, path)
        return path, self._token

    def started(self, pid: int) -> None:
        """Also follow Claude's own ``sessions/<pid>.json`` (the fallback to the hook)."""
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_pid_file(pid))

    def _accept(self, claude_session_id: str, confirmed: bool) -> None:
        claude_session_id = claude_session_id.lower()
        self._signals += 1
        if confirmed:
            self._confirmed_at = self._signals
            self._switch(claude_session_id)
            return
        if claude_session_id == self.current or claude_session_id in self._left:
            return
        self._unchecked.append((self._signals, claude_session_id))
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._check())

    async def _check(self) -> None:
        while self._unchecked:
            seen_at, claude_session_id = self._unchecked.popleft()
            transcript = self.folder / f"{claude_session_id}.jsonl"
            if await asyncio.to_thread(transcript.exists) and seen_at > self._confirmed_at:
                self._switch(claude_session_id)

    def _switch(self, claude_session_id: str) -> None:
        if claude_session_id != self.current:
            self._left.add(self.current)
            self._left.discard(claude_session_id)
            self.current = claude_session_id
            self._events.on_claude_id(claude_session_id, None)

    async def _on_hook(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
        except (TimeoutError, ValueError, ConnectionError):
            line = b""
        finally:
            writer.close()
        token, _, body = line.decode(errors="replace").partition(" ")
        if not secrets.compare_digest(token, self._token):
            return
        with contextlib.suppress(ValueError, AttributeError):
            event = json.loads(body)
            claude_session_id = event.get("session_id")
            if (
                event.get("hook_event_name") == "SessionStart"
                and isinstance(claude_session_id, str)
                and _UUID.fullmatch(claude_session_id)
            ):
                self._accept(claude_session_id, confirmed=True)
            change = state_of(event)
            if change is not None:
                self._events.on_claude_state(*change)

    async def _poll_pid_file(self, pid: int) -> None:
        path = self.config_dir / "sessions" / f"{pid}.json"
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(OSError, ValueError, AttributeError):
                data = json.loads(await asyncio.to_thread(path.read_text))
                value = data.get("sessionId")
                if isinstance(value, str) and _UUID.fullmatch(value):
                    self._accept(value, confirmed=False)

    def feed(self, data: bytes) -> None:
        """Output: complete lines are searched for stream-json ids and the exit hint."""
        cut = data.rfind(b"\n")
        if cut < 0:
            self._line += data
            if len(self._line) > _MAX_LINE:
                del self._line[: len(self._line) - _MAX_LINE]
            return
        block = bytes(self._line) + data[:cut]
        self._line = bytearray(data[cut + 1 :])
        if b"session_id" in block or b"--resume" in block:
            self._scan(block)

    def _scan(self, block: bytes) -> None:
        for raw in block.split(b"\n"):
            line = _ANSI.sub(b"", raw).strip(b"\r ")
            if line.startswith(b"{") and (b'"init"' in line or b'"result"' in line):
                match = _STREAM_ID.search(line)
                if match:
                    self._accept(match.group(1).decode(), confirmed=False)
            hint = _RESUME_HINT.search(line)
            if hint:
                self._accept(hint.group(1).decode(), confirmed=False)

    async def aclose(self) -> None:
        """Stop watching; ids already seen (the exit hint is the last output) are checked
        before this returns."""
        if self._line:
            self.feed(b"\n")
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._checker is not None:
            await self._checker
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._hook_folder is not None:
            await asyncio.to_thread(shutil.rmtree, self._hook_folder, True)
            self._hook_folder = None
