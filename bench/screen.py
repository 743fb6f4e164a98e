"""Cost of the screen model (``wxcode_pty.screen.ScreenModel``): feeding, parsing, snapshots, memory.

Workloads, generated (seeded) so that runs compare:

- ``tui``: what Claude's TUI writes: a conversation drawn in truecolor and 256 colours with wide
  characters, spinner redraws (cursor up/down/forward, erase in line, title), and Ink-style
  redraws of a block of lines (erase line + cursor up, then the block again);
- ``plain``: lines of text, as ``cat`` of a log prints them.

Figures:

- ``feed``: the output path's cost per 4 KiB chunk (queueing only);
- ``parse``: MB/s of :meth:`ScreenModel.drain` in 32 KiB slices, and its longest slice;
- ``background``: the background task working off a 2 MiB backlog (``cpu_share`` 0.25) while a
  1 ms ticker records how late the loop runs it (p99, max; and the same with the loop idle, the
  machine's own lateness) and the task's share of the wall time;
- ``snapshot``: time and size of :meth:`ScreenModel.snapshot` for 100x30 and 200x50 with 200
  lines of scrollback, and of a rebuild from 64 KiB (the replay buffer's size);
- ``memory``: RSS per model, 120x40 with 200 lines of scrollback, filled by each workload.

    python bench/screen.py [--size-mb 8] [--models 100] [--out bench/results/screen.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wxcode_pty.screen import ScreenModel

ESC = "\x1b"
CHUNK = 4096
SLICE = 32 * 1024
WINDOW = 64 * 1024


def tui(size: int, cols: int = 100) -> bytes:
    rnd = random.Random(1)
    out = bytearray()
    words = ["offset", "buffer", "replay", "世界", "client", "🚀", "session", "テスト", "stream"]
    k = 0
    while len(out) < size:
        k += 1
        # A paragraph of the answer, in colours.
        for _ in range(rnd.randrange(3, 12)):
            line = " ".join(rnd.choice(words) for _ in range(rnd.randrange(4, 14)))
            r, g, b = rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)
            out += (
                f"  {ESC}[38;2;{r};{g};{b}m●{ESC}[39m {ESC}[1m{k}{ESC}[22m "
                f"{ESC}[38;5;{rnd.randrange(256)}m{line[: cols - 12]}{ESC}[39m\r\n"
            ).encode()
        # The spinner while the next part is awaited.
        for frame in range(rnd.randrange(20, 80)):
            glyph = "·✢*✶✻✽"[frame % 6]
            out += (
                f"{ESC}[6A{ESC}[38;2;215;{119 + frame % 40};87m{glyph}{ESC}[39m"
                f"\r\r\n\r\n\r\n\r\n\r\n\r\n{ESC}[2C{ESC}[3A{ESC}[2D{ESC}[3B\r"
            ).encode()
            if frame % 8 == 0:
                out += f"{ESC}]0;{glyph} Claude Code\x07".encode()
        # An Ink redraw of the prompt box.
        out += (f"{ESC}[2K{ESC}[1A" * 4 + f"{ESC}[2K{ESC}[G").encode()
        out += (
            f"{ESC}[38;5;244m{'─' * cols}{ESC}[39m\r\n\u276f {ESC}[7m \r\n"
            f"{ESC}[27m{ESC}[38;5;244m{'─' * cols}{ESC}[39m\r\n  ? for shortcuts\r\n"
        ).encode()
    return bytes(out)


def plain(size: int) -> bytes:
    rnd = random.Random(2)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "server",
        "output",
        "streams",
        "by",
    ]
    out = bytearray()
    i = 0
    while len(out) < size:
        i += 1
        line = " ".join(rnd.choice(words) for _ in range(rnd.randrange(3, 16)))
        out += f"{i:8d} {line}\r\n".encode()
    return bytes(out)


def bench_feed(data: bytes) -> float:
    """Nanoseconds per feed() of one 4 KiB chunk (queueing only: nothing drains)."""
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    model = ScreenModel(100, 30, pending_limit=len(data) + 1)
    started = time.perf_counter_ns()
    for chunk in chunks:
        model.feed(chunk)
    return (time.perf_counter_ns() - started) / len(chunks)


def bench_parse(data: bytes) -> dict[str, float]:
    model = ScreenModel(100, 30, pending_limit=len(data) + 1)
    for i in range(0, len(data), CHUNK):
        model.feed(data[i : i + CHUNK])
    longest = 0.0
    started = time.perf_counter()
    while model.pending:
        t = time.perf_counter()
        model.drain(SLICE)
        longest = max(longest, time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    return {"mb_per_s": len(data) / elapsed / 1e6, "longest_slice_ms": longest * 1000}


async def bench_background(data: bytes) -> dict[str, float]:
    """A backlog of ``data`` worked off by ``run()`` while a 1 ms ticker measures the loop."""
    model = ScreenModel(100, 30, pending_limit=len(data) + 1, cpu_share=0.25)
    late: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append(time.perf_counter() - t - 0.001)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    late.clear()
    # The same ticker with nothing else to do: the machine's own lateness.
    await asyncio.sleep(0.3)
    idle = sorted(late)
    late.clear()
    for i in range(0, len(data), CHUNK):
        model.feed(data[i : i + CHUNK])
    started = time.perf_counter()
    cpu = time.process_time()
    task = asyncio.create_task(model.run(lambda: b""))
    while model.pending:
        await asyncio.sleep(0.005)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    stop.set()
    task.cancel()
    await asyncio.gather(task, ticking, return_exceptions=True)
    late.sort()
    return {
        "seconds": wall,
        "mb_per_s": len(data) / wall / 1e6,
        "cpu_share": cpu / wall,
        "ticker_late_p99_ms": late[int(len(late) * 0.99)] * 1000,
        "ticker_late_max_ms": late[-1] * 1000,
        "idle_ticker_late_p99_ms": idle[int(len(idle) * 0.99)] * 1000,
        "idle_ticker_late_max_ms": idle[-1] * 1000,
    }


def bench_snapshot(data: bytes, cols: int, rows: int) -> dict[str, float]:
    model = ScreenModel(cols, rows, scrollback=200, pending_limit=len(data) + 1)
    for i in range(0, len(data), CHUNK):
        model.feed(data[i : i + CHUNK])
    model.drain(len(data))
    times = []
    size = 0
    for _ in range(7):
        t = time.perf_counter()
        snap = model.snapshot(lambda: b"")
        times.append(time.perf_counter() - t)
        assert snap is not None
        size = len(snap)
    window = data[-WINDOW:]
    rebuilds = []
    for _ in range(7):
        t = time.perf_counter()
        model.rebuild(window)
        rebuilds.append(time.perf_counter() - t)
    return {
        "snapshot_ms": statistics.median(times) * 1000,
        "snapshot_bytes": size,
        "rebuild_64k_ms": statistics.median(rebuilds) * 1000,
    }


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def bench_memory(data: bytes, models: int) -> float:
    """KiB of RSS per model of 120x40 with 200 lines of scrollback, fed ``data``."""
    gc.collect()
    before = rss()
    kept = []
    for _ in range(models):
        model = ScreenModel(120, 40, scrollback=200, pending_limit=len(data) + 1)
        model.feed(data)
        model.drain(len(data))
        kept.append(model)
    gc.collect()
    return (rss() - before) / models / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=8)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    size = int(args.size_mb * 1024 * 1024)
    results: dict[str, dict[str, object]] = {}
    for name, make in (("tui", tui), ("plain", plain)):
        data = make(size)
        memory_data = make(512 * 1024)
        results[name] = {
            "feed_ns_per_chunk": bench_feed(data),
            "parse": bench_parse(data),
            "background": asyncio.run(bench_background(data[: 2 * 1024 * 1024])),
            "snapshot_100x30": bench_snapshot(data[: 2 * 1024 * 1024], 100, 30),
            "snapshot_200x50": bench_snapshot(data[: 2 * 1024 * 1024], 200, 50),
            "memory_kib_per_model": bench_memory(memory_data, args.models),
        }
        print(f"== {name}")
        print(json.dumps(results[name], indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
