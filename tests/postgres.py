"""A throwaway PostgreSQL server for the tests, from the machine's own binaries.

``initdb`` into a fresh temporary folder, then ``postgres`` on 127.0.0.1 at a free port with the
server's default durability (``fsync`` on). PostgreSQL refuses to run as root: under root the
server runs as ``nobody`` (or a system user made for it), which owns the folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

SUPERUSER = "postgres"
_SERVICE_USER = "wxcode-pty-test"


def find_bindir() -> Path | None:
    """The folder of ``initdb`` and ``postgres``: on PATH, else Debian's newest version."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        bindir = Path(initdb).resolve().parent
        if (bindir / "postgres").is_file():
            return bindir

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    return found[-1].parent if found else None


def _unprivileged() -> tuple[int, int] | None:
    """(uid, gid) to run the server as, or None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("nobody", _SERVICE_USER):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _SERVICE_USER],
        check=True,
    )
    entry = pwd.getpwnam(_SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """One cluster in its own folder; ``start``/``stop``/``crash`` as often as a test needs."""

    bindir: Path
    settings: dict[str, str] = field(default_factory=dict)
    root: Path = field(init=False)
    port: int = field(init=False, default=0)
    _owner: tuple[int, int] | None = field(init=False, default=None)
    _process: subprocess.Popen[bytes] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._owner = _unprivileged()
        # Not under pytest's tmp_path: its parents are closed to other users.
        self.root = Path(tempfile.mkdtemp(prefix="wxcode-pty-pg-"))
        if self._owner is not None:
            os.chown(self.root, *self._owner)
        self._run(
            self.bindir / "initdb",
            "--pgdata",
            str(self.root / "data"),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            # Skips only initdb's final sync of the new folder; the server keeps fsync on.
            "--no-sync",
        )

    def _run(self, *argv: str | Path) -> None:
        result = subprocess.run(
            [str(part) for part in argv],
            cwd=self.root,
            capture_output=True,
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stderr.decode(errors='replace')}")

    @property
    def _uid(self) -> int | None:
        return None if self._owner is None else self._owner[0]

    @property
    def _gid(self) -> int | None:
        return None if self._owner is None else self._owner[1]

    @property
    def _groups(self) -> list[int] | None:
        return None if self._owner is None else []

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (on the same port as before, after a stop or a crash)."""
        self.port = self.port or _free_port()
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            **self.settings,
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.root / "data")]
        for name, value in options.items():
            argv += ["-c", f"{name}={value}"]
        with open(self.root / "server.log", "ab") as log:
            self._process = subprocess.Popen(
                argv,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                user=self._uid,
                group=self._gid,
                extra_groups=self._groups,
            )
        # postmaster.pid's eighth line says "ready" once connections are accepted.
        pid_file = self.root / "data" / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.log_tail()}")
            with contextlib.suppress(FileNotFoundError):
                lines = pid_file.read_text().splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return
            time.sleep(0.02)
        raise RuntimeError(f"postgres not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text(errors="replace")[-4000:]
        return ""

    def _end(self, signum: signal.Signals, timeout: float = 60.0) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signum)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None

    def stop(self) -> None:
        """Fast shutdown: sessions are cut, committed work is checkpointed."""
        self._end(signal.SIGINT)

    def crash(self) -> None:
        """Immediate shutdown, PostgreSQL's own crash: no checkpoint, and what sat in its
        shared memory (WAL not yet flushed) is lost; the next start runs crash recovery."""
        self._end(signal.SIGQUIT)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


async def postgres_database(server: PostgresServer) -> AsyncIterator[str]:
    """A fresh database on ``server`` (ICU locale, so that sorting is tested), dropped after."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server.url)
    try:
        await admin.execute(
            f"CREATE DATABASE {name} TEMPLATE template0"
            " LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"
        )
        yield server.database_url(name)
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()
