"""Run the plugin in a real server process that tests can SIGKILL and restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp

from .conftest import Attached
from .programs.plugin_server import TOKEN

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "programs" / "plugin_server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``plugin_server.py`` on a fixed port, database and workdir across restarts."""

    def __init__(self, tmp: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.db = tmp / "db.sqlite"
        self.workdir = tmp / "projects"
        self.log = tmp / "server.log"
        self.extra = extra
        # DISABLE_AUTOUPDATER: the real CLI would otherwise install a newer release of itself
        # (globally, with npm) while a test runs.
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DISABLE_AUTOUPDATER": "1",
            **(env or {}),
        }
        self.process: asyncio.subprocess.Process | None = None
        self.origin = f"http://127.0.0.1:{self.port}"
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})

    async def start(self) -> None:
        # The log goes to a file: a pipe nobody reads would block the server once full.
        with open(self.log, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(SERVER),
                str(self.port),
                str(self.db),
                str(self.workdir),
                *self.extra,
                env=self.env,
                stdout=log,
                stderr=log,
            )

    async def ready(self, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while True:
                assert self.process is not None and self.process.returncode is None, "server died"
                try:
                    async with self.http.get(f"{self.origin}/pty/api/sessions") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)

    async def kill(self, signum: int = signal.SIGKILL, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
        self.process = None
        return code

    async def sessions(self) -> dict[str, dict[str, Any]]:
        async with self.http.get(f"{self.origin}/pty/api/sessions") as response:
            assert response.status == 200
            return {s["output_project_id"]: s for s in await response.json()}

    async def post(self, project: str) -> dict[str, Any]:
        async with self.http.post(f"{self.origin}/pty/api/sessions/{project}") as response:
            assert response.status in (200, 201), await response.text()
            return dict(await response.json())

    async def attach(self, project: str, **query: Any) -> Attached:
        ws = await self.http.ws_connect(
            f"{self.origin}/pty/ws/{project}",
            headers={"Origin": self.origin},
            params={k: str(v) for k, v in query.items()},
        )
        return await Attached(ws).handshake()

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            await self.kill(signal.SIGTERM)
        await self.http.close()


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def processes_with(arg: str) -> list[int]:
    """Live (not zombie) processes whose command line holds ``arg``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and arg in cmdline(int(name)):
            try:
                state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in ("Z", "X"):
                found.append(int(name))
    return found


def holders(arg: str) -> list[int]:
    """Processes holding ``arg`` in their command line, not counting a fork that has not yet
    exec'd (it shows its parent's command line for a moment, e.g. while running a hook)."""
    found = processes_with(arg)
    return [pid for pid in found if _ppid(pid) not in found]


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def dump(data: object) -> str:
    return json.dumps(data, indent=1, default=str)
