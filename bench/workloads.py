"""The workloads of the benchmark, one function each, run in interleaved rounds.

Each workload returns a JSON-ready dict: per server a list of per-round records, plus the
summaries (median, min, max over rounds) that the report and the chart use.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from clients import TermClient, open_client, open_stalled_socket
from common import (
    MB,
    READY_MARK,
    cpu_seconds,
    descendants,
    is_running,
    machine_cpu_seconds,
    on_the_wire,
    percentile,
    rss_bytes,
    summarize,
    thread_cpu_seconds,
    tty_modes,
)
from replay import PAUSE as REPLAY_PAUSE
from servers import BENCH_DIR, ServerEnv, ServerProcess

__all__ = ["WORKLOADS", "Bench", "Config", "Expected", "Recording"]

Record = dict[str, Any]


@dataclass(frozen=True)
class Config:
    quick: bool
    file_size: int
    throughput_rounds: int
    echo_count: int
    echo_rounds: int
    loaded_echo_count: int
    loaded_echo_seconds: float
    flood_sessions: int
    loaded_rounds: int
    session_levels: tuple[int, ...]
    many_rounds: int
    attach_concurrency: int
    recovery_sessions: int
    recovery_rounds: int
    slow_seconds: float
    slow_rounds: int
    claude_sessions: int
    claude_turns: int
    claude_stagger: float
    claude_rounds: int

    @classmethod
    def preset(cls, quick: bool) -> Config:
        if quick:
            return cls(
                quick=True,
                file_size=5 * MB,
                throughput_rounds=3,
                echo_count=200,
                echo_rounds=3,
                loaded_echo_count=200,
                loaded_echo_seconds=10.0,
                flood_sessions=10,
                loaded_rounds=1,
                session_levels=(50,),
                many_rounds=1,
                attach_concurrency=10,
                recovery_sessions=20,
                recovery_rounds=1,
                slow_seconds=5.0,
                slow_rounds=1,
                claude_sessions=10,
                claude_turns=1,
                claude_stagger=3.0,
                claude_rounds=1,
            )
        return cls(
            quick=False,
            file_size=50 * MB,
            throughput_rounds=5,
            echo_count=2000,
            echo_rounds=3,
            loaded_echo_count=1000,
            loaded_echo_seconds=20.0,
            flood_sessions=50,
            loaded_rounds=2,
            session_levels=(200, 1000),
            many_rounds=2,
            attach_concurrency=20,
            recovery_sessions=200,
            recovery_rounds=2,
            slow_seconds=30.0,
            slow_rounds=1,
            claude_sessions=100,
            claude_turns=2,
            claude_stagger=10.0,
            claude_rounds=1,
        )


@dataclass(frozen=True)
class Expected:
    """What a client should receive when the program cats the data file: its length and
    CRC-32 once the PTY has passed it on (with output processing on, \\n is \\r\\n)."""

    size: int
    crc: int

    @classmethod
    def of(cls, wire: bytes) -> Expected:
        return cls(size=len(wire), crc=zlib.crc32(wire))


@dataclass(frozen=True)
class Recording:
    """A recorded program turn: (seconds from its start, bytes written) per write."""

    path: Path
    writes: list[tuple[float, bytes]]
    seconds: float
    turns: int  # how many times each replay session plays it

    @classmethod
    def load(cls, path: Path, turns: int) -> Recording:
        doc = json.loads(path.read_text())
        writes = [(float(t), base64.b64decode(data)) for t, data in doc["writes"]]
        return cls(path=path, writes=writes, seconds=float(doc["seconds"]), turns=turns)

    def schedule(self) -> tuple[list[float], list[int], Expected]:
        """When each write is due (replay.py's schedule: turns in a row, PAUSE apart), the
        wire bytes received once it has arrived, and the whole expected stream."""
        period = self.seconds + REPLAY_PAUSE
        due: list[float] = []
        ends: list[int] = []
        wire: list[bytes] = []
        total = 0
        for turn in range(self.turns):
            for at, data in self.writes:
                chunk = on_the_wire(data, output_processing=True)
                total += len(chunk)
                due.append(turn * period + at)
                ends.append(total)
                wire.append(chunk)
        return due, ends, Expected.of(b"".join(wire))


@dataclass
class Bench:
    cfg: Config
    env: ServerEnv
    data_file: Path
    expected: dict[str, Expected]  # "cooked" (the default terminal modes) and "raw" (stty raw)
    recording: Recording | None  # the Claude turn that claude_like replays
    servers: list[str]  # server kinds that can run, in round order
    http: aiohttp.ClientSession
    log: Callable[[str], None]
    _names: itertools.count[int] = field(default_factory=itertools.count)
    _dirs: itertools.count[int] = field(default_factory=itertools.count)

    def name(self, prefix: str) -> str:
        """A session name never used before in this run, so every round starts a fresh program."""
        return f"{prefix}-{next(self._names)}"

    def server(self, kind: str) -> ServerProcess:
        return ServerProcess(
            kind=kind, env=self.env, state_dir=self.env.scratch / f"{kind}-{next(self._dirs)}"
        )


class RoundFailed(Exception):
    pass


async def _read(client: TermClient, within: float) -> bytes | None:
    try:
        return await asyncio.wait_for(client.read(), within)
    except TimeoutError:
        raise RoundFailed(f"no output for {within:.0f} s") from None


async def _wait_ready(client: TermClient, within: float = 30.0) -> None:
    """Wait for the program's ready mark; anything before it is not expected."""
    seen = b""
    while READY_MARK not in seen:
        chunk = await _read(client, within)
        if chunk is None:
            raise RoundFailed(
                f"session closed before it was ready (close code {client.close_code})"
            )
        seen += chunk


async def _echo_probe(client: TermClient, count: int, max_seconds: float = 600.0) -> list[float]:
    """One byte out, wait for its echo, count times (or until max_seconds); round trips in ms."""
    latencies: list[float] = []
    stop = time.monotonic() + max_seconds
    for _ in range(count):
        if time.monotonic() > stop:
            break
        t0 = time.perf_counter()
        await client.write(b"x")
        got = await _read(client, 10.0)
        if got is None:
            raise RoundFailed(
                f"session closed during the echo probe (close code {client.close_code})"
            )
        latencies.append((time.perf_counter() - t0) * 1000.0)
        if got != b"x":
            raise RoundFailed(f"echo returned {got[:20]!r} instead of b'x'")
    return latencies


def _raw_reader(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / "raw_reader.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _summaries(per_server: dict[str, list[Record]], keys: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind, records in per_server.items():
        ok = [r for r in records if "error" not in r]
        out[kind] = {key: summarize([r[key] for r in ok if r.get(key) is not None]) for key in keys}
        out[kind]["errors"] = [r["error"] for r in records if "error" in r]
    return out


async def _rounds(
    bench: Bench,
    rounds: int,
    targets: list[str],
    run: Callable[[str, int], Awaitable[Record]],
    what: str,
) -> dict[str, list[Record]]:
    """Run rounds interleaved (A B C A B C ...); a failed round is recorded, not fatal."""
    records: dict[str, list[Record]] = {t: [] for t in targets}
    for index in range(rounds):
        for target in targets:
            t0 = time.monotonic()
            try:
                record = await run(target, index)
            except (
                RoundFailed,
                OSError,
                aiohttp.ClientError,
                RuntimeError,
                subprocess.SubprocessError,
            ) as exc:
                record = {"error": f"{type(exc).__name__}: {exc}"}
            records[target].append(record)
            shown = {
                k: (round(v, 3) if isinstance(v, float) else v)
                for k, v in record.items()
                if k != "latencies_ms"
            }
            took = time.monotonic() - t0
            bench.log(f"  {what} round {index + 1}/{rounds} {target}: {shown} ({took:.1f} s)")
    return records


# --- throughput and cost ------------------------------------------------------------------


async def _throughput(bench: Bench, mode: str) -> dict[str, Any]:
    """cat of the data file to one client; MB/s, server CPU per MB, bytes lost. mode "cooked"
    leaves the terminal as a new PTY is (output processing on), "raw" runs stty raw first."""
    cfg = bench.cfg
    expected = bench.expected[mode]
    prefix = "tput" if mode == "cooked" else "tputraw"
    servers = {kind: bench.server(kind) for kind in bench.servers}
    for server in servers.values():
        await server.start()

    async def one(target: str, _: int) -> Record:
        name = bench.name(prefix)
        if target == "raw":
            raw = await asyncio.to_thread(
                _raw_reader, "throughput", "sh", str(bench.env.program), name
            )
            return {
                "mb_per_s": raw["bytes"] / MB / raw["seconds"],
                "mb_per_cpu_s": raw["bytes"] / MB / max(raw["cpu_seconds"], 1e-9),
                "lost_bytes": expected.size - raw["bytes"],
                "intact": raw["bytes"] == expected.size and raw["crc"] == expected.crc,
                "seconds": raw["seconds"],
                "cpu_seconds": raw["cpu_seconds"],
                "tty": tty_modes(bench.env.scratch / "modes" / name),
            }
        server = servers[target]
        cpu0 = cpu_seconds(server.pid)
        t0 = time.perf_counter()
        client = await open_client(bench.http, target, server.port, name)
        received = 0
        crc = 0
        t_last = t0
        try:
            while (chunk := await _read(client, 30.0)) is not None:
                received += len(chunk)
                crc = zlib.crc32(chunk, crc)
                t_last = time.perf_counter()
        finally:
            await client.close()
        cpu = cpu_seconds(server.pid) - cpu0
        seconds = t_last - t0
        return {
            "mb_per_s": received / MB / seconds,
            "mb_per_cpu_s": received / MB / max(cpu, 1e-9),
            "lost_bytes": expected.size - received,
            "intact": received == expected.size and crc == expected.crc,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "close_code": client.close_code,
            # wxcode-pty only: where the replay began; above 0 means output was evicted unseen.
            "replay_from": next(
                (m.get("from") for m in client.control if m.get("type") == "replay"), None
            ),
            "tty": tty_modes(bench.env.scratch / "modes" / name),
        }

    targets = ["raw", *bench.servers]
    try:
        bench.log(f"  warm-up round (not recorded), {mode} terminal")
        await _rounds(bench, 1, targets, one, "warm-up")
        records = await _rounds(bench, cfg.throughput_rounds, targets, one, f"throughput {mode}")
    finally:
        for server in servers.values():
            await server.stop()
    summary = _summaries(records, ["mb_per_s", "mb_per_cpu_s", "lost_bytes", "cpu_seconds"])
    for kind, rounds in records.items():
        # Every round of every server should report the same modes; a server that set up its
        # terminals differently would show here (and in `intact`).
        summary[kind]["tty"] = sorted({str(r.get("tty")) for r in rounds if "error" not in r})
    return {
        "terminal": mode,
        "file_bytes": bench.data_file.stat().st_size,
        "expected_bytes": expected.size,
        "rounds": records,
        "summary": summary,
    }


async def throughput(bench: Bench) -> dict[str, Any]:
    """The headline: programs in the normal terminal mode, as shells, Node and Claude run."""
    return await _throughput(bench, "cooked")


async def throughput_raw(bench: Bench) -> dict[str, Any]:
    """The same with stty raw (no output processing), for comparison."""
    return await _throughput(bench, "raw")


# --- echo latency --------------------------------------------------------------------------


def _latency_record(latencies: list[float]) -> Record:
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "count": len(latencies),
        "latencies_ms": latencies,
    }


async def echo_idle(bench: Bench) -> dict[str, Any]:
    """One byte in, its echo out, echo_count times, cat child, nothing else running."""
    cfg = bench.cfg
    servers = {kind: bench.server(kind) for kind in bench.servers}
    for server in servers.values():
        await server.start()

    async def one(target: str, _: int) -> Record:
        name = bench.name("echo")
        if target == "raw":
            raw = await asyncio.to_thread(
                _raw_reader, "echo", str(cfg.echo_count), "sh", str(bench.env.program), name
            )
            return _latency_record(raw["latencies_ms"])
        server = servers[target]
        client = await open_client(bench.http, target, server.port, name)
        try:
            await _wait_ready(client)
            cpu0 = cpu_seconds(server.pid)
            latencies = await _echo_probe(client, cfg.echo_count)
            cpu = cpu_seconds(server.pid) - cpu0
        finally:
            await client.close()
            await server.end_sessions(bench.http, [name])
        return {
            **_latency_record(latencies),
            "server_cpu_us_per_echo": 1e6 * cpu / max(len(latencies), 1),
        }

    try:
        records = await _rounds(bench, cfg.echo_rounds, ["raw", *bench.servers], one, "echo")
    finally:
        for server in servers.values():
            await server.stop()
    return {
        "rounds": _strip_samples(records),
        "summary": _summaries(records, ["p50_ms", "p99_ms", "max_ms", "server_cpu_us_per_echo"]),
    }


def _strip_samples(records: dict[str, list[Record]]) -> dict[str, list[Record]]:
    """Keep the JSON small: per-sample latencies are summarised, not stored."""
    return {
        k: [{f: v for f, v in r.items() if f != "latencies_ms"} for r in rs]
        for k, rs in records.items()
    }


async def echo_loaded(bench: Bench) -> dict[str, Any]:
    """The echo probe while flood_sessions other sessions of the same server flood output
    (`yes`), each read by its own client in a separate process."""
    cfg = bench.cfg

    async def one(target: str, _: int) -> Record:
        server = bench.server(target)
        await server.start()
        flood: asyncio.subprocess.Process | None = None
        prefix = bench.name("flood") + "-"
        try:
            flood = await asyncio.create_subprocess_exec(
                sys.executable,
                str(BENCH_DIR / "flood_reader.py"),
                target,
                str(server.port),
                str(cfg.flood_sessions),
                prefix,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert flood.stdout is not None and flood.stdin is not None
            line = await asyncio.wait_for(flood.stdout.readline(), 120)
            if line.strip() != b"ready":
                raise RoundFailed(
                    f"flood clients did not start: {line.decode(errors='replace').strip()}"
                )
            await asyncio.sleep(1.0)  # let the flood reach a steady state
            name = bench.name("echo")
            client = await open_client(bench.http, target, server.port, name)
            await _wait_ready(client)
            latencies = await _echo_probe(client, cfg.loaded_echo_count, cfg.loaded_echo_seconds)
            await client.close()
            flood.stdin.close()
            summary = json.loads(await asyncio.wait_for(flood.stdout.readline(), 60))
            await flood.wait()
            flood = None
        finally:
            if flood is not None and flood.returncode is None:
                flood.kill()
                await flood.wait()
            await server.stop()
        record = _latency_record(latencies)
        record["flood_mb_per_s"] = summary["bytes"] / MB / summary["seconds"]
        record["flood_clients_closed"] = summary["closed_early"]
        return record

    records = await _rounds(bench, cfg.loaded_rounds, list(bench.servers), one, "echo under flood")
    return {
        "flood_sessions": cfg.flood_sessions,
        "rounds": _strip_samples(records),
        "summary": _summaries(records, ["p50_ms", "p99_ms", "max_ms", "flood_mb_per_s"]),
    }


# --- many sessions ------------------------------------------------------------------------


async def _attach_many(
    bench: Bench, server: ServerProcess, names: list[str], deadline: float
) -> tuple[list[TermClient], list[float], list[str]]:
    """Attach one client per name, attach_concurrency at a time; an attach ends when the
    program's ready mark arrives. Returns clients, attach times in ms, and failures."""
    gate = asyncio.Semaphore(bench.cfg.attach_concurrency)
    clients: list[TermClient] = []
    times: list[float] = []
    failures: list[str] = []

    async def attach(name: str) -> None:
        async with gate:
            t0 = time.perf_counter()
            try:
                client = await open_client(bench.http, server.kind, server.port, name)
                clients.append(client)
                await _wait_ready(client, max(1.0, deadline - time.monotonic()))
                times.append((time.perf_counter() - t0) * 1000.0)
            except (RoundFailed, OSError, aiohttp.ClientError) as exc:
                failures.append(f"{name}: {type(exc).__name__}: {exc}")

    await asyncio.gather(*(attach(n) for n in names))
    return clients, times, failures


async def _check_alive(clients: list[TermClient], concurrency: int) -> int:
    """Send one byte to every session and count those whose echo does not come back."""
    gate = asyncio.Semaphore(concurrency)
    dead = 0

    async def check(client: TermClient) -> None:
        nonlocal dead
        async with gate:
            try:
                await _echo_probe(client, 1)
            except (RoundFailed, OSError, aiohttp.ClientError):
                dead += 1

    await asyncio.gather(*(check(c) for c in clients))
    return dead


def _attach_cpu(
    pid: int, before: dict[int, float], after: dict[int, float], machine: float, attached: int
) -> dict[str, float]:
    """CPU per attach in ms: the server's (all threads, and the event loop's thread alone) and
    the whole machine's (server, programs, this client, the kernel), which bounds the attach
    time when the attaches keep every core busy."""
    if not attached:
        return {}
    spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    return {
        "server_cpu_ms_per_attach": 1000.0 * sum(spent.values()) / attached,
        "main_thread_cpu_ms_per_attach": 1000.0 * spent.get(pid, 0.0) / attached,
        "machine_cpu_ms_per_attach": 1000.0 * machine / attached,
    }


async def many_sessions(bench: Bench) -> dict[str, Any]:
    """N concurrent sessions, each a cat child with one client: server RSS and attach times."""
    cfg = bench.cfg
    levels: dict[str, Any] = {}
    for level in cfg.session_levels:

        async def one(target: str, _: int, level: int = level) -> Record:
            server = bench.server(target)
            await server.start()
            clients: list[TermClient] = []
            try:
                await asyncio.sleep(0.5)
                rss_idle = rss_bytes(server.pid)
                names = [bench.name("idle") for _ in range(level)]
                threads0 = thread_cpu_seconds(server.pid)
                machine0 = machine_cpu_seconds()
                t0 = time.monotonic()
                clients, times, failures = await _attach_many(
                    bench, server, names, time.monotonic() + 300
                )
                seconds = time.monotonic() - t0
                threads1 = thread_cpu_seconds(server.pid)
                machine = machine_cpu_seconds() - machine0
                await asyncio.sleep(1.0)  # let allocations settle before reading RSS
                rss = rss_bytes(server.pid)
                children = descendants(server.pid)
                dead = await _check_alive(clients, cfg.attach_concurrency)
            finally:
                await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
                await server.stop()
            return {
                "sessions": level,
                "rss_mb": rss / MB,
                "rss_idle_mb": rss_idle / MB,
                "rss_per_session_kb": (rss - rss_idle) / max(level, 1) / 1000,
                "attach_p50_ms": percentile(times, 50) if times else None,
                "attach_p99_ms": percentile(times, 99) if times else None,
                "attach_all_s": seconds,
                "attached": len(times),
                "failed": len(failures),
                "not_echoing": dead,
                "child_processes": len(children),
                # Where the CPU of an attach goes (the ones that attached; threads that ended
                # during the attaches are not counted).
                **_attach_cpu(server.pid, threads0, threads1, machine, len(times)),
                "failures_sample": failures[:3],
            }

        records = await _rounds(
            bench, cfg.many_rounds, list(bench.servers), one, f"{level} sessions"
        )
        levels[str(level)] = {
            "rounds": records,
            "summary": _summaries(
                records,
                [
                    "rss_mb",
                    "attach_p50_ms",
                    "attach_p99_ms",
                    "attach_all_s",
                    "failed",
                    "server_cpu_ms_per_attach",
                    "main_thread_cpu_ms_per_attach",
                    "machine_cpu_ms_per_attach",
                ],
            ),
        }
    return {"attach_concurrency": cfg.attach_concurrency, "levels": levels}


# --- restart recovery (wxcode-pty only) ---------------------------------------------------


async def recovery(bench: Bench) -> dict[str, Any]:
    """N live sessions, SIGKILL the server, start it again on the same database: time until
    every session is attachable again, and how many were respawned rather than created."""
    cfg = bench.cfg
    peers = {k: "n/a: keeps no sessions across a restart" for k in ("terminado", "ttyd")}
    if "wxcode-pty" not in bench.servers:
        bench.log(
            "  skipped: only wxcode-pty keeps sessions across a restart, and it is not available"
        )
        return {"skipped": "wxcode-pty is not available", "peers": peers}

    async def one(target: str, _: int) -> Record:
        server = bench.server(target)
        await server.start()
        names = [bench.name("idle") for _ in range(cfg.recovery_sessions)]
        clients, _times, failures = await _attach_many(bench, server, names, time.monotonic() + 120)
        if failures:
            await server.stop()
            raise RoundFailed(f"{len(failures)} sessions failed before the kill: {failures[0]}")
        for client in clients:
            await client.close()
        server.kill()
        old_tree = set(server.known_children)
        t0 = time.monotonic()
        try:
            await server.start()
            listening = time.monotonic() - t0
            clients, _times, failures = await _attach_many(bench, server, names, t0 + 60)
            seconds = time.monotonic() - t0
            resumed = sum(1 for c in clients if (c.hello or {}).get("resumed") is True)
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
            # Old processes still alive: the restarted server should have ended them.
            old_alive = sum(1 for pid, started in old_tree if is_running(pid, started))
        finally:
            await server.stop()
            server.known_children = old_tree
            server.reap_leftovers()
        return {
            "sessions": cfg.recovery_sessions,
            "all_attachable_s": seconds if not failures else None,
            "listening_s": listening,
            "attachable": cfg.recovery_sessions - len(failures),
            "resumed": resumed,
            "old_processes_left": old_alive,
            "failures_sample": failures[:3],
        }

    records = await _rounds(bench, cfg.recovery_rounds, ["wxcode-pty"], one, "recovery")
    return {
        "rounds": records,
        "summary": _summaries(
            records, ["all_attachable_s", "listening_s", "resumed", "attachable"]
        ),
        "peers": peers,
    }


# --- slow consumer ------------------------------------------------------------------------


async def slow_consumer(bench: Bench) -> dict[str, Any]:
    """A `yes` session with a client that never reads, for slow_seconds: the server's RSS
    growth, and echo round trips of another client on another session meanwhile."""
    cfg = bench.cfg

    async def one(target: str, _: int) -> Record:
        server = bench.server(target)
        await server.start()
        stalled = None
        try:
            observer = await open_client(bench.http, target, server.port, bench.name("echo"))
            await _wait_ready(observer)
            await _echo_probe(observer, 20)  # warm the path before the baseline
            await asyncio.sleep(0.5)
            rss0 = rss_bytes(server.pid)
            stalled = await asyncio.to_thread(
                open_stalled_socket, target, server.port, bench.name("yes")
            )
            t_end = time.monotonic() + cfg.slow_seconds
            peak = rss0
            latencies: list[float] = []
            next_sample = 0.0
            while (now := time.monotonic()) < t_end:
                if now >= next_sample:
                    peak = max(peak, rss_bytes(server.pid))
                    next_sample = now + 0.5
                latencies += await _echo_probe(observer, 1)
                await asyncio.sleep(0.05)
            rss_end = rss_bytes(server.pid)
            peak = max(peak, rss_end)
            dropped = await asyncio.to_thread(_was_closed, stalled)
            await observer.close()
        finally:
            if stalled is not None:
                stalled.close()
            await server.stop()
        return {
            "rss_growth_mb": (peak - rss0) / MB,
            "rss_end_growth_mb": (rss_end - rss0) / MB,
            "rss_baseline_mb": rss0 / MB,
            "observer_p99_ms": percentile(latencies, 99),
            "observer_max_ms": max(latencies),
            "observer_echoes": len(latencies),
            "stalled_client_closed_by_server": dropped,
        }

    records = await _rounds(bench, cfg.slow_rounds, list(bench.servers), one, "slow consumer")
    return {
        "seconds": cfg.slow_seconds,
        "rounds": records,
        "summary": _summaries(records, ["rss_growth_mb", "observer_p99_ms", "observer_max_ms"]),
    }


def _was_closed(sock: Any, budget: float = 3.0) -> bool | None:
    """Drain what the stalled socket holds: True if the server closed it, None if it is still
    open (or too much is queued to tell within the budget)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            return None
        except OSError:
            return True
        if not data:
            return True
    return None


# --- Claude-like sessions -----------------------------------------------------------------


def _lateness(arrivals: list[tuple[float, int]], due: list[float], ends: list[int]) -> list[float]:
    """How late each write arrived, in ms: when its last byte arrived after the first write's,
    minus when it was due after the first write's. arrivals: (time, bytes so far) per read."""
    lateness: list[float] = []
    index = 0
    first: float | None = None
    for at, end in zip(due, ends, strict=True):
        while index < len(arrivals) and arrivals[index][1] < end:
            index += 1
        if index == len(arrivals):
            break
        if first is None:
            first = arrivals[index][0] - at
        lateness.append((arrivals[index][0] - at - first) * 1000.0)
    return lateness


async def claude_like(bench: Bench) -> dict[str, Any]:
    """claude_sessions sessions replay a recorded Claude Code turn at its real pace, started
    claude_stagger seconds apart in all, while another client types a key every 50 ms:
    how late the output arrives, what the server spends per session, and the typing echo."""
    cfg = bench.cfg
    if bench.recording is None:
        bench.log("  skipped: no recording (bench/recordings/claude_turn.json)")
        return {"skipped": "no recording"}
    recording = bench.recording
    due, ends, expected = recording.schedule()

    async def replay_session(target: str, port: int, delay: float) -> Record:
        await asyncio.sleep(delay)
        client = await open_client(bench.http, target, port, bench.name("replay"))
        received = 0
        crc = 0
        arrivals: list[tuple[float, int]] = []
        try:
            while received < expected.size and (chunk := await _read(client, 30.0)) is not None:
                received += len(chunk)
                crc = zlib.crc32(chunk, crc)
                arrivals.append((time.perf_counter(), received))
        finally:
            await client.close()
        lateness = _lateness(arrivals, due, ends)
        return {
            "received": received,
            "intact": received == expected.size and crc == expected.crc,
            "lateness_ms": lateness,
        }

    async def raw_round() -> Record:
        # The floor: the same programs on PTYs read by one tight loop, no server, no typing.
        t0 = time.perf_counter()
        raw = await asyncio.to_thread(
            _raw_reader,
            "replay",
            str(cfg.claude_sessions),
            str(cfg.claude_stagger),
            "sh",
            str(bench.env.program),
            bench.name("replay") + "-",
        )
        wall = time.perf_counter() - t0
        sessions = [[(float(t), int(n)) for t, n in a] for a in raw["arrivals"]]
        lateness = [v for a in sessions for v in _lateness(a, due, ends)]
        if not lateness:
            raise RoundFailed("no session delivered output")
        return {
            "sessions": cfg.claude_sessions,
            "lateness_p50_ms": percentile(lateness, 50),
            "lateness_p99_ms": percentile(lateness, 99),
            "lateness_max_ms": max(lateness),
            "intact_sessions": sum(
                1
                for a, crc in zip(sessions, raw["crcs"], strict=True)
                if a and a[-1][1] == expected.size and crc == expected.crc
            ),
            "seconds": wall,
        }

    async def one(target: str, _: int) -> Record:
        if target == "raw":
            return await raw_round()
        server = bench.server(target)
        await server.start()
        probe_latencies: list[float] = []
        try:
            observer = await open_client(bench.http, target, server.port, bench.name("echo"))
            await _wait_ready(observer)
            await _echo_probe(observer, 20)  # warm the path before measuring
            done = asyncio.Event()

            async def type_keys() -> None:
                while not done.is_set():
                    probe_latencies.extend(await _echo_probe(observer, 1))
                    await asyncio.sleep(0.05)

            typing = asyncio.get_running_loop().create_task(type_keys())
            cpu0 = cpu_seconds(server.pid)
            t0 = time.perf_counter()
            step = cfg.claude_stagger / max(cfg.claude_sessions, 1)
            sessions = await asyncio.gather(
                *(
                    replay_session(target, server.port, i * step)
                    for i in range(cfg.claude_sessions)
                ),
                return_exceptions=True,
            )
            wall = time.perf_counter() - t0
            cpu = cpu_seconds(server.pid) - cpu0
            rss = rss_bytes(server.pid)
            done.set()
            await typing
            await observer.close()
        finally:
            await server.stop()
        failed = [s for s in sessions if isinstance(s, BaseException)]
        ok = [s for s in sessions if not isinstance(s, BaseException)]
        lateness = [v for s in ok for v in s["lateness_ms"]]
        if not lateness:
            raise RoundFailed(f"no session delivered output: {failed[:1]}")
        # Session-seconds of replay: what one session costs the server, as a share of a core.
        session_seconds = cfg.claude_sessions * (recording.turns * recording.seconds)
        return {
            "sessions": cfg.claude_sessions,
            "lateness_p50_ms": percentile(lateness, 50),
            "lateness_p99_ms": percentile(lateness, 99),
            "lateness_max_ms": max(lateness),
            "server_cpu_seconds": cpu,
            "cpu_pct_per_session": 100.0 * cpu / session_seconds,
            "cpu_s_per_session_hour": 3600.0 * cpu / session_seconds,
            "server_cpu_pct": 100.0 * cpu / wall,
            "rss_mb": rss / MB,
            "echo_p99_ms": percentile(probe_latencies, 99) if probe_latencies else None,
            "echo_max_ms": max(probe_latencies) if probe_latencies else None,
            "echoes": len(probe_latencies),
            "intact_sessions": sum(1 for s in ok if s["intact"]),
            "failed_sessions": len(failed),
            "failures_sample": [f"{type(f).__name__}: {f}" for f in failed[:3]],
            "seconds": wall,
        }

    records = await _rounds(
        bench, cfg.claude_rounds, ["raw", *bench.servers], one, "claude-like sessions"
    )
    return {
        "recording": recording.path.name,
        "turn_bytes_on_the_wire": expected.size // max(recording.turns, 1),
        "turn_seconds": recording.seconds,
        "turns_per_session": recording.turns,
        "sessions": cfg.claude_sessions,
        "stagger_seconds": cfg.claude_stagger,
        "rounds": records,
        "summary": _summaries(
            records,
            [
                "lateness_p99_ms",
                "cpu_pct_per_session",
                "cpu_s_per_session_hour",
                "server_cpu_pct",
                "echo_p99_ms",
                "rss_mb",
            ],
        ),
    }


WORKLOADS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "throughput": throughput,
    "throughput_raw": throughput_raw,
    "echo": echo_idle,
    "echo_loaded": echo_loaded,
    "many_sessions": many_sessions,
    "recovery": recovery,
    "slow_consumer": slow_consumer,
    "claude_like": claude_like,
}
