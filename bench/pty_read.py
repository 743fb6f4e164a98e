"""Read throughput of BidirectionalPTY against a bare os.read loop on a PTY.

Both read `cat` of the same 50 MB file (raw mode, so no byte is translated), interleaved
(A B A B ...), five rounds each; prints the medians, min and max, and the ratio, and writes
JSON next to the other results. No server, no WebSocket: this is the PTY layer alone.

    python bench/pty_read.py [--size-mb 50] [--rounds 5] [--out bench/results/pty_read.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wxcode_pty.pty import BidirectionalPTY


def _command(path: Path) -> list[str]:
    return ["sh", "-c", f"stty raw -echo; exec cat {path}"]


def bare(path: Path) -> tuple[int, float]:
    """The limit: the program on a PTY, a tight blocking os.read loop."""
    master, slave = os.openpty()
    start = time.perf_counter()
    process = subprocess.Popen(
        _command(path), stdin=slave, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)
    total = 0
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: everything read, the program is gone
            break
        if not chunk:
            break
        total += len(chunk)
    elapsed = time.perf_counter() - start
    os.close(master)
    process.wait()
    return total, elapsed


async def _ours(path: Path) -> tuple[int, float]:
    total = 0

    def count(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)

    start = time.perf_counter()
    pty = await BidirectionalPTY.spawn(
        _command(path), cwd="/", env=dict(os.environ), on_output=count, marker="bench"
    )
    await pty.wait()
    elapsed = time.perf_counter() - start
    await pty.terminate()
    return total, elapsed


def ours(path: Path) -> tuple[int, float]:
    return asyncio.run(_ours(path))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "pty_read.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.txt"
        line = b"".join(bytes([33 + (i % 90)]) for i in range(99)) + b"\n"
        path.write_bytes(line * (args.size_mb * 1_000_000 // len(line)))
        size = path.stat().st_size
        rates: dict[str, list[float]] = {"bare os.read": [], "BidirectionalPTY": []}
        for _ in range(args.rounds):
            for name, run in (("bare os.read", bare), ("BidirectionalPTY", ours)):
                total, elapsed = run(path)
                if total != size:
                    raise SystemExit(f"{name} read {total} bytes of {size}")
                rates[name].append(size / elapsed / 1e6)
    summary = {
        name: {"median": statistics.median(v), "min": min(v), "max": max(v), "rounds": v}
        for name, v in rates.items()
    }
    ratio = summary["BidirectionalPTY"]["median"] / summary["bare os.read"]["median"]
    for name, figures in summary.items():
        print(
            f"{name:18} {figures['median']:7.1f} MB/s (min {figures['min']:.1f}, max {figures['max']:.1f})"
        )
    print(f"ratio {ratio:.2f} (target >= 0.9)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "size_bytes": size,
                "summary": summary,
                "ratio": ratio,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
