"""Render a results JSON (bench/results/latest.json) as one PNG, a panel per headline figure.

Usage: python bench/chart.py [RESULTS_JSON] [OUT_PNG]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt

COLORS = {"raw": "#9e9e9e", "wxcode-pty": "#1f77b4", "terminado": "#ff7f0e", "ttyd": "#2ca02c"}


def render(report: dict[str, Any], out: Path) -> None:
    rows = [r for r in report["table"] if r["servers"] and r["metric"] != "lost_bytes"]
    if not rows:
        return
    columns = 4 if len(rows) > 6 else 3
    lines = -(-len(rows) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.4 * lines), squeeze=False)
    for ax in axes.flat[len(rows) :]:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows, strict=False):
        kinds = list(row["servers"])
        entries = [row["servers"][k] for k in kinds]
        medians = [e["median"] for e in entries]
        below = [e["median"] - e["min"] for e in entries]
        above = [e["max"] - e["median"] for e in entries]
        bars = ax.bar(
            kinds,
            medians,
            yerr=[below, above],
            capsize=4,
            color=[COLORS.get(k, "#777777") for k in kinds],
        )
        for bar, value, entry in zip(bars, medians, entries, strict=True):
            ax.annotate(
                _fmt(value),
                # Above the whisker, so the label never sits on it.
                (bar.get_x() + bar.get_width() / 2, entry["max"]),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
        title = row["label"] + (f" ({row['sessions']} sessions)" if row.get("sessions") else "")
        better = "higher is better" if row["higher_is_better"] else "lower is better"
        ax.set_title(f"{title}\n{row['unit']}, {better}; target {row['target']}", fontsize=9)
        positive = [m for m in medians if m > 0]
        # Peers differ by orders of magnitude on memory figures; a log axis keeps all bars readable.
        if positive and len(positive) == len(medians) and max(positive) / min(positive) > 50:
            ax.set_yscale("log")
        if row.get("target_value"):
            ax.axhline(row["target_value"], color="#d62728", linestyle="--", linewidth=1)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    machine = report["machine"]
    fig.suptitle(
        f"wxcode-pty benchmark ({report['mode']} run), {report['date'][:10]}; "
        f"{machine['cpu']}, {machine['cores']} cores; "
        "bars: median of rounds, whiskers: min and max",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def main() -> None:
    here = Path(__file__).resolve().parent / "results"
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else here / "latest.json"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else source.with_name("chart.png")
    render(json.loads(source.read_text()), out)
    print(out)


if __name__ == "__main__":
    main()
