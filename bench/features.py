"""What following the terminal costs: the suite's cooked throughput and Claude-like load, run on
the package as it is and on staged copies with one feature switched off.

    python bench/features.py [--reps 3] [--rounds 2] [--quick] [--out bench/results/features.json]

Variants (each a copy of ``wxcode_pty/`` and ``migrations/`` in a temporary directory, with one
line of ``session.py`` removed; the script stops if that line is no longer there):

- ``all on``: the package as it is;
- ``no terminal state``: ``PTYSession._on_output`` does not feed the ``TerminalTimeline``
  (a late tab's prelude would then be empty);
- ``no screen model``: the session never starts its ``ScreenModel`` (a late tab would get the
  raw window only).

Each repetition runs ``suite.py --servers wxcode-pty`` once per variant, alternating, first
``throughput`` (``--rounds`` rounds after the suite's warm-up) and then ``claude_like`` (one
round), the variant's copy first on ``PYTHONPATH`` of the interpreter this script runs under (the
bench venv, which has the package's dependencies). Run it from that venv, e.g.
``BENCH_VENV=/tmp/v bench/run --quick --workloads throughput`` once, then
``/tmp/v/bin/python bench/features.py``. Prints a Markdown table and writes every suite run's
report into one JSON file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

# Variant name -> the exact text removed from wxcode_pty/session.py (None: unchanged).
VARIANTS: dict[str, str | None] = {
    "all on": None,
    "no terminal state": "        self._terminal.feed(data)\n",
    "no screen model": (
        "        if screen is None and self.buffer.end + len(data) > self.buffer.capacity:\n"
        "            screen = self._start_screen()\n"
    ),
}

# (workload, metric in the suite's summary, label) of the table.
FIGURES = [
    ("throughput", "mb_per_s", "throughput (cooked `cat`), MB/s"),
    ("throughput", "mb_per_cpu_s", "cost, MB per server CPU-s"),
    ("claude_like", "cpu_pct_per_session", "server CPU per Claude-like session, % of a core"),
    ("claude_like", "lateness_p99_ms", "Claude-like output lateness p99, ms"),
    ("claude_like", "echo_p99_ms", "echo p99 next to Claude-like sessions, ms"),
]


def stage(src: Path, dest: Path, removed: str | None) -> Path:
    """A copy of the package with ``removed`` taken out of session.py; returns an interpreter
    wrapper that imports it."""
    shutil.copytree(
        src / "wxcode_pty", dest / "wxcode_pty", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(src / "migrations", dest / "migrations")
    if removed is not None:
        session = dest / "wxcode_pty" / "session.py"
        text = session.read_text()
        if text.count(removed) != 1:
            raise SystemExit(f"features.py: session.py no longer has exactly one {removed!r}")
        session.write_text(text.replace(removed, ""))
    python = dest / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={dest} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return python


def suite(python: Path, workload: str, rounds: int, quick: bool, out: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        str(BENCH_DIR / "suite.py"),
        "--servers",
        "wxcode-pty",
        "--workloads",
        workload,
        "--rounds",
        str(rounds),
        "--wxcode-python",
        str(python),
        "--no-chart",
        "--out",
        str(out),
        *(["--quick"] if quick else []),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    report: dict[str, Any] = json.loads((out / "latest.json").read_text())
    return report


def values(report: dict[str, Any], workload: str, metric: str) -> list[float]:
    """Every wxcode-pty round's value of ``metric`` in one suite report."""
    rounds = report["workloads"].get(workload, {}).get("rounds", {}).get("wxcode-pty", [])
    return [float(r[metric]) for r in rounds if r.get(metric) is not None]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3, help="runs of each variant, alternating")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds per run")
    parser.add_argument("--quick", action="store_true", help="the suite's small sizes")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated, from: " + ", ".join(VARIANTS),
    )
    parser.add_argument(
        "--workloads", default="throughput,claude_like", help="throughput, claude_like or both"
    )
    parser.add_argument("--src", type=Path, default=REPO, help="checkout to stage the copies from")
    parser.add_argument(
        "--out", type=Path, default=BENCH_DIR / "results" / "features.json", help="JSON report"
    )
    args = parser.parse_args()
    chosen = {name: VARIANTS[name] for name in args.variants.split(",")}
    workloads = [w for w in args.workloads.split(",") if w]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    scratch = Path(tempfile.mkdtemp(prefix="wxcode-pty-features-"))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    try:
        pythons = {
            name: stage(args.src, scratch / str(i), removed)
            for i, (name, removed) in enumerate(chosen.items())
        }
        for rep in range(args.reps):
            for workload in workloads:
                rounds = args.rounds if workload == "throughput" else 1
                for name, python in pythons.items():
                    print(f"rep {rep + 1}/{args.reps} {workload}: {name}", file=sys.stderr)
                    report = suite(python, workload, rounds, args.quick, scratch / "out")
                    runs[name].append(report)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    table: dict[str, dict[str, dict[str, float]]] = {}
    for workload, metric, label in FIGURES:
        table[label] = {}
        for name, reports in runs.items():
            found = [v for r in reports for v in values(r, workload, metric)]
            if found:
                table[label][name] = {
                    "median": statistics.median(found),
                    "min": min(found),
                    "max": max(found),
                    "n": len(found),
                }
    names = list(chosen)
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, cells in table.items():
        row = []
        for name in names:
            cell = cells.get(name)
            row.append(
                "n/a"
                if cell is None
                else f"{cell['median']:.3g} ({cell['min']:.3g} to {cell['max']:.3g}, n={cell['n']})"
            )
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "date": started,
                "reps": args.reps,
                "throughput_rounds_per_run": args.rounds,
                "quick": args.quick,
                "variants": chosen,
                "table": table,
                "runs": runs,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
