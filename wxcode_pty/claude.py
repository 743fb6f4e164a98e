"""``ClaudeCommand``: the Claude Code CLI with a session id that is always known.

The plugin picks the Claude session id (a UUID) before Claude starts. Spawn rule: when the
transcript of that id exists for the session's realpath cwd, start with ``--resume <id>``,
otherwise with ``--session-id <id>``; never both. Before a spawn, any live process still holding
the id is ended (two processes on one id corrupt its transcript).

While Claude runs, the current id is tracked, strongest signal first: a silent SessionStart
hook injected with ``--settings`` (it reports to a per-spawn Unix socket); Claude's own
``sessions/<pid>.json``; ``session_id`` in stream-json ``init``/``result`` lines of the output;
the ``claude --resume <id>`` hint printed on exit. A change seen only in the output is believed
when its transcript exists. When a resume fails because the conversation is gone, one retry
starts a fresh conversation and says why.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import proctree
from .commands import IdListener, Retry, SpawnPlan, SpawnRequest

if TYPE_CHECKING:
    from .pty import ExitStatus
    from .session import PTYSession

__all__ = ["ClaudeCommand", "ClaudeTracker", "project_folder", "transcript_path"]

log = logging.getLogger("wxcode_pty")

_HOOK_SCRIPT = Path(__file__).resolve().parent / "claude_hook.py"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_RESUME_HINT = re.compile(rb"claude\s+--resume\s+(" + _UUID.pattern.encode() + rb")")
_STREAM_ID = re.compile(rb'"session_id"\s*:\s*"(' + _UUID.pattern.encode() + rb')"')
#: Flags the plugin owns; the stored argv never carries them.
_SESSION_FLAGS = {"--session-id", "--resume", "-r", "--continue", "-c", "--fork-session"}
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


def transcript_path(config_dir: str | Path, cwd: str | Path, claude_session_id: str) -> Path:
    """Where Claude keeps the conversation ``claude_session_id`` started in ``cwd``."""
    return (
        Path(config_dir)
        / "projects"
        / project_folder(os.path.realpath(cwd))
        / f"{claude_session_id}.jsonl"
    )


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


def _holders(claude_session_id: str, config_dir: Path) -> set[proctree.ProcessId]:
    """Live processes holding a Claude session id: by command line or by Claude's pid file."""
    found: set[proctree.ProcessId] = set()
    needle = claude_session_id.encode()
    for pid, cmdline in proctree.each_process("cmdline"):
        if needle in cmdline and any(
            flag.encode() in cmdline for flag in ("--resume", "-r", "--session-id")
        ):
            process = proctree.identify(pid)
            if process is not None:
                found.add(process)
    sessions = config_dir / "sessions"
    with contextlib.suppress(OSError):
        for file in sessions.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, TypeError):
                data = json.loads(file.read_text())
                if data.get("sessionId") == claude_session_id:
                    process = proctree.identify(int(data["pid"]))
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

    async def prepare(self, request: SpawnRequest, on_id: IdListener) -> SpawnPlan:
        config_dir = self.resolve_config_dir(request.env)
        claude_id = request.claude_session_id or str(uuid.uuid4())
        holders = await asyncio.to_thread(_holders, claude_id, config_dir)
        for holder in holders:
            log.warning(
                "ending pid %d: it still holds the Claude session to be resumed", holder.pid
            )
            await proctree.end_processes(holder, None, grace=2.0)
        exists = await asyncio.to_thread(transcript_path(config_dir, request.cwd, claude_id).exists)
        argv = _strip_flags(request.base_argv)
        argv += ["--resume", claude_id] if exists else ["--session-id", claude_id]
        env: dict[str, str] = dict(self.env)
        if self.config_dir is not None:
            env["CLAUDE_CONFIG_DIR"] = str(self.config_dir)
        tracker = ClaudeTracker(config_dir, request.cwd, claude_id, on_id)
        if self.hook:
            socket_path, token = await tracker.listen()
            argv += ["--settings", _hook_settings()]
            env["WXCODE_PTY_HOOK"] = socket_path
            env["WXCODE_PTY_HOOK_TOKEN"] = token
        return SpawnPlan(argv=argv, env=env, claude_session_id=claude_id, tracker=tracker)

    def after_exit(
        self, session: PTYSession, status: ExitStatus, early: bool, tail: bytes
    ) -> Retry | None:
        if not early or status.code == 0:
            return None
        text = _SPACE.sub(b"", _ANSI.sub(b"", tail))
        if not any(gone in text for gone in _GONE_TEXTS):
            return None
        previous = session.claude_session_id
        return Retry(
            claude_session_id=str(uuid.uuid4()),
            reason=(
                f"the stored conversation {previous} could not be resumed;"
                " a new conversation was started"
            ),
        )


def _hook_settings() -> str:
    command = f"{_shell_quote(sys.executable)} -I {_shell_quote(str(_HOOK_SCRIPT))}"
    hook = {"hooks": [{"type": "command", "command": command}]}
    return json.dumps({"hooks": {"SessionStart": [hook]}}, separators=(",", ":"))


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


class ClaudeTracker:
    """Follows the Claude session id of one running Claude process."""

    def __init__(
        self, config_dir: Path, cwd: Path, claude_session_id: str, on_id: IdListener
    ) -> None:
        self.config_dir = config_dir
        self.cwd = cwd
        self.current = claude_session_id
        self._on_id = on_id
        self._line = bytearray()
        self._server: asyncio.base_events.Server | None = None
        self._folder: str | None = None
        self._token = secrets.token_urlsafe(16)
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None

    async def listen(self) -> tuple[str, str]:
        """Start the hook's socket, in a private folder; returns its path and token."""
        self._folder = tempfile.mkdtemp(prefix="wxcode-pty-hook-")
        path = os.path.join(self._folder, "hook.sock")
        self._server = await asyncio.start_unix_server(self._on_hook, path)
        return path, self._token

    def started(self, pid: int) -> None:
        """Also follow Claude's own ``sessions/<pid>.json`` (the fallback to the hook)."""
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_pid_file(pid))

    def _accept(self, claude_session_id: str, confirmed: bool) -> None:
        claude_session_id = claude_session_id.lower()
        if claude_session_id == self.current:
            return
        if (
            not confirmed
            and not transcript_path(self.config_dir, self.cwd, claude_session_id).exists()
        ):
            return
        self.current = claude_session_id
        self._on_id(claude_session_id, None)

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
        if self._line:
            self.feed(b"\n")
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._folder is not None:
            await asyncio.to_thread(shutil.rmtree, self._folder, True)
            self._folder = None
