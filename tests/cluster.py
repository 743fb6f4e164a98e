"""Several ``wxcode-pty serve`` hosts on one PostgreSQL database, for the multi-host tests.

- ``Cluster``: N real server processes started through the CLI, one database, one shared
  workdir, one token; each host can be SIGKILLed, SIGTERMed and restarted.
- ``HAProxy``: Debian's HAProxy in front of them, configured from
  ``examples/haproxy-cluster.cfg`` (only the bind address and the server lines are replaced), so
  the configuration the README shows is the one the tests run.
- ``TcpRelay``: a TCP relay between one host and PostgreSQL that a test can cut (reset every
  connection, or black-hole them: the host vanishes from the network without a RST) and restore.
- ``ProgramWatcher``: a thread polling ``/proc`` that records, per project, how many of the
  test's programs were alive at once, so that "never two programs on one project" is checked
  over the whole test rather than at a few chosen moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .processes import PYTHON, REPO, URL_LINE, Process, child_env, free_port

__all__ = [
    "EXAMPLE_CONFIG",
    "TOKEN",
    "Cluster",
    "ClusterHost",
    "HAProxy",
    "ProgramWatcher",
    "Seen",
    "TcpRelay",
    "can_isolate",
    "echo_program",
    "haproxy_config",
    "inner_pid",
    "new_marker",
]

#: The token every host shares (through WXCODE_PTY_TOKEN), and HAProxy's health check sends.
TOKEN = "cluster-token-0123456789abcdef"
EXAMPLE_CONFIG = REPO / "examples" / "haproxy-cluster.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
_T = TypeVar("_T")
#: A host in its own PID namespace, with its own /proc; ended with it (--kill-child).
ISOLATE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


@functools.cache
def can_isolate() -> bool:
    """Whether ``ISOLATE`` works here (it needs root, or user namespaces)."""
    if shutil.which(ISOLATE[0]) is None:
        return False
    try:
        done = subprocess.run([*ISOLATE, "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def new_marker() -> str:
    """A word put in the test's programs' argv so that the watcher finds them and only them."""
    return f"wxcode-pty-cluster-{uuid.uuid4().hex[:12]}"


def echo_program(marker: str) -> str:
    """A ``--command`` for a light program (a POSIX shell, ~1 MB) that prints ``ready`` and then
    ``echo:<line>`` for each line it reads; ``marker`` is its ``$0``, so it stays in the argv.
    The terminal echoes typed text itself: only ``echo:`` proves the program read it."""
    script = 'echo ready; while IFS= read -r line; do echo "echo:$line"; done'
    return f"sh -c '{script}' {marker}"


# -- the hosts ---------------------------------------------------------------------------------


class _Listening:
    """Something listening on a port of 127.0.0.1 (a host's base URL is also the address it
    advertises to its peers)."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


class ClusterHost(_Listening):
    """One ``wxcode-pty serve`` process of a cluster; the same port, database URL and workdir
    across restarts, so that it comes back as the same advertised address."""

    def __init__(self, cluster: Cluster, index: int, database: str) -> None:
        self.cluster = cluster
        self.name = f"host{index + 1}"
        self.port = free_port()
        self.folder = cluster.folder / self.name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.database = database
        self.process: Process | None = None
        self.starts = 0

    def argv(self) -> list[str]:
        c = self.cluster
        return [
            PYTHON, "-m", "wxcode_pty", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--db", self.database,
            "--advertise", self.url,
            "--workdir", str(c.workdir),
            *(["--command", c.command] if c.program is None else c.program),
            "--host-lease", f"{c.lease:g}",
            *c.extra_args,
        ]  # fmt: skip

    def start(self) -> None:
        """Start the process; ``wait_started`` waits for it to serve."""
        assert not self.alive, f"{self.name} is running already"
        self.starts += 1
        env = child_env(WXCODE_PTY_TOKEN=self.cluster.token, **self.cluster.env)
        for name in self.cluster.unset_env:
            env.pop(name, None)
        argv = self.argv()
        if self.cluster.isolated:
            # Its own PID namespace and /proc, as on a machine of its own: a peer cannot see
            # (nor end) what this host leaves running, and when the host dies the kernel
            # ends everything in the namespace, as when a machine goes down.
            argv = [*ISOLATE, *argv]
        # Each start appends to the same stderr file: ``log`` shows every life of the host.
        self.process = Process(argv, self.folder / "server.stderr", env=env)

    def wait_started(self, timeout: float = 30) -> None:
        assert self.process is not None
        self.process.wait_for_line(URL_LINE, timeout)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.proc.poll() is None

    @property
    def pid(self) -> int:
        """The server's own process (not ``unshare``'s, when isolated)."""
        assert self.process is not None
        pid = self.process.proc.pid
        if self.cluster.isolated:
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
        return pid

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, the lease is left to lapse."""
        assert self.process is not None
        if self.cluster.isolated and self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.process.kill()

    def signal(self, signum: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self, timeout: float = 30) -> int | None:
        """SIGTERM, the graceful shutdown; the exit status (None if it had to be killed)."""
        assert self.process is not None
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def restart(self, timeout: float = 30) -> None:
        if self.alive:
            self.terminate()
        self.start()
        self.wait_started(timeout)

    def log(self) -> str:
        """Everything the host wrote: stdout of its last start, stderr of all its starts."""
        if self.process is None:
            return ""
        return "\n".join(self.process.lines) + "\n" + self.process.stderr

    def stop(self) -> None:
        if self.process is None:
            return
        if self.alive:
            self.terminate(15)
        else:
            self.process.wait(0)


class Cluster:
    """``size`` hosts on ``database`` with one workdir and one token.

    The hosts run ``--command command``, or ``program`` (e.g. ``["--claude", path]``) instead;
    ``env`` is added to their environment and ``unset_env`` taken out of it. ``isolated``
    runs each host in a PID namespace of its own (``can_isolate()`` says whether this machine
    allows it), so that hosts cannot see each other's processes, as on separate machines.

    ``relayed`` lists the indexes of the hosts whose database connections go through a
    ``TcpRelay`` (``relays[index]``), so that a test can cut them from PostgreSQL.
    """

    def __init__(
        self,
        folder: Path,
        database: str,
        *,
        size: int = 3,
        command: str = "",
        program: list[str] | None = None,
        lease: float = 3.0,
        token: str = TOKEN,
        relayed: Iterable[int] = (),
        extra_args: Iterable[str] = (),
        env: dict[str, str] | None = None,
        unset_env: Iterable[str] = (),
        isolated: bool = False,
    ) -> None:
        assert command or program, "a --command, or the options that choose the program"
        self.folder = folder
        self.database = database
        self.command = command
        self.program = program
        self.lease = lease
        self.token = token
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.unset_env = list(unset_env)
        self.isolated = isolated
        self.workdir = folder / "projects"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.relays: dict[int, TcpRelay] = {}
        self.hosts: list[ClusterHost] = []
        relayed = set(relayed)
        for index in range(size):
            url = database
            if index in relayed:
                relay = TcpRelay.to_url(database)
                self.relays[index] = relay
                url = relay.url_for(database)
            self.hosts.append(ClusterHost(self, index, url))

    def start(self, timeout: float = 60) -> Cluster:
        # All at once: they race to create the schema and register, as in a real deployment.
        for host in self.hosts:
            host.start()
        for host in self.hosts:
            host.wait_started(timeout)
        return self

    def stop(self) -> None:
        # All asked at once, so that their shutdowns (bounded, then SIGKILL) overlap.
        for host in self.hosts:
            host.signal(signal.SIGTERM)
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.stop()
        for relay in self.relays.values():
            relay.close()

    def host_at(self, url: str | None) -> ClusterHost:
        """The host whose advertised address is ``url`` (a session's ``host`` field)."""
        for host in self.hosts:
            if url is not None and url.rstrip("/") == host.url:
                return host
        raise AssertionError(f"no host advertises {url!r}: {[h.url for h in self.hosts]}")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def logs(self) -> str:
        """Every host's log, for a failure message."""
        return "\n".join(f"===== {h.name} ({h.url})\n{h.log()[-6000:]}" for h in self.hosts)


# -- HAProxy -----------------------------------------------------------------------------------


def haproxy_config(
    example: str, port: int, servers: list[tuple[str, int]], stats_socket: Path
) -> str:
    """The example configuration with the tests' bind address and servers, and a stats socket
    (through which the tests see the health checks' verdicts)."""
    out: list[str] = []
    placed = False
    for line in example.splitlines():
        stripped = line.strip()
        if stripped == "global":
            out += [line, f"    stats socket {stats_socket} mode 600 level admin"]
        elif stripped.startswith("bind "):
            out.append(f"    bind 127.0.0.1:{port}")
        elif stripped.startswith("server "):
            if not placed:
                out += [f"    server {name} 127.0.0.1:{p}" for name, p in servers]
                placed = True
        else:
            out.append(line)
    assert placed, "the example configuration has no server lines"
    return "\n".join(out) + "\n"


class HAProxy(_Listening):
    """HAProxy in the foreground on 127.0.0.1 at a free port, in front of ``servers``."""

    def __init__(self, folder: Path, servers: list[tuple[str, int]], token: str = TOKEN) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.servers = servers
        self.stats_socket = folder / "haproxy.sock"
        self.config = folder / "haproxy.cfg"
        self.config.write_text(
            haproxy_config(EXAMPLE_CONFIG.read_text(), self.port, servers, self.stats_socket)
        )
        self.token = token
        self.process: Process | None = None

    def start(self, timeout: float = 30) -> HAProxy:
        # The health check's Authorization header reads the token from the environment.
        env = {**os.environ, "WXCODE_PTY_TOKEN": self.token}
        self.process = Process(
            [HAPROXY, "-db", "-f", str(self.config)], self.folder / "haproxy.stderr", env=env
        )
        self.wait_for(lambda states: all(s == "UP" for s in states.values()), timeout)
        return self

    def server_states(self) -> dict[str, str]:
        """Each server's status as the health checks see it (``UP``, ``DOWN``, ...)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats_socket))
            s.sendall(b"show stat\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        lines = b"".join(chunks).decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        sv, status = header.index("svname"), header.index("status")
        check = header.index("check_status")
        names = {name for name, _ in self.servers}
        states: dict[str, str] = {}
        for line in lines[1:]:
            fields = line.split(",")
            if len(fields) > max(status, check) and fields[sv] in names:
                # A server starts "UP" before its first check, and stays "UP n/m" while going
                # down: it counts as up once its last check passed.
                word = fields[status].split(" ")[0]
                if word == "UP" and "OK" not in fields[check]:
                    word = "UNCONFIRMED"
                states[fields[sv]] = word
        return states

    def wait_for(
        self, condition: Callable[[dict[str, str]], bool], timeout: float = 30
    ) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while True:
            assert self.process is not None
            assert self.process.proc.poll() is None, self.process.describe()
            with contextlib.suppress(OSError, IndexError, ValueError):
                states = self.server_states()
                if states and condition(states):
                    return states
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"HAProxy's servers: {states} after {timeout}s\n{self.process.describe()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)


# -- a TCP relay that a test can cut -----------------------------------------------------------

RelayMode = Literal["open", "reset", "blackhole"]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST rather than a FIN: the peer's next read or write fails at once."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None
    blackholed: bool = False


class TcpRelay:
    """Relays 127.0.0.1:``port`` to ``target``, on its own thread and event loop (so that it
    keeps relaying whatever the test's own loop is doing).

    ``cut("reset")``: every relayed connection is reset (both sides) and new ones are reset as
    soon as they are accepted: the database went away and the host hears about it at once.
    ``cut("blackhole")``: every socket stays open but nothing is forwarded any more, and new
    connections are accepted and then ignored: the host vanished from the network without a
    word, so its client sees only silence until its own timeouts fire, and PostgreSQL keeps
    its side of each connection open.
    ``restore()``: new connections are relayed again; connections held by a black hole are
    reset (TCP gives up on a peer that stayed silent for that long).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: RelayMode = "open"
        self.accepted = 0
        self._pairs: set[_Pair] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self.port = self._call(self._listen())

    @classmethod
    def to_url(cls, url: str) -> TcpRelay:
        """A relay to the host and port of a ``postgresql://`` URL."""
        parts = urlsplit(url)
        assert parts.hostname and parts.port, url
        return cls(parts.hostname, parts.port)

    def url_for(self, url: str) -> str:
        """``url`` with its host and port replaced by the relay's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(15)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """Connections held open now (relayed or black-holed)."""
        return len(self._pairs)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "reset":
            _reset(writer)
            return
        pair = _Pair(writer, None, blackholed=self.mode == "blackhole")
        self._pairs.add(pair)
        try:
            if pair.blackholed:
                await self._pump(reader, None, pair)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                _reset(writer)
                return
            pair.upstream = up_writer
            await asyncio.gather(
                self._pump(reader, up_writer, pair), self._pump(up_reader, writer, pair)
            )
        finally:
            self._pairs.discard(pair)
            for side in (pair.client, pair.upstream):
                if side is not None and not side.transport.is_closing():
                    side.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, pair: _Pair
    ) -> None:
        try:
            while data := await reader.read(65536):
                if pair.blackholed or writer is None:
                    continue  # read and dropped: the sender sees no error, and no answer
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        if not pair.blackholed and writer is not None and not writer.transport.is_closing():
            # One side ended: pass the end on, as the network would.
            with contextlib.suppress(OSError):
                writer.write_eof()

    async def _cut(self, mode: RelayMode) -> None:
        self.mode = mode
        for pair in list(self._pairs):
            if mode == "reset":
                for side in (pair.client, pair.upstream):
                    if side is not None:
                        _reset(side)
            else:
                pair.blackholed = True

    async def _restore(self) -> None:
        self.mode = "open"
        for pair in list(self._pairs):
            if pair.blackholed:
                for side in (pair.client, pair.upstream):
                    if side is not None:
                        _reset(side)

    def cut(self, mode: Literal["reset", "blackhole"] = "reset") -> None:
        self._call(self._cut(mode))

    def restore(self) -> None:
        self._call(self._restore())

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for pair in list(self._pairs):
                for side in (pair.client, pair.upstream):
                    if side is not None:
                        side.transport.abort()
            await asyncio.sleep(0)

        with contextlib.suppress(Exception):
            self._call(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


# -- which programs run where ------------------------------------------------------------------


def inner_pid(pid: int) -> int:
    """``pid`` as its own PID namespace numbers it (what an isolated host reports)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return pid


@dataclass
class Seen:
    """One program process: its project (cwd's name) and when the watcher saw it alive."""

    pid: int
    project: str
    first: float
    last: float


_STAT = re.compile(rb"^\d+ \(.*\) \S (\d+)", re.S)


class ProgramWatcher:
    """Polls ``/proc`` every ``interval`` seconds on a thread for the processes that have
    ``marker`` as one of their arguments, maps each to its project (the name of its working directory) and
    records the most that were alive at once per project over the whole watch.

    A matching process whose parent matches too is the program's own child (a subshell, a
    worker): only the topmost one counts as a program.
    """

    def __init__(
        self,
        marker: str,
        interval: float = 0.02,
        matches: Callable[[list[bytes]], bool] | None = None,
    ) -> None:
        """``matches(argv)`` replaces the marker test where a program's argv cannot carry one
        (a real Claude binary: its own path as ``argv[0]``)."""
        self.marker = marker.encode()
        self.matches = matches or (lambda argv: self.marker in argv)
        self.interval = interval
        self.most: dict[str, int] = {}
        self.seen: dict[int, Seen] = {}
        self.polls = 0
        self.at_most_two: dict[str, list[int]] = {}
        self._live: dict[str, set[int]] = {}
        self._known: dict[int, tuple[int, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="program-watcher", daemon=True)

    def start(self) -> ProgramWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def __enter__(self) -> ProgramWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _scan(self) -> dict[int, tuple[int, str]]:
        """pid -> (ppid, project) of the live processes whose argv has the marker."""
        found: dict[int, tuple[int, str]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    # A whole argument, not a substring: the servers' own argv holds the
                    # marker inside their --command. A zombie's cmdline is empty: ended
                    # programs do not count.
                    if not self.matches(f.read().split(b"\0")):
                        continue
                pid = int(entry.name)
                if pid in self._known:
                    # Seen before: a program does not change its folder. (Only a child's
                    # parent matters, and that does not change while both live.)
                    found[pid] = self._known[pid]
                    continue
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    match = _STAT.match(f.read())
                cwd = os.readlink(f"/proc/{entry.name}/cwd")
            except OSError:
                continue  # it ended while we looked
            if match:
                found[pid] = (int(match.group(1)), os.path.basename(cwd))
        self._known = found
        return found

    def poll(self) -> None:
        found = self._scan()
        now = time.monotonic()
        live: dict[str, set[int]] = {}
        for pid, (ppid, project) in found.items():
            if ppid in found:
                continue
            live.setdefault(project, set()).add(pid)
        with self._lock:
            self.polls += 1
            self._live = live
            for project, pids in live.items():
                for pid in pids:
                    seen = self.seen.get(pid)
                    if seen is None or seen.project != project:
                        self.seen[pid] = Seen(pid, project, now, now)
                    else:
                        seen.last = now
                if len(pids) > self.most.get(project, 0):
                    self.most[project] = len(pids)
                if len(pids) > 1 and project not in self.at_most_two:
                    self.at_most_two[project] = sorted(pids)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def live(self) -> dict[str, set[int]]:
        """The programs alive at the last poll, by project."""
        with self._lock:
            return {project: set(pids) for project, pids in self._live.items()}

    def wait_for(
        self, condition: Callable[[dict[str, set[int]]], bool], timeout: float = 30
    ) -> dict[str, set[int]]:
        """Waits (polling, with a deadline) until ``condition(live())`` holds after a fresh
        poll of the watcher's own thread."""
        deadline = time.monotonic() + timeout
        while True:
            start = self.polls
            while self.polls == start:
                if time.monotonic() > deadline or not self._thread.is_alive():
                    break
                time.sleep(self.interval / 2)
            live = self.live()
            if condition(live):
                return live
            if time.monotonic() > deadline:
                raise AssertionError(f"programs alive after {timeout}s: {live}")

    async def until(
        self, condition: Callable[[dict[str, set[int]]], bool], timeout: float = 30
    ) -> dict[str, set[int]]:
        """:meth:`wait_for` off the caller's event loop, which must stay free meanwhile."""
        return await asyncio.to_thread(self.wait_for, condition, timeout)

    def assert_never_two(self) -> None:
        """No project ever had two programs alive at once during the watch."""
        with self._lock:
            twice = {p: n for p, n in self.most.items() if n > 1}
            assert not twice, (
                f"two programs at once on one project: {twice}; pids first seen together:"
                f" {self.at_most_two}"
            )


def terminate(process: subprocess.Popen[bytes]) -> None:
    """Ends a helper process the self-tests started in a session of its own, with whatever
    it forked (a subshell outlives its parent's SIGTERM otherwise)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
