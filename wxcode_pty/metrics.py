"""Counters and gauges of one mounted plugin, rendered in the Prometheus text format."""

from __future__ import annotations

from collections import Counter

from .commands import ClaudeState
from .manager import PTYSessionManager

__all__ = ["Metrics"]


class Metrics:
    """What the web layer counts; the manager counts spawns, respawns, reaps and exits."""

    def __init__(self) -> None:
        self.bytes_out = 0
        self.bytes_in = 0
        self.connections = 0
        self.refusals: Counter[str] = Counter()

    def refuse(self, reason: str) -> None:
        self.refusals[reason] += 1

    def render(self, manager: PTYSessionManager, forwards: int = 0) -> str:
        sessions = manager.sessions
        lines = [
            "# HELP wxcode_pty_sessions Sessions with a running program.",
            "# TYPE wxcode_pty_sessions gauge",
            f"wxcode_pty_sessions {len(sessions)}",
            "# HELP wxcode_pty_clients WebSocket clients attached to sessions.",
            "# TYPE wxcode_pty_clients gauge",
            f"wxcode_pty_clients {sum(len(s.clients) for s in sessions)}",
            "# HELP wxcode_pty_connections_total WebSocket connections accepted.",
            "# TYPE wxcode_pty_connections_total counter",
            f"wxcode_pty_connections_total {self.connections}",
            "# HELP wxcode_pty_bytes_out_total Terminal bytes sent to clients.",
            "# TYPE wxcode_pty_bytes_out_total counter",
            f"wxcode_pty_bytes_out_total {self.bytes_out}",
            "# HELP wxcode_pty_bytes_in_total Terminal bytes received from clients.",
            "# TYPE wxcode_pty_bytes_in_total counter",
            f"wxcode_pty_bytes_in_total {self.bytes_in}",
        ]
        for name in ("spawns", "respawns", "reaps", "exits"):
            lines += [
                f"# HELP wxcode_pty_{name}_total Sessions {name[:-1]}ed."
                if name != "exits"
                else "# HELP wxcode_pty_exits_total Programs that ended.",
                f"# TYPE wxcode_pty_{name}_total counter",
                f"wxcode_pty_{name}_total {manager.counters[name]}",
            ]
        if manager.lease is not None:
            lines += [
                "# HELP wxcode_pty_owned_sessions Sessions this host owns and runs.",
                "# TYPE wxcode_pty_owned_sessions gauge",
                f"wxcode_pty_owned_sessions {len(sessions)}",
                "# HELP wxcode_pty_forwards_total Requests passed to the host that owns them.",
                "# TYPE wxcode_pty_forwards_total counter",
                f"wxcode_pty_forwards_total {forwards}",
                "# HELP wxcode_pty_takeovers_total Sessions taken over from hosts that are gone.",
                "# TYPE wxcode_pty_takeovers_total counter",
                f"wxcode_pty_takeovers_total {manager.counters['takeovers']}",
                "# HELP wxcode_pty_fences_total Times this host lost its lease and ended its"
                " sessions.",
                "# TYPE wxcode_pty_fences_total counter",
                f"wxcode_pty_fences_total {manager.counters['fences']}",
            ]
        states = Counter(s.claude_state for s in sessions if s.claude_state is not None)
        lines += [
            "# HELP wxcode_pty_claude_sessions Sessions running Claude, by what Claude is doing.",
            "# TYPE wxcode_pty_claude_sessions gauge",
        ]
        lines += [
            f'wxcode_pty_claude_sessions{{state="{state}"}} {states[state]}'
            for state in ClaudeState
        ]
        lines += [
            "# HELP wxcode_pty_refusals_total Requests refused, by reason.",
            "# TYPE wxcode_pty_refusals_total counter",
        ]
        lines += [
            f'wxcode_pty_refusals_total{{reason="{reason}"}} {count}'
            for reason, count in sorted(self.refusals.items())
        ]
        return "\n".join(lines) + "\n"
