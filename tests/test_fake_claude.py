"""The stand-in `claude` against the real CLI: the same checks run on both.

The plugin's tests trust the stand-in to behave like Claude Code. These checks keep it
honest: each runs on the stand-in always and on the real CLI when
`WXCODE_PTY_REAL_CLAUDE` names one (`tests/fixtures/claude/install.sh` installs it). Both
run offline in a temp config dir; the real CLI then answers every prompt with
"Not logged in", which is enough: flags, transcripts, hooks and exits work as online.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import pytest

from tests.claude_cli import (
    claude_env,
    claude_params,
    prepare_config_dir,
    transcript_path,
)

DEADLINE = 30.0  # seconds; the real CLI starts in one or two


@dataclass
class Claude:
    """One `claude` binary with a prepared config dir and project dir."""

    binary: Path
    config_dir: Path
    cwd: Path

    def env(self) -> dict[str, str]:
        return claude_env(self.config_dir)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args],
            cwd=self.cwd,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )

    def transcript(self, session_id: str) -> Path:
        return transcript_path(self.config_dir, self.cwd, session_id)


@pytest.fixture(params=claude_params())
def claude(request: pytest.FixtureRequest, tmp_path: Path) -> Claude:
    binary = request.param
    assert isinstance(binary, Path)
    # A space and an underscore exercise the project-folder encoding.
    cwd = tmp_path / "my project_1"
    cwd.mkdir()
    config_dir = tmp_path / "config"
    prepare_config_dir(config_dir, [cwd])
    return Claude(binary, config_dir, cwd)


def stream_json(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# ---------------------------------------------------------------------------- flags


def test_unknown_option(claude: Claude) -> None:
    done = claude.run("--x")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: unknown option '--x'"


def test_invalid_session_id(claude: Claude) -> None:
    done = claude.run("-p", "--session-id", "nope", "hello")
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: Invalid session ID. Must be a valid UUID."


def test_session_id_with_resume_needs_fork_session(claude: Claude) -> None:
    done = claude.run("-p", "--session-id", str(uuid.uuid4()), "--resume", str(uuid.uuid4()), "x")
    assert done.returncode == 1
    assert "--fork-session" in done.stderr


def test_version_needs_nothing(claude: Claude) -> None:
    done = claude.run("--version")
    assert done.returncode == 0
    assert re.fullmatch(r"\d+\.\d+\.\d+ \(Claude Code\)", done.stdout.strip())


# ---------------------------------------------------------------------------- transcripts


def test_session_id_of_existing_transcript_is_refused(claude: Claude) -> None:
    session_id = str(uuid.uuid4())
    # Offline the turn fails (exit 1), but the prompt was sent: the transcript exists.
    claude.run("-p", "--session-id", session_id, "hello")
    assert claude.transcript(session_id).is_file()

    done = claude.run("-p", "--session-id", session_id, "hello")
    assert done.returncode == 1
    assert done.stderr.strip() == f"Error: Session ID {session_id} is already in use."


def test_long_cwd_transcript_folder(claude: Claude) -> None:
    claude.cwd = claude.cwd / ("a" * 120) / ("b_" * 50)
    claude.cwd.mkdir(parents=True)
    session_id = str(uuid.uuid4())
    claude.run("-p", "--session-id", session_id, "hello")
    assert claude.transcript(session_id).is_file()
    assert len(claude.transcript(session_id).parent.name) > 200


def test_resume_of_missing_conversation(claude: Claude) -> None:
    session_id = str(uuid.uuid4())
    done = claude.run("-p", "--resume", session_id, "hello")
    assert done.returncode == 1
    assert done.stderr.strip() == f"No conversation found with session ID: {session_id}"


def test_resume_of_missing_conversation_stream_json(claude: Claude) -> None:
    session_id = str(uuid.uuid4())
    done = claude.run(
        "-p", "--output-format", "stream-json", "--verbose", "--resume", session_id, "hello"
    )
    assert done.returncode == 1
    [result] = stream_json(done.stdout)
    assert result["type"] == "result"
    assert result["subtype"] == "error_during_execution"
    assert result["is_error"] is True
    assert result["errors"] == [f"No conversation found with session ID: {session_id}"]


def test_resume_keeps_the_id(claude: Claude) -> None:
    session_id = str(uuid.uuid4())
    claude.run("-p", "--session-id", session_id, "hello")
    done = claude.run(
        "-p", "--output-format", "stream-json", "--verbose", "--resume", session_id, "again"
    )
    assert {line["session_id"] for line in stream_json(done.stdout)} == {session_id}


# ---------------------------------------------------------------------------- stream-json


def test_stream_json_init_carries_session_id(claude: Claude) -> None:
    session_id = str(uuid.uuid4())
    done = claude.run(
        "-p", "--output-format", "stream-json", "--verbose", "--session-id", session_id, "hello"
    )
    lines = stream_json(done.stdout)
    init = next(line for line in lines if line.get("subtype") == "init")
    assert init["type"] == "system"
    assert init["session_id"] == session_id
    assert init["cwd"] == str(claude.cwd)
    assert all(line["session_id"] == session_id for line in lines)
    result = lines[-1]
    # Offline: "success" that is an error. Consumers must look at is_error.
    assert (result["type"], result["subtype"], result["is_error"]) == ("result", "success", True)


def test_session_start_hook_in_print_mode(claude: Claude, tmp_path: Path) -> None:
    record = tmp_path / "hook.jsonl"
    session_id = str(uuid.uuid4())
    done = claude.run(
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--session-id",
        session_id,
        "--settings",
        hook_settings(record),
        "hello",
    )
    [hook] = read_hook_records(record)
    assert hook["input"] == {
        "session_id": session_id,
        "transcript_path": str(claude.transcript(session_id)),
        "cwd": str(claude.cwd),
        "hook_event_name": "SessionStart",
        "source": "startup",
    }
    assert hook["env_session_id"] == session_id
    assert hook["env_project_dir"] == str(claude.cwd)
    subtypes = [line.get("subtype") for line in stream_json(done.stdout)]
    # Hook lines come before init: a reader must not assume init is the first line.
    assert subtypes[:3] == ["hook_started", "hook_response", "init"]


# ---------------------------------------------------------------------------- terminal UI


def test_tui_message_clear_and_exit(claude: Claude, tmp_path: Path) -> None:
    record = tmp_path / "hook.jsonl"
    session_id = str(uuid.uuid4())
    with Terminal.start(
        claude, "--session-id", session_id, "--settings", hook_settings(record)
    ) as tui:
        tui.wait_ready()
        live_file = claude.config_dir / "sessions" / f"{tui.pid}.json"
        tui.wait_until(lambda: live_session_id(live_file) == session_id, "sessions/<pid>.json")
        tui.wait_until(lambda: len(read_hook_records(record)) == 1, "SessionStart at startup")
        assert read_hook_records(record)[0]["input"]["source"] == "startup"
        # Nothing is written before the first message.
        assert not claude.transcript(session_id).exists()

        tui.send(b"hello\r")
        tui.wait_until(lambda: claude.transcript(session_id).is_file(), "first transcript")

        tui.send(b"/clear\r")
        tui.wait_until(lambda: len(read_hook_records(record)) >= 2, "SessionStart after /clear")
        after_clear = read_hook_records(record)[-1]["input"]
        new_id = after_clear["session_id"]
        assert after_clear["source"] == "clear"
        assert new_id != session_id
        tui.wait_until(
            lambda: live_session_id(live_file) == new_id,
            "sessions/<pid>.json to follow /clear",
        )
        # The real CLI records the /clear itself: the new transcript needs no message.
        tui.wait_until(lambda: claude.transcript(new_id).is_file(), "transcript after /clear")

        tui.send(b"/exit\r")
        assert tui.wait_exit() == 0
        text = tui.plain_text()
        assert "Resumethissessionwith:" in text
        assert f"claude--resume{new_id}" in text
        assert not live_file.exists()


def test_tui_exits_129_on_sighup(claude: Claude) -> None:
    with Terminal.start(claude) as tui:
        tui.wait_ready()
        os.kill(tui.pid, signal.SIGHUP)
        assert tui.wait_exit() == 129


def test_tui_resume_of_missing_conversation(claude: Claude) -> None:
    session_id = str(uuid.uuid4())
    with Terminal.start(claude, "--resume", session_id) as tui:
        assert tui.wait_exit() == 1
        assert f"NoconversationfoundwithsessionID:{session_id}" in tui.plain_text()


# ---------------------------------------------------------------------------- helpers


def hook_settings(record: Path) -> str:
    """--settings JSON whose SessionStart hook appends its input and env to `record`.

    It prints nothing: Claude adds a SessionStart hook's stdout to the model's context.
    """
    script = (
        "import json, os, sys\n"
        "entry = {'input': json.load(sys.stdin),"
        " 'env_session_id': os.environ.get('CLAUDE_CODE_SESSION_ID'),"
        " 'env_project_dir': os.environ.get('CLAUDE_PROJECT_DIR')}\n"
        f"with open({str(record)!r}, 'a') as f: f.write(json.dumps(entry) + '\\n')\n"
    )
    command = f"python3 -c {shell_quote(script)}"
    hook = {"hooks": [{"type": "command", "command": command}]}
    return json.dumps({"hooks": {"SessionStart": [hook]}})


def live_session_id(live_file: Path) -> object:
    """`sessionId` from Claude's sessions/<pid>.json, None while it is missing or half
    written (Claude rewrites it in place)."""
    try:
        return json.loads(live_file.read_text()).get("sessionId")
    except (FileNotFoundError, ValueError):
        return None


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


class HookRecord(TypedDict):
    input: dict[str, str]
    env_session_id: str | None
    env_project_dir: str | None


def read_hook_records(record: Path) -> list[HookRecord]:
    if not record.exists():
        return []
    # Only complete lines: a hook may be writing the next one right now.
    lines = record.read_text().split("\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


_ANSI = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|.)")


@dataclass
class Terminal:
    """`claude` on a real PTY, as the plugin runs it, with deadlines on every wait."""

    process: subprocess.Popen[bytes]
    master: int
    output: bytearray = field(default_factory=bytearray)

    @classmethod
    def start(cls, claude: Claude, *args: str) -> _TerminalContext:
        return _TerminalContext(claude, args)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def plain_text(self) -> str:
        """The output without escape sequences or whitespace: the real TUI moves the
        cursor instead of printing spaces."""
        text = _ANSI.sub(b"", bytes(self.output)).decode("utf-8", errors="replace")
        return re.sub(r"\s+", "", text)

    def _pump(self, timeout: float) -> bool:
        """Read what is there within `timeout`; False once the terminal is closed."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every slave fd is closed
            return False
        self.output += data
        return bool(data)

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; output: {self.plain_text()[-500:]}")
            if not self._pump(0.05) and self.process.poll() is not None and not condition():
                pytest.fail(f"claude exited while waiting for {what}: {self.plain_text()[-500:]}")

    def wait_ready(self) -> None:
        # Both show "Not logged in · run /login" once the prompt takes input.
        self.wait_until(lambda: "/login" in self.plain_text(), "the prompt")

    def wait_exit(self) -> int:
        deadline = time.monotonic() + DEADLINE
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"claude did not exit; output: {self.plain_text()[-500:]}")
            self._pump(0.05)
        while self._pump(0):  # collect what is left in the PTY
            pass
        return self.process.returncode


@dataclass
class _TerminalContext:
    claude: Claude
    args: tuple[str, ...]
    terminal: Terminal | None = None

    def __enter__(self) -> Terminal:
        master, slave = os.openpty()
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))

        def become_controlling_terminal() -> None:
            # As the plugin's PTY: the child leads a session whose controlling terminal is
            # the PTY, so closing it sends SIGHUP.
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            process = subprocess.Popen(
                [str(self.claude.binary), *self.args],
                cwd=self.claude.cwd,
                env=self.claude.env(),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                preexec_fn=become_controlling_terminal,
            )
        finally:
            os.close(slave)
        self.terminal = Terminal(process, master)
        return self.terminal

    def __exit__(self, *exc: object) -> None:
        assert self.terminal is not None
        process = self.terminal.process
        if process.poll() is None:
            process.kill()
        process.wait(timeout=DEADLINE)
        os.close(self.terminal.master)
