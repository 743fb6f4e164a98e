"""``BidirectionalPTY``: one program on a pseudo-terminal, driven from the event loop.

Owns the master fd and the program's own pid: spawning, non-blocking reads and writes, resize,
the exit status, and ending the program's whole tree (through ``proctree``). It knows nothing of
sessions, buffers or clients: output goes to one callback, and the end to an awaitable.

Nothing here blocks the loop. The fork and exec run in a worker thread; output is read with
``loop.add_reader``; input goes through a bounded queue drained when the fd is writable; the
exit is learned from a pidfd, and reaped with a non-blocking ``waitpid``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import functools
import os
import shutil
import signal
import struct
import subprocess
import termios
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import proctree
from .errors import WxcodePtyError

__all__ = [
    "BidirectionalPTY",
    "ExitStatus",
    "InputOverflow",
    "PTYClosed",
    "ReadBudget",
    "SpawnError",
]

#: Upper bound of one ``os.read``; a Linux PTY hands out at most a few KiB per read anyway.
_READ_SIZE = 65536
#: How much is read in one wakeup before other sockets get their turn.
_READ_PER_WAKEUP = 64 * 1024
#: How long output may keep flowing after the program exited (from its descendants) before
#: they are ended too.
_LINGER = 0.5
#: A read shorter than this most likely drained the PTY (the line discipline holds about 4 KB):
#: a further read would mostly wait for the kernel's tty worker to find nothing. With output
#: processing a read can stop a little short of it with data left, but reading on after
#: shorter reads gained nothing (bench/README.md).
_FULL_READ = 4095
#: A PTY whose last wakeup brought at least this much is "busy" (a flood, not typing).
_BUSY = 2048
#: Longest pause between attempts to reap an exited program that another thread is reaping.
_REAP_RETRY_MAX = 0.1
#: Threads that fork and exec programs: their own, so that neither a host's use of the
#: default executor nor the loop's closing can hold up a spawn or its cleanup.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(
    max_workers=4, thread_name_prefix="wxcode-pty-spawn"
)


class ReadBudget:
    """Shares one event loop fairly between PTYs that flood output.

    Per loop iteration only ``per_iteration`` busy PTYs are read (the others stay readable
    and are served next time round), and while more than one is busy each gets a single
    read per wakeup. A lone stream still reads in bulk, and a PTY that is not busy (someone
    typing) is always read at once. A read from a flooding PTY can wait for the kernel's tty
    worker; without this, many ``yes`` sessions make each pass of the loop long and every echo
    waits for all of them. One read per iteration gives the lowest echo latency at the same
    flood throughput (bench/README.md).
    """

    def __init__(self, per_iteration: int = 1) -> None:
        self.per_iteration = per_iteration
        self.contended = False
        self._wanted = 0
        self._spent = 0
        self._rolling = False

    def take(self, loop: asyncio.AbstractEventLoop) -> bool:
        """May a busy PTY read now? False: skip it this iteration."""
        if not self._rolling:
            # Runs at the start of the next batch of callbacks: the iteration boundary.
            loop.call_soon(self._roll)
            self._rolling = True
        self._wanted += 1
        if self._spent >= self.per_iteration:
            return False
        self._spent += 1
        return True

    def _roll(self) -> None:
        self.contended = self._wanted > 1
        self._wanted = self._spent = 0
        self._rolling = False


class SpawnError(WxcodePtyError):
    """The program could not be started (missing executable, bad cwd, ...)."""


class InputOverflow(WxcodePtyError):
    """Input was refused: the program is not reading and the input queue is full."""


class PTYClosed(WxcodePtyError):
    """The PTY has ended; it takes no more input."""


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a program ended: an exit ``code``, or the name of the ``signal`` that killed it."""

    code: int | None
    signal: str | None

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        if returncode >= 0:
            return cls(returncode, None)
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"SIG{-returncode}"
        return cls(None, name)


_CHILD_DEFAULT_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
    signal.SIGPIPE,
    signal.SIGXFSZ,
)


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    # start_new_session made us a session leader; take the PTY on fd 0 as controlling terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    # The server may ignore or block signals (Python ignores SIGPIPE and SIGXFSZ, a shell
    # ignores SIGINT for background jobs); a program on a terminal expects the defaults.
    for signum in _CHILD_DEFAULT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _session_prefix() -> list[str] | None:
    """The commands that give a program its own session, the PTY as controlling terminal and
    the default signal dispositions, so that no Python code runs between fork and exec and
    Popen can use vfork; None when only ``_child_setup`` can.

    util-linux's (or busybox's) ``setsid -c`` makes the session and takes the terminal on
    stdin; when the server ignores signals a terminal program expects at their default (a
    shell's background job ignores SIGINT and SIGQUIT, ``nohup`` SIGHUP), GNU ``env
    --default-signal`` resets them first. Popen restores SIGPIPE and SIGXFSZ itself. Each is
    an exec under the same pid. Blocked signals need ``_child_setup``.
    """
    setsid = _which("setsid")
    if setsid is None or signal.pthread_sigmask(signal.SIG_BLOCK, ()):
        return None
    ignored = [
        signum
        for signum in _CHILD_DEFAULT_SIGNALS
        if signum not in (signal.SIGPIPE, signal.SIGXFSZ)
        and signal.getsignal(signum) == signal.SIG_IGN
    ]
    if not ignored:
        return [setsid, "-c"]
    env = _env_resetting(ignored)
    return None if env is None else [env, "--default-signal", setsid, "-c"]


@functools.cache
def _which(name: str) -> str | None:
    return shutil.which(name)


#: ``env`` paths known to reset ignored signals (True) or not (False); only probes that ran
#: to the end are remembered.
_ENV_RESETS: dict[str, bool] = {}


def _env_resetting(ignored: Sequence[signal.Signals]) -> str | None:
    """``env`` if its ``--default-signal`` (GNU coreutils 8.31+) really puts the ``ignored``
    signals back to their default. Probed from a spawn thread by its effect, not its exit
    status (which a server that ignores SIGCHLD cannot see)."""
    env = _which("env")
    if env is None:
        return None
    if env not in _ENV_RESETS:
        try:
            probe = subprocess.run(
                [env, "--default-signal", "cat", "/proc/self/status"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=5,
            )
        except (OSError, subprocess.SubprocessError):
            return None  # not remembered: a passing shortage of processes or time
        _ENV_RESETS[env] = not _ignored_in(probe.stdout) & _mask(ignored)
    return env if _ENV_RESETS[env] else None


def _ignored_in(status: bytes) -> int:
    """The ``SigIgn`` mask of a ``/proc/<pid>/status`` text; all bits set when absent."""
    for line in status.splitlines():
        if line.startswith(b"SigIgn:"):
            return int(line.split()[1], 16)
    return -1


def _mask(signals: Sequence[signal.Signals]) -> int:
    return sum(1 << (signum - 1) for signum in signals)


def _winsize(cols: int, rows: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


def _start_program(
    argv: list[str], cwd: str, env: dict[str, str], cols: int, rows: int, marker: str
) -> tuple[subprocess.Popen[bytes], int, proctree.ProcessId]:
    """Open a PTY and start ``argv`` on it. Blocking (fork, exec): runs in a worker thread."""
    try:
        master, slave = os.openpty()  # both non-inheritable (PEP 446)
    except OSError as exc:
        raise SpawnError(f"cannot open a pseudo-terminal: {exc}") from None
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, _winsize(cols, rows))
        child_env = dict(env)
        child_env[proctree.MARKER_ENV] = marker
        if not os.path.isdir(cwd):
            raise SpawnError(f"working directory does not exist: {cwd}")
        # Looked up as the child will (its PATH, a relative path from its cwd): setsid would
        # only fail after the spawn.
        program = argv[0] if "/" not in argv[0] else os.path.join(cwd, argv[0])
        if shutil.which(program, path=child_env.get("PATH", os.defpath)) is None:
            raise SpawnError(f"executable not found: {argv[0]}")
        prefix = _session_prefix()
        try:
            # Without a Python preexec_fn, Popen can use vfork: much cheaper than a fork of a
            # big server, and no copy-on-write faults in its other threads afterwards.
            process = subprocess.Popen(
                list(argv) if prefix is None else [*prefix, *argv],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=child_env,
                start_new_session=prefix is None,
                preexec_fn=_child_setup if prefix is None else None,
                close_fds=True,
            )
        except FileNotFoundError as exc:
            if exc.filename is not None and str(exc.filename) == str(cwd):
                raise SpawnError(f"working directory does not exist: {cwd}") from None
            raise SpawnError(f"executable not found: {argv[0]}") from None
        except PermissionError:
            raise SpawnError(f"permission denied starting {argv[0]} in {cwd}") from None
        except (OSError, subprocess.SubprocessError) as exc:
            raise SpawnError(f"cannot start {argv[0]}: {exc}") from None
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    try:
        os.set_blocking(master, False)
        identity = proctree.identify(process.pid) or proctree.ProcessId(process.pid, 0)
    except OSError as exc:
        _discard(process, master)
        raise SpawnError(f"cannot watch {argv[0]}: {exc}") from None
    return process, master, identity


def _discard_started(
    started: concurrent.futures.Future[tuple[subprocess.Popen[bytes], int, proctree.ProcessId]],
) -> None:
    if started.exception() is None:
        process, master, _ = started.result()
        try:
            _SPAWNER.submit(_discard, process, master)  # off the caller's thread: it waits
        except RuntimeError:  # the interpreter is shutting down
            _discard(process, master)


def _discard(process: subprocess.Popen[bytes], master: int) -> None:
    """End a program that was started but will not be watched."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # a session leader: its group goes too
    process.kill()
    process.wait()  # just killed: immediate
    os.close(master)


class BidirectionalPTY:
    """A running program on a PTY. Create it with :meth:`spawn`; await :meth:`wait`."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        master_fd: int,
        identity: proctree.ProcessId,
        marker: str,
        on_output: Callable[[bytes], None],
        input_limit: int,
        paused: bool,
        budget: ReadBudget | None,
        kill_grace: float,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._process = process
        self._fd = master_fd
        self.identity = identity
        self.marker = marker
        self._on_output = on_output
        self._input_limit = input_limit
        self._pending = bytearray()
        self._writing = False
        self._paused = paused
        #: Join the reads of one wakeup into one chunk instead of handing on each at once
        #: (the owner sets it: worth it when each chunk goes to many clients). A stream on a
        #: terminal that processes output is joined anyway (see ``_on_readable``).
        self.gather_reads = False
        self._budget = budget or ReadBudget()
        self._busy = False
        self._stream_ended = asyncio.Event()
        self._status: ExitStatus | None = None
        self._done: asyncio.Future[ExitStatus] = self._loop.create_future()
        self._ending: asyncio.Task[None] | None = None
        self._kill_grace = kill_grace
        self._reap_delay = 0.001
        self._pidfd = os.pidfd_open(process.pid)
        if not paused:
            self._loop.add_reader(self._fd, self._on_readable)
        self._loop.add_reader(self._pidfd, self._on_program_exit)

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        cwd: str | Path,
        env: Mapping[str, str],
        on_output: Callable[[bytes], None],
        cols: int = 80,
        rows: int = 24,
        marker: str,
        input_limit: int = 1 << 20,
        paused: bool = False,
        budget: ReadBudget | None = None,
        kill_grace: float = 2.0,
    ) -> BidirectionalPTY:
        """Start ``argv`` on a new PTY in its own session, in ``cwd`` with exactly ``env``.

        ``marker`` is put into the environment as ``WXCODE_PTY_SESSION`` so that every
        descendant can be found when the session ends. With ``paused``, output is not read
        until :meth:`resume_reading` (the program blocks once the PTY buffer is full), so
        that a first client can attach before anything is produced. PTYs spawned with one
        ``budget`` share the loop fairly when they flood. ``kill_grace`` is the time each
        signal gets to take when the tree is ended (see :meth:`terminate`), also when
        descendants outlive the program.

        The fork and exec run in a worker thread (about a millisecond each, which a loop
        starting many sessions at once would otherwise spend blocked).
        """
        if not argv:
            raise SpawnError("empty command")
        started = _SPAWNER.submit(
            _start_program, list(argv), str(cwd), dict(env), cols, rows, marker
        )
        try:
            process, master, identity = await asyncio.shield(asyncio.wrap_future(started))
        except asyncio.CancelledError:
            # The thread goes on: what it starts is ended there, loop or no loop.
            started.add_done_callback(_discard_started)
            raise
        try:
            return cls(
                process,
                master,
                identity,
                marker,
                on_output,
                input_limit,
                paused,
                budget,
                kill_grace,
            )
        except OSError as exc:
            # No pidfd (out of descriptors): the program would run unwatched. Undo the spawn
            # (in a spawn thread: reaping waits for the kill to take).
            await asyncio.wrap_future(_SPAWNER.submit(_discard, process, master))
            raise SpawnError(f"cannot watch {argv[0]}: {exc}") from None

    # -- facts -------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def exit_status(self) -> ExitStatus | None:
        """The exit status once the program is gone and its output fully delivered."""
        return self._done.result() if self._done.done() else None

    @property
    def running(self) -> bool:
        return not self._done.done()

    @property
    def pending_input(self) -> int:
        """Bytes of input still waiting for the program to read them."""
        return len(self._pending)

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the program's process group now, from the calling thread: no
        ``/proc`` pass, no worker thread (:meth:`terminate` does the thorough job). Safe from
        pid reuse: the program is our child, and its pid stays reserved until we reap it."""
        if self._status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signum)

    async def wait(self) -> ExitStatus:
        """Wait until the program exited and every byte it wrote was delivered."""
        return await asyncio.shield(self._done)

    # -- output ------------------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading output: the program blocks once the PTY's own buffer is full."""
        if not self._paused and not self._stream_ended.is_set() and self._status is None:
            self._loop.remove_reader(self._fd)
            self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if not self._stream_ended.is_set():
                self._loop.add_reader(self._fd, self._on_readable)

    @property
    def reading_paused(self) -> bool:
        return self._paused

    def _on_readable(self) -> None:
        budget = self._budget
        if self._busy and not budget.take(self._loop):
            return
        # Several floods: one read each per wakeup (a further read would wait for the tty
        # worker while the others wait for us).
        limit = 1 if budget.contended else _READ_PER_WAKEUP
        gather = self.gather_reads
        decided = gather
        chunks: list[bytes] = []
        total = 0
        ended = False
        while total < limit:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                # EIO: every slave fd is closed and the buffer is drained. End of stream.
                if exc.errno != errno.EIO:
                    raise
                ended = True
                break
            if not data:
                ended = True
                break
            total += len(data)
            if not decided and len(data) >= _FULL_READ and total < limit:
                # A stream, and more reads follow in this wakeup: with output processing on
                # (as programs run), one chunk for all of them costs much less CPU per byte at
                # the same throughput; without it (stty raw), handing each read on at once is
                # faster, as the kernel's tty worker refills the PTY while the frame goes out
                # (bench/README.md).
                decided = True
                gather = self._output_processed()
            if gather:
                chunks.append(data)
            else:
                self._on_output(data)
            if len(data) < _FULL_READ or self._paused:
                break
        self._busy = total >= _BUSY
        if chunks:
            self._on_output(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if ended:
            self._loop.remove_reader(self._fd)
            self._stream_ended.set()
            self._maybe_finish()

    def _output_processed(self) -> bool:
        """Does the program's terminal process output (``OPOST``)? Asked of the master, which
        reports the terminal's modes as the program set them."""
        try:
            return bool(termios.tcgetattr(self._fd)[1] & termios.OPOST)
        except termios.error:
            return False

    # -- input -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the program. Raises InputOverflow past the input bound."""
        if self._done.done() or self._status is not None:
            raise PTYClosed("the program has exited")
        if not data:
            return
        if len(self._pending) + len(data) > self._input_limit:
            raise InputOverflow(
                f"input dropped: {len(self._pending)} bytes are already waiting for the program"
            )
        if not self._pending:
            # The common case (a keystroke, nothing waiting): straight to the terminal.
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return  # hung up: the program cannot read any more input
            if written == len(data):
                return
            data = data[written:]
        self._pending += data
        if not self._writing:
            self._drain()

    def _drain(self) -> None:
        while self._pending:
            try:
                written = os.write(self._fd, self._pending[:_READ_SIZE])
            except BlockingIOError:
                break
            except OSError:
                # The terminal hung up: the program cannot read any more input.
                self._pending.clear()
                break
            del self._pending[:written]
        want_writer = bool(self._pending)
        if want_writer and not self._writing:
            self._loop.add_writer(self._fd, self._drain)
        elif not want_writer and self._writing:
            self._loop.remove_writer(self._fd)
        self._writing = want_writer

    # -- control -----------------------------------------------------------------------------

    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal size; the program gets SIGWINCH."""
        if self._done.done():
            return
        with contextlib.suppress(OSError):
            fcntl.ioctl(self._fd, termios.TIOCSWINSZ, _winsize(cols, rows))

    async def terminate(self, grace: float | None = None) -> ExitStatus:
        """End the program's whole tree (SIGHUP, SIGTERM, SIGKILL, each after ``grace``, by
        default the spawn's ``kill_grace``) and return its status. Called again, or after
        :meth:`terminate_all`, it waits for the same ending."""
        if self._ending is None:
            grace = self._kill_grace if grace is None else grace
            sweep = proctree.end_processes(self.identity, self.marker, grace=grace)
            self._ending = self._loop.create_task(self._end_tree(grace, sweep))
        # After a natural exit this waits for the sweep of the program's descendants.
        await asyncio.shield(self._ending)
        if not self._done.done():
            # Something unkillable holds the terminal open: give up on the rest of its output.
            self._finish()
        return self._done.result()

    @staticmethod
    async def terminate_all(
        ptys: Sequence[BidirectionalPTY], grace: float | None = None
    ) -> list[ExitStatus]:
        """:meth:`terminate` many PTYs together, with one pass over ``/proc`` per signal for
        all their trees (a pass each would make ending hundreds of sessions quadratic). The
        statuses in the order of ``ptys``.

        Without ``grace``, each PTY waits with its own ``kill_grace`` and the signals are
        spaced by the longest of them. A PTY already ending (after its program's own exit, or
        a terminate) finishes that ending instead.
        """
        # Each PTY is marked as ending before any signal is sent: a program that exits from
        # the shared sweep must not start a sweep of its own.
        fresh = [pty for pty in ptys if pty._ending is None]
        if fresh:
            graces = [pty._kill_grace if grace is None else grace for pty in fresh]
            sweep = asyncio.ensure_future(
                proctree.end_trees([(pty.identity, pty.marker) for pty in fresh], grace=max(graces))
            )
            for pty, own_grace in zip(fresh, graces, strict=True):
                pty._ending = pty._loop.create_task(pty._end_tree(own_grace, asyncio.shield(sweep)))
        return await asyncio.gather(*(pty.terminate(grace) for pty in ptys))

    async def _end_tree(self, grace: float, sweep: Awaitable[object]) -> None:
        """Wait for ``sweep`` (which ends the tree), then, each for at most ``grace``, for the
        exit status and the end of the output."""
        await sweep
        if self._status is None:
            # The program was ours to reap; its pidfd callback may not have run yet.
            await asyncio.wait({self._done}, timeout=grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stream_ended.wait(), timeout=grace)

    def _on_program_exit(self) -> None:
        returncode = self._process.poll()
        if returncode is None:
            # Another thread holds Popen's waitpid lock (a wait() in a thread). The pidfd stays
            # readable until the program is reaped: stop watching it (the loop would spin) and
            # try again after a pause that grows.
            self._loop.remove_reader(self._pidfd)
            self._loop.call_later(self._reap_delay, self._on_program_exit)
            self._reap_delay = min(self._reap_delay * 2, _REAP_RETRY_MAX)
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self._status = ExitStatus.from_returncode(returncode)
        self._pending.clear()
        # Whatever the program wrote last must be read, however far behind the clients are.
        self.resume_reading()
        if self._ending is None:
            # Descendants may still hold the terminal (a background job): end them as well,
            # but first give the kernel a moment to hand over what the program wrote.
            self._ending = self._loop.create_task(self._end_lingering())
        self._maybe_finish()

    async def _end_lingering(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stream_ended.wait(), timeout=_LINGER)
        await proctree.end_processes(self.identity, self.marker, grace=self._kill_grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stream_ended.wait(), timeout=self._kill_grace)
        self._finish()

    def _maybe_finish(self) -> None:
        if self._status is not None and self._stream_ended.is_set():
            self._finish()

    def _finish(self) -> None:
        if self._done.done():
            return
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        if not self._stream_ended.is_set():
            self._loop.remove_reader(self._fd)
            self._stream_ended.set()
        os.close(self._fd)
        self._fd = -1
        if self._status is None and (returncode := self._process.poll()) is not None:
            self._status = ExitStatus.from_returncode(returncode)
        status = self._status or ExitStatus(None, None)
        self._done.set_result(status)
