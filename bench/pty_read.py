"""Read throughput of BidirectionalPTY against a bare os.read loop on a PTY.

Both read `cat` of the same 50 MB file of text lines, first with the terminal as a new PTY has it
(output processing on, as programs run: each \\n reaches the reader as \\r\\n), then after
`stty raw -echo` (bytes pass unchanged), for comparison. Within each mode the two readers are
interleaved (A B A B ...), five rounds each; prints the medians, min and max, and the ratio, and
writes JSON next to the other results. Every round checks the byte count and CRC-32 of what was
read. Also reports the CPU time of the reading process per MB. No server, no WebSocket: this is
the PTY layer alone.

    python bench/pty_read.py [--size-mb 50] [--rounds 5] [--modes cooked,raw]
                             [--out bench/results/pty_read.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wxcode_pty.pty import BidirectionalPTY

Reader = Callable[[list[str]], tuple[int, int, float, float]]


def _command(path: Path, mode: str) -> list[str]:
    setup = "stty raw -echo; " if mode == "raw" else ""
    return ["sh", "-c", f"{setup}exec cat {path}"]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare(command: list[str]) -> tuple[int, int, float, float]:
    """The limit: the program on a PTY, a tight blocking os.read loop."""
    master, slave = os.openpty()
    start, cpu = time.perf_counter(), _cpu()
    process = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)
    total = 0
    crc = 0
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: everything read, the program is gone
            break
        if not chunk:
            break
        total += len(chunk)
        crc = zlib.crc32(chunk, crc)
    elapsed, cpu = time.perf_counter() - start, _cpu() - cpu
    os.close(master)
    process.wait()
    return total, crc, elapsed, cpu


async def _ours(command: list[str]) -> tuple[int, int, float, float]:
    total = 0
    crc = 0

    def count(chunk: bytes) -> None:
        nonlocal total, crc
        total += len(chunk)
        crc = zlib.crc32(chunk, crc)

    start, cpu = time.perf_counter(), _cpu()
    pty = await BidirectionalPTY.spawn(
        command, cwd="/", env=dict(os.environ), on_output=count, marker="bench"
    )
    await pty.wait()
    elapsed, cpu = time.perf_counter() - start, _cpu() - cpu
    await pty.terminate()
    return total, crc, elapsed, cpu


def ours(command: list[str]) -> tuple[int, int, float, float]:
    return asyncio.run(_ours(command))


def _figures(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "rounds": values,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="cooked,raw", help="cooked, raw or both")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "pty_read.json"
    )
    args = parser.parse_args()
    readers: dict[str, Reader] = {"bare os.read": bare, "BidirectionalPTY": ours}
    modes: dict[str, Any] = {}
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "modes": modes}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.txt"
        line = b"".join(bytes([33 + (i % 90)]) for i in range(99)) + b"\n"
        path.write_bytes(line * (args.size_mb * 1_000_000 // len(line)))
        data = path.read_bytes()
        report["file_bytes"] = len(data)
        for mode in args.modes.split(","):
            # With output processing on, each \n of the file reaches the reader as \r\n.
            expected = data if mode == "raw" else data.replace(b"\n", b"\r\n")
            size, want = len(expected), zlib.crc32(expected)
            rates: dict[str, list[float]] = {name: [] for name in readers}
            costs: dict[str, list[float]] = {name: [] for name in readers}
            for _ in range(args.rounds):
                for name, run in readers.items():
                    total, crc, elapsed, cpu = run(_command(path, mode))
                    if (total, crc) != (size, want):
                        raise SystemExit(
                            f"{mode}, {name}: read {total} bytes of {size}, or not those"
                        )
                    rates[name].append(size / elapsed / 1e6)
                    costs[name].append(size / max(cpu, 1e-9) / 1e6)
            summary = {name: _figures(values) for name, values in rates.items()}
            cost = {name: _figures(values) for name, values in costs.items()}
            ratio = summary["BidirectionalPTY"]["median"] / summary["bare os.read"]["median"]
            label = "output processed" if mode == "cooked" else "stty raw"
            print(f"{mode} ({label}), {size} bytes read:")
            for name, figures in summary.items():
                print(
                    f"  {name:18} {figures['median']:7.1f} MB/s (min {figures['min']:.1f},"
                    f" max {figures['max']:.1f}), {cost[name]['median']:.0f} MB per CPU-second"
                )
            print(f"  ratio {ratio:.2f}")
            modes[mode] = {
                "expected_bytes": size,
                "mb_per_s": summary,
                "mb_per_cpu_s": cost,
                "ratio": ratio,
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
