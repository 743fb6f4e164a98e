"""``Settings``: every knob of the plugin, with its default, in one frozen dataclass.

Also the child environment: an allowlist of the server's variables plus explicit extras, never
the markers of a Claude session the server itself may run inside.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .commands import ClaudeState, CommandProfile, ShellCommand, default_shell

__all__ = [
    "CLAUDE_SESSION_MARKERS",
    "DEFAULT_ENV_ALLOWLIST",
    "PROJECT_ID_PATTERN",
    "Authenticate",
    "Authorize",
    "OnClaudeState",
    "Settings",
    "build_child_env",
    "valid_project_id",
]

#: Output project ids: a path component that cannot climb, hide or look like a flag.
PROJECT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

#: Variables passed from the server to the program. Names ending in ``*`` are prefixes.
DEFAULT_ENV_ALLOWLIST: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_RUNTIME_DIR",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "NODE_EXTRA_CA_CERTS",
    # How users log Claude in and configure it (API key, gateway token, OAuth token, model).
    "ANTHROPIC_*",
    "CLAUDE_CODE_*",
    "CLAUDE_CONFIG_DIR",
    "DISABLE_AUTOUPDATER",
    "DISABLE_TELEMETRY",
    "DISABLE_ERROR_REPORTING",
    # Bedrock: AWS credentials, profile and region.
    "AWS_*",
    # Vertex AI: region, per-model regions and Google credentials.
    "CLOUD_ML_REGION",
    "VERTEX_REGION_*",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "CLOUDSDK_CONFIG",
)

#: What a Claude process sets for the programs it starts. Always removed, even from explicit
#: extras: a Claude that sees them may refuse to start or mix up sessions.
CLAUDE_SESSION_MARKERS: frozenset[str] = frozenset(
    {
        "CLAUDECODE",
        "CLAUDE_CODE_CHILD_SESSION",
        "CLAUDE_CODE_SESSION_ID",
        "CLAUDE_CODE_ENTRYPOINT",
        "CLAUDE_CODE_EXECPATH",
        "CLAUDE_CODE_SSE_PORT",
    }
)

#: ``authenticate(request) -> principal | None``; None or an exception means "no".
Authenticate = Callable[..., Awaitable[object | None]]
#: ``authorize(principal, output_project_id, action) -> bool``; actions: attach, input,
#: resize, list, close. An exception means "no".
Authorize = Callable[[object, str, str], Awaitable[bool]]
#: ``on_claude_state(output_project_id, state, detail)``: Claude's state changed (SPEC 8.1).
#: Its failures are logged, never fatal.
OnClaudeState = Callable[[str, ClaudeState, str | None], Awaitable[None]]


def valid_project_id(value: str) -> bool:
    return PROJECT_ID_PATTERN.fullmatch(value) is not None


def build_child_env(
    allowlist: tuple[str, ...],
    extra: Mapping[str, str],
    term: str,
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The program's environment: allowed server variables, then ``extra``, then ``TERM``;
    never the Claude session markers."""
    source = os.environ if source is None else source
    exact = {name for name in allowlist if not name.endswith("*")}
    prefixes = tuple(name[:-1] for name in allowlist if name.endswith("*"))
    env = {
        key: value
        for key, value in source.items()
        if (key in exact or key.startswith(prefixes)) and key not in CLAUDE_SESSION_MARKERS
    }
    env.update({k: v for k, v in extra.items() if k not in CLAUDE_SESSION_MARKERS})
    env["TERM"] = term
    env.setdefault("COLORTERM", "truecolor")
    env.setdefault("LANG", "C.UTF-8")
    return env


def _default_command() -> CommandProfile:
    return ShellCommand([default_shell(), "-l"])


def _default_workdir(output_project_id: str) -> Path:
    return Path.cwd() / "projects" / output_project_id


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Configuration of one mounted plugin. Every field has a working default."""

    #: An SQLite file (created if needed; one server per file), or a ``postgresql://`` URL (a
    #: string) of a database that several servers share (``wxcode-pty[postgres]``). Migrated
    #: on start.
    database: str | Path = "wxcode_pty.db"
    #: With a shared (PostgreSQL) database: this plugin's base URL as its peers reach it
    #: (``http://10.0.0.5:8765`` or with the mount prefix); requests for the sessions this
    #: host owns are forwarded there. None: peers cannot forward to this host.
    advertise_url: str | None = None
    #: With a shared database: seconds a host's lease lasts. A host that cannot renew it ends
    #: its programs after 0.8 of it; peers take its sessions over 1.2 of it after its last
    #: renewal (SPEC 12).
    host_lease: float = 10.0
    #: What every session runs (``ShellCommand`` or ``ClaudeCommand``).
    command: CommandProfile = field(default_factory=_default_command)
    #: The server-owned working directory of a project: a function of the project id, or a
    #: root folder under which each project gets ``<root>/<output_project_id>``. Created on
    #: demand.
    workdir: Callable[[str], Path] | str | Path = _default_workdir

    buffer_size: int = 65536
    #: Seconds without clients and without output after which a session is ended.
    idle_timeout: float = 300.0
    #: How often the reaper looks; None means ``min(30, idle_timeout / 4)``.
    reap_interval: float | None = None
    max_sessions: int = 1000
    max_clients_per_session: int = 32
    #: WebSocket connections across all sessions.
    max_connections: int = 4096

    #: Exact origins (``scheme://host[:port]``) allowed to open WebSockets; None means only
    #: the server's own origin.
    allowed_origins: frozenset[str] | None = None
    #: Host names (without port) the server answers to; None means localhost, 127.0.0.1,
    #: [::1] and the bound host.
    allowed_hosts: frozenset[str] | None = None
    authenticate: Authenticate | None = None
    authorize: Authorize | None = None
    #: The built-in token used when no hooks are given; None means a random one per start.
    token: str | None = None
    #: False turns the built-in token off (Origin and Host checks stay on).
    token_required: bool = True

    #: Called when Claude's state changes, for hosts that notify people their own way.
    on_claude_state: OnClaudeState | None = None

    respawn_on_start: bool = True
    term: str = "xterm-256color"
    #: Server variables the programs see (``NAME`` or a ``PREFIX*``).
    env_allowlist: tuple[str, ...] = DEFAULT_ENV_ALLOWLIST
    #: Variables set for every program, whatever the allowlist (except the Claude session
    #: markers, which are always removed).
    env_extra: Mapping[str, str] = field(default_factory=dict)
    default_cols: int = 80
    default_rows: int = 24

    #: Input waiting for a program that does not read it.
    input_limit: int = 1 << 20
    #: Largest inbound WebSocket frame.
    max_frame_size: int = 64 * 1024
    #: Output queued for one client before it is closed with 4001.
    client_queue_limit: int = 1 << 20
    #: Seconds one send may take before the connection is aborted.
    send_timeout: float = 10.0
    #: WebSocket ping interval; a peer that does not answer is dropped.
    heartbeat: float = 20.0
    #: permessage-deflate; off by default (CPU cost, and compression oracles on secrets).
    compress: bool = False
    #: Control messages (text frames) per second per client, with a burst of the same size.
    control_rate: float = 200.0

    #: Seconds to wait at each step of SIGHUP, SIGTERM, SIGKILL when ending a tree.
    kill_grace: float = 2.0
    #: A program that exits within this many seconds of a respawn "died at start".
    early_exit: float = 3.0
    #: Respawn attempts (with exponential backoff from ``retry_backoff`` seconds) before a
    #: session that keeps dying at start is marked failed.
    respawn_attempts: int = 4
    retry_backoff: float = 0.5

    def __post_init__(self) -> None:
        positive = {
            "buffer_size": self.buffer_size,
            "idle_timeout": self.idle_timeout,
            "max_sessions": self.max_sessions,
            "max_clients_per_session": self.max_clients_per_session,
            "max_connections": self.max_connections,
            "input_limit": self.input_limit,
            "max_frame_size": self.max_frame_size,
            "client_queue_limit": self.client_queue_limit,
            "send_timeout": self.send_timeout,
            "control_rate": self.control_rate,
            "host_lease": self.host_lease,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"Settings.{name} must be positive, got {value!r}")
        if self.reap_interval is not None and self.reap_interval <= 0:
            raise ValueError("Settings.reap_interval must be positive")
        if self.advertise_url is not None and not self.advertise_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("Settings.advertise_url must be an http:// or https:// URL")
        if self.respawn_attempts < 1:
            raise ValueError("Settings.respawn_attempts must be at least 1")

    @property
    def effective_reap_interval(self) -> float:
        if self.reap_interval is not None:
            return self.reap_interval
        return min(30.0, self.idle_timeout / 4)

    def workdir_for(self, output_project_id: str) -> Path:
        """The project's directory (not created here)."""
        if callable(self.workdir):
            return Path(self.workdir(output_project_id))
        return Path(self.workdir) / output_project_id

    def child_env(self) -> dict[str, str]:
        return build_child_env(self.env_allowlist, self.env_extra, self.term)
