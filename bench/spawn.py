"""Spawn cost of BidirectionalPTY against ptyprocess, inside a loaded server process.

Method A is the package's own spawn (``BidirectionalPTY.spawn``: ``os.openpty`` and
``subprocess.Popen`` without ``preexec_fn``, so vfork, through ``setsid -c``, in the package's
4 spawn threads). Method B starts the same program with ``ptyprocess.PtyProcess.spawn``
(``pty.fork``: a real fork with Python code in the child) in a pool of 4 threads of its own,
then hands the fd and pid to the same ``BidirectionalPTY`` (non-blocking reads on the loop,
pidfd for the exit), so that only the fork and exec differ.

The process is made to look like a server: about ``--rss-mb`` of Python objects (half large
bytearrays, half small objects), frozen out of the garbage collector so that no full
collection lands in one storm and not the other; a database thread like aiosqlite's writing
every 5 ms; ``--streams`` sessions running ``yes`` on normal PTYs (output processing on),
read and discarded by the loop; a ticker coroutine every 1 ms recording how late it wakes.

Each round is a 1 s baseline window (streams only) then a storm of ``--spawns`` programs,
``--concurrency`` in flight, each ``cat READY -`` (prints a line, then lives until ended, so
spawn is measured, not exit). Methods alternate A, B, A, B, ...; every program of a storm is
ended and reaped before the next one. Figures per storm:

- spawn: submit until the fd and pid are ready on the loop; first output: submit until the
  program's first bytes reached the loop (the exec and start of ``cat`` included);
- loop stall: lateness of the 1 ms ticker, p99 and max, baseline and storm;
- CPU per spawn: the spawning thread's own CPU time (measured in the thread, exact), and the
  whole process's and the loop thread's CPU beyond what the baseline rate predicts (a loop
  already busy with the streams gets no more CPU, only less: its excess can be negative);
- minor page faults per spawn (copy-on-write after a fork shows here): the spawning thread's,
  and the whole process's and the loop thread's beyond the baseline rate;
- the streams' throughput in the baseline and during the storm.

Summaries are the median over rounds with min and max. The spawned children are inspected
too (session, controlling terminal, ignored and blocked signals, open fds), and at the end
the process must have no child, zombie, extra fd or extra thread left.

Needs ``ptyprocess`` (0.7.0 measured), which the package itself does not depend on.

    python bench/spawn.py [--spawns 200] [--rounds 5] [--rss-mb 200] [--streams 10]
                          [--concurrency 4] [--out bench/results/spawn.json]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import json
import os
import platform
import queue
import resource
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ptyprocess

from wxcode_pty import proctree
from wxcode_pty import pty as wpty
from wxcode_pty.pty import BidirectionalPTY, ReadBudget, SpawnError

METHODS = ("A popen-vfork", "B ptyprocess")

#: (thread CPU ns, thread minor faults) of each spawn, appended by the spawning threads.
_SPAWN_COSTS: list[tuple[int, int]] = []
_FORKER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="bench-fork")
_FACTS: dict[str, Any] = {}


def _measured(start: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a thread-side spawn to record its own CPU time and faults, taken in that thread."""

    def run(*args: Any) -> Any:
        cpu = time.thread_time_ns()
        faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        try:
            return start(*args)
        finally:
            _SPAWN_COSTS.append(
                (
                    time.thread_time_ns() - cpu,
                    resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults,
                )
            )

    return run


# Method A: the package's own thread-side spawn, measured in place.
wpty._start_program = _measured(wpty._start_program)


class _Forked:
    """The part of a Popen that BidirectionalPTY uses: the pid and a non-blocking reap."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _default_signals() -> None:  # runs in the forked child, before exec
    # pty.fork already made a session with the PTY as controlling terminal; what is left is
    # what the package's spawn does too: signals a terminal program expects at their default.
    for signum in wpty._CHILD_DEFAULT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _start_forked(
    argv: list[str],
    cwd: str,
    env: dict[str, str],
    cols: int,
    rows: int,
    marker: str,
    preexec: bool = True,
) -> tuple[_Forked, int, proctree.ProcessId]:
    """Method B's thread side, doing what ``_start_program`` does, with ptyprocess."""
    child_env = dict(env)
    child_env[proctree.MARKER_ENV] = marker
    if not os.path.isdir(cwd):
        raise SpawnError(f"working directory does not exist: {cwd}")
    try:
        process = ptyprocess.PtyProcess.spawn(
            argv,
            cwd=cwd,
            env=child_env,
            dimensions=(rows, cols),
            preexec_fn=_default_signals if preexec else None,
        )
    except OSError as exc:
        raise SpawnError(f"cannot start {argv[0]}: {exc}") from None
    _FACTS.setdefault("ptyprocess_master_inheritable", os.get_inheritable(process.fd))
    # A copy that is ours (and not inheritable); the object's own fd is closed, and marked
    # closed so that its __del__ does not run close(), which sleeps and waits.
    master = os.dup(process.fd)
    process.fileobj.close()
    process.closed = True
    os.set_blocking(master, False)
    identity = proctree.identify(process.pid) or proctree.ProcessId(process.pid, 0)
    return _Forked(process.pid), master, identity


_start_forked_measured = _measured(_start_forked)


async def _spawn_a(argv: list[str], **kw: Any) -> BidirectionalPTY:
    return await BidirectionalPTY.spawn(argv, **kw)


async def _spawn_b(
    argv: list[str],
    *,
    cwd: str,
    env: dict[str, str],
    on_output: Callable[[bytes], None],
    marker: str,
    budget: ReadBudget,
    cols: int = 80,
    rows: int = 24,
) -> BidirectionalPTY:
    started = _FORKER.submit(_start_forked_measured, list(argv), cwd, dict(env), cols, rows, marker)
    process, master, identity = await asyncio.wrap_future(started)
    return BidirectionalPTY(process, master, identity, marker, on_output, 1 << 20, False, budget)


SPAWNERS = {METHODS[0]: _spawn_a, METHODS[1]: _spawn_b}


# -- the server-like process ------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _ballast(target_mb: int) -> list[Any]:
    """Touched memory up to about ``target_mb`` of RSS: fork has page tables to copy, and the
    small objects are spread over many pages as a server's state is."""
    kept: list[Any] = []
    start = _rss_mb()
    for i in range(int(max(0.0, target_mb - start) / 2 * 4)):
        kept.append(bytearray(bytes([i % 251 + 1])) * (256 * 1024))
    n = 0
    while _rss_mb() < target_mb:
        kept.append(
            [{"id": n + k, "name": f"session-{n + k}", "seen": [n, k, str(k)]} for k in range(5000)]
        )
        n += 5000
    gc.collect()
    gc.freeze()
    return kept


def _database(stop: threading.Event, requests: queue.Queue[int]) -> None:
    """One thread with one connection and a request queue, as aiosqlite runs."""
    db = sqlite3.connect(":memory:")
    db.execute("create table events (k integer primary key, v text)")
    while not stop.is_set():
        try:
            k = requests.get(timeout=0.1)
        except queue.Empty:
            continue
        db.execute("insert or replace into events values (?, ?)", (k % 1000, "x" * 200))
        db.commit()
    db.close()


async def _feed_database(requests: queue.Queue[int]) -> None:
    k = 0
    while True:
        requests.put(k)
        k += 1
        await asyncio.sleep(0.005)


class Probe:
    """Ticker lateness and stream bytes, read out per window."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self.streamed = 0

    def count(self, data: bytes) -> None:
        self.streamed += len(data)

    async def tick(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.late.append(time.perf_counter() - t - 0.001)

    def snapshot(self) -> dict[str, float]:
        process = resource.getrusage(resource.RUSAGE_SELF)
        thread = resource.getrusage(resource.RUSAGE_THREAD)  # called on the loop's thread
        return {
            "t": time.perf_counter(),
            "cpu": process.ru_utime + process.ru_stime,
            "faults": process.ru_minflt,
            "loop_cpu": time.thread_time(),
            "loop_faults": thread.ru_minflt,
            "streamed": self.streamed,
        }


def _diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: b[k] - a[k] for k in a}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _child_facts(pid: int) -> dict[str, Any]:
    """Session, controlling terminal and signals of a running child, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    status: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()

    def names(mask: str) -> list[str]:
        bits = int(mask, 16)
        return [
            signal.Signals(n).name
            for n in range(1, 65)
            if bits >> (n - 1) & 1 and n in signal.Signals._value2member_map_
        ]

    return {
        "comm": status["Name"],
        "session_leader": int(fields[3]) == pid,
        "controlling_tty": int(fields[4]) != 0 and int(fields[5]) == pid,
        "ignored": names(status["SigIgn"]),
        "blocked": names(status["SigBlk"]),
        "open_fds": sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")),
    }


def _our_children() -> list[tuple[int, str]]:
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            found.append((int(name), fields[0]))
    return found


# -- one storm --------------------------------------------------------------------------------


async def _storm(
    method: str, n: int, concurrency: int, argv: list[str], cwd: str, budget: ReadBudget
) -> tuple[list[BidirectionalPTY], list[float], list[float]]:
    spawn = SPAWNERS[method]
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    ptys: list[BidirectionalPTY] = []
    spawned: list[float] = []
    first: list[float] = []

    async def one(i: int) -> None:
        shown = loop.create_future()

        def on_output(data: bytes) -> None:
            if not shown.done():
                shown.set_result(time.perf_counter())

        async with gate:
            t0 = time.perf_counter()
            pty = await spawn(
                argv,
                cwd=cwd,
                env=dict(os.environ),
                on_output=on_output,
                marker=f"spawnbench-{os.getpid()}-{method[0]}-{i}-{t0}",
                budget=budget,
            )
            spawned.append(time.perf_counter() - t0)
        ptys.append(pty)
        first.append(await asyncio.wait_for(shown, 30) - t0)

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await _end(ptys)
        raise errors[0]
    return ptys, spawned, first


async def _end(ptys: list[BidirectionalPTY]) -> None:
    await asyncio.gather(*(p.terminate(grace=1.0) for p in ptys))


async def _round(
    method: str,
    args: argparse.Namespace,
    probe: Probe,
    argv: list[str],
    cwd: str,
    budget: ReadBudget,
) -> dict[str, Any]:
    probe.late = []
    start = probe.snapshot()
    await asyncio.sleep(1.0)
    middle = probe.snapshot()
    base_late, probe.late = probe.late, []
    _SPAWN_COSTS.clear()
    ptys, spawned, first = await _storm(method, args.spawns, args.concurrency, argv, cwd, budget)
    end = probe.snapshot()
    storm_late = probe.late
    costs = list(_SPAWN_COSTS)
    facts = _child_facts(ptys[0].pid)
    await _end(ptys)

    base, storm = _diff(start, middle), _diff(middle, end)
    n = args.spawns

    def excess(key: str) -> float:
        # Beyond what the streams alone cost at the baseline's rate over the storm's duration.
        return (storm[key] - base[key] / base["t"] * storm["t"]) / n

    return {
        "method": method,
        "loadavg": os.getloadavg()[0],
        "storm_s": storm["t"],
        "spawn_ms_p50": _pct(spawned, 50) * 1e3,
        "spawn_ms_p99": _pct(spawned, 99) * 1e3,
        "spawn_ms_max": max(spawned) * 1e3,
        "first_output_ms_p50": _pct(first, 50) * 1e3,
        "first_output_ms_p99": _pct(first, 99) * 1e3,
        "stall_ms_p99_baseline": _pct(base_late, 99) * 1e3,
        "stall_ms_max_baseline": max(base_late) * 1e3,
        "stall_ms_p99": _pct(storm_late, 99) * 1e3,
        "stall_ms_max": max(storm_late) * 1e3,
        "spawn_thread_cpu_ms_per_spawn": sum(c for c, _ in costs) / len(costs) / 1e6,
        "process_cpu_ms_per_spawn": excess("cpu") * 1e3,
        "loop_cpu_ms_per_spawn": excess("loop_cpu") * 1e3,
        "spawn_thread_faults_per_spawn": sum(f for _, f in costs) / len(costs),
        "process_faults_per_spawn": excess("faults"),
        "loop_faults_per_spawn": excess("loop_faults"),
        "stream_mb_s_baseline": base["streamed"] / base["t"] / 1e6,
        "stream_mb_s_storm": storm["streamed"] / storm["t"] / 1e6,
        "child": facts,
    }


async def _run(args: argparse.Namespace, folder: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    fds_before = len(os.listdir("/proc/self/fd"))
    threads_before = {t.ident for t in threading.enumerate()}
    ready = Path(folder) / "ready"
    ready.write_text("ready\n")
    argv = ["cat", str(ready), "-"]
    probe = Probe()
    budget = ReadBudget()
    stop = threading.Event()
    requests: queue.Queue[int] = queue.Queue()
    database = threading.Thread(target=_database, args=(stop, requests), name="database")
    database.start()
    tasks = [loop.create_task(probe.tick()), loop.create_task(_feed_database(requests))]
    streams = [
        await BidirectionalPTY.spawn(
            ["yes"],
            cwd=folder,
            env=dict(os.environ),
            on_output=probe.count,
            marker=f"spawnbench-yes-{i}",
            budget=budget,
        )
        for i in range(args.streams)
    ]
    rounds: list[dict[str, Any]] = []
    try:
        for method in METHODS:  # warm-up: threads started, lookups cached
            await _end((await _storm(method, 8, args.concurrency, argv, folder, budget))[0])
        for r in range(args.rounds):
            for method in METHODS:
                figures = await _round(method, args, probe, argv, folder, budget)
                figures["round"] = r
                rounds.append(figures)
                print(
                    f"round {r} {method:14} spawn p50 {figures['spawn_ms_p50']:6.2f} ms"
                    f" p99 {figures['spawn_ms_p99']:6.2f}  stall p99 {figures['stall_ms_p99']:5.1f}"
                    f" max {figures['stall_ms_max']:5.1f}  cpu/spawn {figures['spawn_thread_cpu_ms_per_spawn']:5.2f} ms"
                    f"  faults/spawn {figures['process_faults_per_spawn']:7.0f}  load {figures['loadavg']:.2f}",
                    flush=True,
                )
                await asyncio.sleep(0.5)
        # What ptyprocess leaves to the caller: a child without the signal resets.
        bare = await asyncio.wrap_future(
            _FORKER.submit(
                _start_forked, argv, folder, dict(os.environ), 80, 24, "spawnbench-bare", False
            )
        )
        bare_pty = BidirectionalPTY(
            bare[0], bare[1], bare[2], "spawnbench-bare", lambda _: None, 1 << 20, False, budget
        )
        await asyncio.sleep(0.2)
        bare_facts = _child_facts(bare_pty.pid)
        await bare_pty.terminate(grace=1.0)
    finally:
        await _end(streams)
        for task in tasks:
            task.cancel()
        stop.set()
        await asyncio.to_thread(database.join)
    await asyncio.sleep(0.2)
    return {
        "rounds": rounds,
        "ptyprocess_without_preexec_child": bare_facts,
        "leftovers": {
            "children": _our_children(),
            "fds": len(os.listdir("/proc/self/fd")) - fds_before,
            # Idle workers of the two spawn pools and the default executor stay; anything
            # else would be a leak.
            "threads": [
                t.name
                for t in threading.enumerate()
                if t.ident not in threads_before
                and not t.name.startswith(("wxcode-pty-spawn", "bench-fork", "asyncio_"))
            ],
        },
    }


def _summary(rounds: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method in METHODS:
        mine = [r for r in rounds if r["method"] == method]
        out[method] = {}
        for key, value in mine[0].items():
            if isinstance(value, float) and key != "loadavg":
                values = [r[key] for r in mine]
                out[method][key] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spawns", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rss-mb", type=int, default=200)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "spawn.json"
    )
    args = parser.parse_args()
    # As a server with many sessions does (and bench/suite.py): the child's closing of
    # inherited fds may depend on it.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ballast = _ballast(args.rss_mb)
    rss = _rss_mb()
    print(
        f"RSS {rss:.0f} MB; {args.streams} streams; {args.spawns} spawns x {args.rounds} rounds per method",
        flush=True,
    )
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(_run(args, folder))
    del ballast
    summary = _summary(result["rounds"])
    keys = [
        ("spawn_ms_p50", "spawn p50 ms"),
        ("spawn_ms_p99", "spawn p99 ms"),
        ("first_output_ms_p50", "first output p50 ms"),
        ("first_output_ms_p99", "first output p99 ms"),
        ("stall_ms_p99_baseline", "stall p99 ms, baseline"),
        ("stall_ms_p99", "stall p99 ms, storm"),
        ("stall_ms_max_baseline", "stall max ms, baseline"),
        ("stall_ms_max", "stall max ms, storm"),
        ("spawn_thread_cpu_ms_per_spawn", "spawn thread CPU ms/spawn"),
        ("process_cpu_ms_per_spawn", "process CPU ms/spawn (excess)"),
        ("loop_cpu_ms_per_spawn", "loop thread CPU ms/spawn (excess)"),
        ("spawn_thread_faults_per_spawn", "spawn thread faults/spawn"),
        ("process_faults_per_spawn", "process faults/spawn (excess)"),
        ("loop_faults_per_spawn", "loop thread faults/spawn (excess)"),
        ("stream_mb_s_baseline", "streams MB/s, baseline"),
        ("stream_mb_s_storm", "streams MB/s, storm"),
        ("storm_s", "storm duration s"),
    ]
    print(f"\n{'median (min-max) over rounds':34}" + "".join(f"{m:>28}" for m in METHODS))
    for key, label in keys:
        cells = "".join(
            f"{summary[m][key]['median']:>12.2f} ({summary[m][key]['min']:.2f}-{summary[m][key]['max']:.2f})".rjust(
                28
            )
            for m in METHODS
        )
        print(f"{label:34}{cells}")
    print(f"leftovers: {result['leftovers']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "kernel": platform.release(),
                    "python": platform.python_version(),
                    "ptyprocess": ptyprocess.__version__,
                    "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg(),
                },
                "settings": {
                    **{k: v for k, v in vars(args).items() if k != "out"},
                    "rss_mb_reached": rss,
                    "open_file_limit": hard,
                    "program": "cat READY -",
                    "session_prefix_a": wpty._session_prefix(),
                },
                "summary": summary,
                **result,
                "facts": _FACTS,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
