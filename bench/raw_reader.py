"""The raw limit: the workload program on a PTY read by a tight os.read loop, no server at all.

The PTY keeps the modes a new one has (output processing on) unless the program changes them,
as under every server. Run as its own process so it has a core to itself like the servers do,
and prints one JSON line:
  raw_reader.py throughput PROGRAM NAME   -> bytes, crc, seconds, cpu_seconds
  raw_reader.py echo COUNT PROGRAM NAME   -> latencies_ms
"""

from __future__ import annotations

import fcntl
import json
import os
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


def main() -> None:
    mode = sys.argv[1]
    if mode == "throughput":
        result: object = throughput(sys.argv[2:])
    elif mode == "echo":
        result = echo(int(sys.argv[2]), sys.argv[3:])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
