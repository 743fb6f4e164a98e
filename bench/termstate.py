"""What following the terminal state and the terminal queries costs the output path.

The session hands every read from the PTY (up to 4095 bytes here, as ``pty.py`` reads) to its
replay buffer, and with this work also to a ``TerminalTimeline`` (the state for the prelude)
and an ``AnswerFilter`` (the queries asked). This feeds the same chunks, already in memory, to
each of them alone, so that only their own work is timed:

- ``buffer``: ``ReplayBuffer.append`` (65536 bytes), the per-chunk work the session already does;
- ``state``: ``TerminalState.feed``; ``timeline``: ``TerminalTimeline.feed`` (the window of the
  buffer); ``queries``: ``AnswerFilter.on_output``; ``timeline+queries``: what the session adds.

Workloads, generated (``--size-mb`` each, deterministic):

- ``text``: lines of source-like text, some UTF-8, no escape sequence (``cat`` of a file);
- ``log``: log lines with one or two colours each (a build or test run);
- ``claude``: frames as an Ink TUI draws them: synchronized output, the previous frame erased
  line by line, prose with a few styled words, coloured borders, a status line, now and then
  the cursor hidden or shown, a title, a query;
- ``dense``: every word in its own 24-bit colour, the worst case for the scan.

Each measurement is the best of ``--rounds`` runs, the runs interleaved, in CPU time of the
process (``time.process_time``: other load on the machine does not count). Printed per workload:
MB/s of each, its time relative to ``buffer``, and the share of one core it would take at
150 MB/s of output. The input side (``filter_input`` per keystroke) is printed in microseconds.

    python bench/termstate.py [--size-mb 50] [--rounds 5] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wxcode_pty.answers import AnswerFilter
from wxcode_pty.buffer import ReplayBuffer
from wxcode_pty.termstate import TerminalState, TerminalTimeline

CHUNK = 4095
WINDOW = 65536
BUDGET_MB_S = 150.0

WORDS = tuple(
    [
        "the",
        "a",
        "of",
        "to",
        "in",
        "and",
        "is",
        "for",
        "that",
        "this",
        "with",
        "file",
        "test",
        "read",
        "write",
        "buffer",
        "offset",
        "chunk",
        "session",
        "client",
        "terminal",
        "output",
        "input",
        "replay",
        "prelude",
        "state",
        "mode",
        "query",
        "answer",
        "value",
        "return",
        "import",
        "class",
        "def",
        "self",
        "bytes",
        "None",
        "True",
        "False",
        "error",
        "warning",
        "passed",
        "failed",
    ]
)


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _fill(size: int, pieces: list[bytes], rng: random.Random) -> bytes:
    """``size`` bytes of pieces picked at random (pieces are prebuilt: fast for 50 MB)."""
    out = bytearray()
    while len(out) < size:
        out += rng.choice(pieces)
    return bytes(out[:size])


def text(size: int) -> bytes:
    rng = random.Random(1)
    pieces = [
        (" " * rng.randint(0, 12) + _sentence(rng, rng.randint(1, 12)) + "\n").encode()
        for _ in range(2000)
    ]
    # Some UTF-8: accented letters, typographic quotes, arrows.
    pieces += ["# café, naïve, \u201cquoted\u201d \u2192 \u2713\n".encode()] * 20
    return _fill(size, pieces, rng)


def log(size: int) -> bytes:
    rng = random.Random(2)
    levels = [b"\x1b[32mINFO\x1b[0m", b"\x1b[33mWARN\x1b[0m", b"\x1b[1;31mERROR\x1b[0m"]
    pieces = [
        b"%s 12:%02d:%02d %s \x1b[2m(%s.py:%d)\x1b[0m\r\n"
        % (
            rng.choice(levels),
            rng.randrange(60),
            rng.randrange(60),
            _sentence(rng, rng.randint(3, 12)).encode(),
            rng.choice(WORDS).encode(),
            rng.randrange(1000),
        )
        for _ in range(2000)
    ]
    return _fill(size, pieces, rng)


def claude(size: int) -> bytes:
    rng = random.Random(3)
    accent = b"\x1b[38;2;215;119;87m"
    styles = [
        b"\x1b[1m%s\x1b[22m",
        b"\x1b[2m%s\x1b[22m",
        accent + b"%s\x1b[39m",
        b"\x1b[3m%s\x1b[23m",
    ]

    def line() -> bytes:
        words = [w.encode() for w in _sentence(rng, rng.randint(4, 14)).split()]
        for _ in range(rng.randint(0, 2)):
            i = rng.randrange(len(words))
            words[i] = rng.choice(styles) % words[i]
        return b" ".join(words)

    def frame() -> bytes:
        height = rng.randint(4, 24)
        out = bytearray(b"\x1b[?2026h" + b"\x1b[2K\x1b[1A" * height + b"\x1b[2K\x1b[G")
        if rng.random() < 0.1:
            out += b"\x1b[?25l"
        border = accent + "╭".encode() + "─".encode() * 60 + "╮".encode() + b"\x1b[39m\r\n"
        out += border
        for _ in range(height - 3):
            out += accent + "│".encode() + b"\x1b[39m " + line() + b"\r\n"
        out += b"\x1b[2m  \xe2\x9c\xbb Thinking\xe2\x80\xa6 (esc to interrupt)\x1b[22m\r\n"
        if rng.random() < 0.02:
            out += b"\x1b]0;\xe2\x9c\xb3 Claude Code\x07"
        if rng.random() < 0.01:
            out += b"\x1b[6n"
        return bytes(out + b"\x1b[?2026l")

    pieces = [frame() for _ in range(500)]
    return b"\x1b[?2004h\x1b[?1004h\x1b[?2031h\x1b[?25l\x1b[>0q" + _fill(size, pieces, rng)


def dense(size: int) -> bytes:
    rng = random.Random(4)

    def line() -> bytes:
        return b" ".join(
            b"\x1b[38;2;%d;%d;%dm%s\x1b[39m"
            % (rng.randrange(256), rng.randrange(256), rng.randrange(256), w.encode())
            for w in _sentence(rng, rng.randint(4, 12)).split()
        )

    pieces = [b"\x1b[?2026h\x1b[2K\x1b[1A" + line() + b"\r\n\x1b[?2026l" for _ in range(2000)]
    return _fill(size, pieces, rng)


WORKLOADS: dict[str, Callable[[int], bytes]] = {
    "text": text,
    "log": log,
    "claude": claude,
    "dense": dense,
}


def consumers() -> dict[str, Callable[[], Callable[[bytes], object]]]:
    """A fresh consumer of chunks per run, by name."""

    def both() -> Callable[[bytes], object]:
        timeline = TerminalTimeline(WINDOW)
        answers = AnswerFilter()

        def feed(chunk: bytes) -> None:
            timeline.feed(chunk)
            answers.on_output(chunk, 1.0)

        return feed

    def queries() -> Callable[[bytes], object]:
        answers = AnswerFilter()
        return lambda chunk: answers.on_output(chunk, 1.0)

    return {
        "buffer": lambda: ReplayBuffer(WINDOW).append,
        "state": lambda: TerminalState().feed,
        "timeline": lambda: TerminalTimeline(WINDOW).feed,
        "queries": queries,
        "timeline+queries": both,
    }


def run(chunks: list[bytes], make: Callable[[], Callable[[bytes], object]]) -> float:
    feed = make()
    gc.disable()
    try:
        started = time.process_time()
        for chunk in chunks:
            feed(chunk)
        return time.process_time() - started
    finally:
        gc.enable()


def input_side(rounds: int) -> dict[str, float]:
    """Microseconds per ``filter_input`` call: a key, and an answer with a question waiting."""
    answers = AnswerFilter()
    client = object()
    answers.attach(client)
    calls = 20_000
    best_key = best_answer = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            answers.filter_input(client, b"a", active=True, now=1.0)
        best_key = min(best_key, (time.process_time() - started) / calls)
        started = time.process_time()
        for i in range(calls):
            answers.on_output(b"\x1b[6n", float(i))
            answers.filter_input(client, b"\x1b[12;40R", active=True, now=float(i))
        best_answer = min(best_answer, (time.process_time() - started) / calls)
    return {"key_us": best_key * 1e6, "query_and_answer_us": best_answer * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    size = int(args.size_mb * 1_000_000)
    makers = consumers()
    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "size_mb": args.size_mb,
        "chunk": CHUNK,
        "rounds": args.rounds,
        "workloads": {},
    }
    print(f"{args.size_mb:g} MB per workload in {CHUNK}-byte chunks, best of {args.rounds}")
    print(f"{'workload':8} {'consumer':17} {'MB/s':>8} {'vs buffer':>10} {'core @150MB/s':>14}")
    for name, generate in WORKLOADS.items():
        data = generate(size)
        chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
        del data
        best = {consumer: float("inf") for consumer in makers}
        for _ in range(args.rounds):
            for consumer, make in makers.items():
                best[consumer] = min(best[consumer], run(chunks, make))
        rows = {}
        for consumer, seconds in best.items():
            rate = size / seconds / 1e6
            rows[consumer] = {
                "mb_s": rate,
                "vs_buffer": seconds / best["buffer"],
                "core_share_at_150": BUDGET_MB_S / rate,
            }
            print(
                f"{name:8} {consumer:17} {rate:8.0f} {seconds / best['buffer']:9.2f}x"
                f" {100 * BUDGET_MB_S / rate:13.1f}%"
            )
        results["workloads"][name] = rows  # type: ignore[index]
        del chunks
    side = input_side(args.rounds)
    results["input"] = side
    print(
        f"filter_input: {side['key_us']:.2f} us per key,"
        f" {side['query_and_answer_us']:.2f} us per query noted and answer passed"
    )
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
