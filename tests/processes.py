"""Real server processes for end-to-end tests: ``python -m wxcode_pty`` and the example host.

A process is started with this checkout first on ``PYTHONPATH``; its stdout is read line by
line on a thread so tests can wait for a line with a deadline (never a fixed sleep), and its
stderr goes to a file that failures quote.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .server import free_port

__all__ = [
    "PROMPT",
    "PYTHON",
    "REPO",
    "SHELL",
    "URL_LINE",
    "Process",
    "Server",
    "child_env",
    "free_port",
    "run_cli",
]

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PROMPT = "demo$ "
#: A shell with a fixed prompt: screens (and the screenshot) do not depend on the machine.
SHELL = f"env 'PS1={PROMPT}' bash --norc --noprofile"
URL_LINE = re.compile(r"^open ((?:https?|https?\+unix)://\S+?/)(?:\?token=(\S+))?$")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Process:
    """One child process; ``stop`` (or ``kill``) must be called, e.g. from a fixture."""

    def __init__(
        self, argv: list[str], stderr_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.argv = argv
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "ab")  # noqa: SIM115 (closed in _reap)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env() if env is None else env,
            cwd=stderr_path.parent,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return f"{self.argv}\nstdout: {self.lines}\nstderr: {self.stderr[-3000:]}"

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float = 15) -> re.Match[str]:
        """The first stdout line matching ``pattern``; fails if the process ends first."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    match = pattern.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(
                        f"exited ({self.proc.returncode}) before {pattern.pattern!r}: "
                        + self.describe()
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no line {pattern.pattern!r} within {timeout}s: {self.describe()}"
                    )
                self._changed.wait(min(left, 0.2))

    def wait(self, timeout: float) -> int:
        # Reaped only once it ended: closing stdout while the reader thread is still blocked
        # reading it would wait for that read (the buffer's lock), i.e. forever.
        code = self.proc.wait(timeout)
        self._reap()
        return code

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status, None if it was killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.wait(0)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(10)

    def _reap(self) -> None:
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


class Server(Process):
    """``python -m wxcode_pty serve`` on 127.0.0.1; ``started`` waits for the printed URL."""

    def __init__(
        self,
        folder: Path,
        port: int,
        args: list[str],
        name: str = "server",
        subcommand: bool = True,
        unix_socket: Path | None = None,
    ) -> None:
        """On 127.0.0.1:``port``, or on ``unix_socket`` instead (then ``port`` is unused)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = port
        self.url = ""
        self.token: str | None = None
        argv = [
            PYTHON, "-m", "wxcode_pty", *(["serve"] if subcommand else []),
            *(
                ["--host", "127.0.0.1", "--port", str(port)]
                if unix_socket is None
                else ["--unix-socket", str(unix_socket)]
            ),
            *([] if "--db" in args else ["--db", str(folder / "wxcode_pty.db")]),
            "--workdir", str(folder / "projects"),
            *args,
        ]  # fmt: skip
        super().__init__(argv, folder / f"{name}.stderr")

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def started(self, timeout: float = 15) -> Server:
        match = self.wait_for_line(URL_LINE, timeout)
        self.url = match.group(0).removeprefix("open ")
        self.token = match.group(2)
        return self


def run_cli(args: list[str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``python -m wxcode_pty ARGS`` to completion (for usage errors and ``--help``)."""
    return subprocess.run(
        [PYTHON, "-m", "wxcode_pty", *args],
        cwd=cwd,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
