"""Shared helpers of the benchmark: /proc readings, statistics, test data and the workload program.

Owns nothing that talks to a server; see clients.py and servers.py for that.
"""

from __future__ import annotations

import math
import os
import resource
import shlex
import socket
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

__all__ = [
    "CLK_TCK",
    "MB",
    "MODE_FLAGS",
    "READY_MARK",
    "Summary",
    "cpu_seconds",
    "descendants",
    "free_port",
    "is_running",
    "make_text_file",
    "on_the_wire",
    "percentile",
    "raise_nofile_limit",
    "rss_bytes",
    "start_time",
    "summarize",
    "tty_modes",
    "write_program",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1_000_000


class Summary(TypedDict):
    median: float
    min: float
    max: float
    n: int
    values: list[float]


def summarize(values: Sequence[float]) -> Summary | None:
    if not values:
        return None
    vals = [float(v) for v in values]
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": vals,
    }


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the value at or below which q percent of samples lie."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _stat_fields(pid: int, thread: int | None = None) -> list[str]:
    task = "" if thread is None else f"/task/{thread}"
    raw = Path(f"/proc/{pid}{task}/stat").read_text()
    # The command name may hold spaces and parentheses: split after its last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process itself (not its children)."""
    return _cpu(_stat_fields(pid))


def _cpu(fields: list[str]) -> float:
    # After the name: state is field 3 of proc(5), so utime (14) and stime (15) sit at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User plus system CPU time of each live thread of a process, by thread id."""
    found: dict[int, float] = {}
    for tid in map(int, os.listdir(f"/proc/{pid}/task")):
        try:
            found[tid] = _cpu(_stat_fields(pid, tid))
        except OSError:
            continue  # the thread ended meanwhile
    return found


def machine_cpu_seconds() -> float:
    """CPU time spent on the whole machine since boot, over all cores (idle and iowait not
    counted): what the server, its programs, the benchmark's client and the kernel used."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot; tells a process from a reused pid."""
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, ValueError, IndexError):
        return None


def is_running(pid: int, started: int | None) -> bool:
    """True while that very process (same start time) exists and is not a zombie."""
    try:
        fields = _stat_fields(pid)
    except (OSError, ValueError):
        return False
    return fields[0] not in ("Z", "X") and started is not None and int(fields[19]) == started


def descendants(pid: int) -> list[int]:
    """All live descendants of pid, found by walking parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def raise_nofile_limit() -> int:
    """Raise the soft open-file limit to the hard one; servers started later inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_text_file(path: Path, size: int) -> None:
    """Write exactly `size` bytes of numbered ASCII lines, the same on every run."""
    alphabet = bytes(range(33, 127))
    doubled = alphabet * 2
    chunk: list[bytes] = []
    written = 0
    line_no = 0
    with path.open("wb") as out:
        while written < size:
            shift = line_no % len(alphabet)
            line = b"%09d " % line_no + doubled[shift : shift + 70] + b"\n"
            line = line[: size - written]
            chunk.append(line)
            written += len(line)
            line_no += 1
            if len(chunk) >= 4096:
                out.write(b"".join(chunk))
                chunk.clear()
        out.write(b"".join(chunk))


PROGRAM = """\
#!/bin/sh
# Workload program of the benchmark. Every server runs this same script; the session
# name picks what it does. It comes as $1 (raw reader, terminado, ttyd) or, for servers
# that run one fixed command per session, as the name of the working directory.
# The terminal stays in the mode a new PTY has (output processing on: ONLCR turns each
# \\n into \\r\\n), as shells, Node programs and Claude keep it; only tputraw* turns
# it off, for comparison. The throughput sessions note their terminal modes (stty -a)
# in @MODES@/<name>, so that the run can show that every server gave the same ones.
name=${1:-${PWD##*/}}
case $name in
  tputraw*) stty raw -echo && stty -a >'@MODES@'/"$name" && exec cat '@DATA@' ;;
  tput*) stty -a >'@MODES@'/"$name" && exec cat '@DATA@' ;;
  # What line editors and Node's setRawMode do: each key reaches the program at once and
  # the terminal does not echo it; the program writes it back, through output processing.
  echo*|idle*) stty -icanon -echo min 1 time 0 && printf R && exec cat ;;
  flood*|yes*) exec yes ;;
  # A recorded Claude Code turn written at its recorded pace (replay.py), in the modes
  # Claude's own terminal has.
  replay*) exec @REPLAY@ ;;
  *) echo "bench program: unknown session name '$name'" >&2; exit 2 ;;
esac
"""

READY_MARK = b"R"

# The terminal modes a throughput round reports from its `stty -a`: those that decide what
# reaches the client (output processing, newline mapping) and what happens to input.
MODE_FLAGS = ("opost", "onlcr", "icanon", "echo")


def write_program(path: Path, data_file: Path, modes_dir: Path, replay: list[str]) -> None:
    """The workload program; `replay` is the command line of the replay* sessions."""
    modes_dir.mkdir(parents=True, exist_ok=True)
    text = (
        PROGRAM.replace("@DATA@", str(data_file))
        .replace("@MODES@", str(modes_dir))
        .replace("@REPLAY@", shlex.join(replay) if replay else "false")
    )
    path.write_text(text)
    path.chmod(0o755)


def on_the_wire(data: bytes, output_processing: bool) -> bytes:
    """What a PTY passes on when a program writes `data`: with output processing on (the
    default modes, OPOST and ONLCR) each \\n becomes \\r\\n. The other output mappings
    (OCRNL, ONLRET, OLCUC, tab expansion) are off by default, and the test file holds no
    \\r or tab for them to change."""
    return data.replace(b"\n", b"\r\n") if output_processing else data


def tty_modes(modes_file: Path) -> str | None:
    """The MODE_FLAGS as `stty -a` printed them ("opost onlcr -icanon -echo"), or None."""
    try:
        words = set(modes_file.read_text().replace(";", " ").split())
    except OSError:
        return None
    found = [f if f in words else f"-{f}" for f in MODE_FLAGS if f in words or f"-{f}" in words]
    return " ".join(found) if found else None
