"""Several hosts on one PostgreSQL database (SPEC 12): takeover time and scale behind HAProxy.

    python bench/cluster.py [--takeover 200] [--sessions 1000] [--lease 10] [--out FILE]

Starts a PostgreSQL server (Debian's binaries, as the tests do), three ``wxcode-pty serve``
hosts on it with one shared workdir, and HAProxy in front of them with
``examples/haproxy-cluster.cfg`` (the test suite's launchers, ``tests/cluster.py``). Each
session runs a POSIX shell that prints ``ready`` and then copies its input (``cat``).

- **takeover**: ``--takeover`` sessions are started on host 1, which is then SIGKILLed; the time
  until every one of them runs again on the other two hosts (``status`` running, a pid, another
  ``host``), from the kill and from the earliest moment the lease allows a peer to start (the
  lease plus the grace after the kill: the last renewal came at most ``lease / 5`` before it);
  and how the sessions were spread.
- **scale**: ``--sessions`` sessions per host, created through HAProxy (routing by project):
  each host's RSS (the server process, not its programs), then attach times through HAProxy
  for 300 of them, 10 at a time (connect, handshake, replay up to ``ready``), and how many
  requests the hosts forwarded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import percentile, raise_nofile_limit, rss_bytes  # noqa: E402

from tests.cluster import Cluster, HAProxy  # noqa: E402
from tests.postgres import PostgresServer, find_bindir, postgres_database  # noqa: E402

PROGRAM = "sh -c 'echo ready; exec cat'"


async def _create(
    http: aiohttp.ClientSession, base: str, names: list[str], concurrency: int = 20
) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with gate, http.post(f"{base}/api/sessions/{name}") as answer:
            if answer.status not in (200, 201):
                raise RuntimeError(f"creating {name}: {answer.status} {await answer.text()}")

    await asyncio.gather(*(one(n) for n in names))


async def _sessions(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}/api/sessions") as answer:
        result: list[dict[str, Any]] = await answer.json()
        return result


def _cluster(folder: Path, database: str, lease: float) -> Cluster:
    """Three hosts, started, with room for every session of the run."""
    return Cluster(
        folder,
        database,
        size=3,
        command=PROGRAM,
        lease=lease,
        extra_args=["--max-sessions", "4000"],
    ).start()


async def takeover(folder: Path, database: str, count: int, lease: float) -> dict[str, Any]:
    cluster = _cluster(folder, database, lease)
    try:
        first, second = cluster.hosts[0], cluster.hosts[1]
        names = [f"t{n}" for n in range(count)]
        async with aiohttp.ClientSession(headers=cluster.headers()) as http:
            await _create(http, first.url, names)
            rows = await _sessions(http, second.url)
            assert sum(r["host"] == first.url for r in rows) == count, "not all on host 1"
            killed = time.monotonic()
            first.kill()
            while True:
                rows = await _sessions(http, second.url)
                moved = [
                    r
                    for r in rows
                    if r["host"] not in (None, first.url) and r["status"] == "running" and r["pid"]
                ]
                if len(moved) == count:
                    break
                if time.monotonic() - killed > 10 * lease + 120:
                    raise RuntimeError(f"only {len(moved)} of {count} came back")
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - killed
        spread = Counter(r["host"] for r in moved)
        return {
            "sessions": count,
            "lease_s": lease,
            "all_running_after_kill_s": round(elapsed, 2),
            "after_the_bound_s": round(elapsed - 1.2 * lease, 2),
            "spread": sorted(spread.values(), reverse=True),
        }
    finally:
        cluster.stop()


async def scale(folder: Path, database: str, per_host: int, lease: float) -> dict[str, Any]:
    cluster = _cluster(folder, database, lease)
    proxy = HAProxy(folder / "haproxy", [(h.name, h.port) for h in cluster.hosts])
    try:
        proxy.start()
        names = [f"s{n}" for n in range(3 * per_host)]
        async with aiohttp.ClientSession(headers=cluster.headers()) as http:
            started = time.monotonic()
            await _create(http, proxy.url, names)
            created_s = time.monotonic() - started
            await asyncio.sleep(2)  # let allocations settle before reading RSS
            rss = [round(rss_bytes(h.pid) / 2**20, 1) for h in cluster.hosts]
            owned = Counter(r["host"] for r in await _sessions(http, cluster.hosts[0].url))
            times = await _attach(http, proxy, names[:: max(1, len(names) // 300)])
            forwards = 0
            for host in cluster.hosts:
                async with http.get(f"{host.url}/metrics") as answer:
                    for line in (await answer.text()).splitlines():
                        if line.startswith("wxcode_pty_forwards_total "):
                            forwards += int(float(line.split()[1]))
        return {
            "sessions_per_host_target": per_host,
            "sessions_per_host": sorted(owned.values(), reverse=True),
            "create_all_s": round(created_s, 1),
            "rss_mb_per_host": rss,
            "attach_p50_ms": round(percentile(times, 50), 1),
            "attach_p99_ms": round(percentile(times, 99), 1),
            "attached": len(times),
            "forwards": forwards,
        }
    finally:
        proxy.stop()
        cluster.stop()


async def _attach(http: aiohttp.ClientSession, proxy: HAProxy, names: list[str]) -> list[float]:
    gate = asyncio.Semaphore(10)
    times: list[float] = []

    async def one(name: str) -> None:
        async with gate:
            began = time.monotonic()
            ws = await http.ws_connect(
                f"{proxy.ws_url}/ws/{name}?cols=80&rows=24", headers={"Origin": proxy.url}
            )
            seen = b""
            try:
                while b"ready" not in seen:
                    message = await ws.receive(timeout=30)
                    if message.type is aiohttp.WSMsgType.BINARY:
                        seen += message.data
                    elif message.type is not aiohttp.WSMsgType.TEXT:
                        raise RuntimeError(f"{name}: closed {ws.close_code}")
                times.append((time.monotonic() - began) * 1000)
            finally:
                await ws.close()

    await asyncio.gather(*(one(n) for n in names))
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--takeover", type=int, default=200, help="sessions on the killed host")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions per host")
    parser.add_argument("--lease", type=float, default=10.0, help="--host-lease of the hosts")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cluster.json")
    args = parser.parse_args()
    raise_nofile_limit()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL binaries (initdb, postgres): apt-get install postgresql")
    server = PostgresServer(bindir)
    server.start()
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "lease_s": args.lease}
    try:
        with tempfile.TemporaryDirectory(prefix="wxcode-cluster-") as tmp:
            async for url in postgres_database(server):
                results["takeover"] = await takeover(
                    Path(tmp) / "a", url, args.takeover, args.lease
                )
                print(json.dumps(results["takeover"]), flush=True)
            async for url in postgres_database(server):
                results["scale"] = await scale(Path(tmp) / "b", url, args.sessions, args.lease)
                print(json.dumps(results["scale"]), flush=True)
    finally:
        server.remove()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
