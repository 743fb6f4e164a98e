"""The raw limit: the workload program on a PTY read by a tight os.read loop, no server at all.

The PTY keeps the modes a new one has (output processing on) unless the program changes them,
as under every server. Run as its own process so it has a core to itself like the servers do,
and prints one JSON line:
  raw_reader.py throughput PROGRAM NAME   -> bytes, crc, seconds, cpu_seconds
  raw_reader.py echo COUNT PROGRAM NAME   -> latencies_ms
  raw_reader.py replay COUNT STAGGER PROGRAM PREFIX
                                          -> arrivals (per session, [time, bytes so far] per read), crcs
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import struct
import subprocess
import sys
import termios
import time
import zlib

READ_SIZE = 65536


def spawn(argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = os.openpty()
    # Same 80x24 the WebSocket clients ask for.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    return proc, master


def throughput(argv: list[str]) -> dict[str, float | int]:
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    proc, fd = spawn(argv)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, READ_SIZE)
        except OSError:  # EIO: the program closed its side and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)  # checked after the clock stops: the servers' clients do it
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    os.close(fd)
    proc.wait()
    total = sum(map(len, chunks))
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
    return {"bytes": total, "crc": crc, "seconds": elapsed, "cpu_seconds": cpu}


def echo(count: int, argv: list[str]) -> dict[str, list[float]]:
    proc, fd = spawn(argv)
    seen = b""
    while b"R" not in seen:
        seen += os.read(fd, READ_SIZE)
    latencies: list[float] = []
    for _ in range(count):
        t0 = time.perf_counter()
        os.write(fd, b"x")
        got = b""
        while not got:
            got = os.read(fd, READ_SIZE)
        latencies.append((time.perf_counter() - t0) * 1000.0)
    proc.kill()
    proc.wait()
    os.close(fd)
    return {"latencies_ms": latencies}


def replay(count: int, stagger: float, argv: list[str], prefix: str) -> dict[str, object]:
    """COUNT programs (named PREFIX0, PREFIX1, ...) started STAGGER seconds apart in all, read
    as their output comes: when each read ended and how many bytes the session had by then."""
    selector = selectors.DefaultSelector()
    arrivals: list[list[tuple[float, int]]] = [[] for _ in range(count)]
    totals = [0] * count
    crcs = [0] * count
    procs: list[subprocess.Popen[bytes]] = []
    step = stagger / max(count, 1)
    t0 = time.monotonic()
    started = 0
    open_fds = 0
    while started < count or open_fds:
        if started < count:
            wait = t0 + started * step - time.monotonic()
            if wait <= 0:
                proc, fd = spawn([*argv, f"{prefix}{started}"])
                procs.append(proc)
                selector.register(fd, selectors.EVENT_READ, started)
                started += 1
                open_fds += 1
                continue
        else:
            wait = None
        for key, _ in selector.select(wait):
            index = key.data
            try:
                chunk = os.read(key.fd, READ_SIZE)
            except OSError:
                chunk = b""
            if not chunk:
                selector.unregister(key.fd)
                os.close(key.fd)
                open_fds -= 1
                continue
            totals[index] += len(chunk)
            crcs[index] = zlib.crc32(chunk, crcs[index])
            arrivals[index].append((time.perf_counter(), totals[index]))
    for proc in procs:
        proc.wait()
    return {"arrivals": arrivals, "crcs": crcs}


def main() -> None:
    mode = sys.argv[1]
    if mode == "throughput":
        result: object = throughput(sys.argv[2:])
    elif mode == "echo":
        result = echo(int(sys.argv[2]), sys.argv[3:])
    elif mode == "replay":
        count, stagger = int(sys.argv[2]), float(sys.argv[3])
        result = replay(count, stagger, sys.argv[4:-1], sys.argv[-1])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
