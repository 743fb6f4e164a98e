"""Test support for running Claude Code: the stand-in, the real CLI, and their config dirs.

The tests run `claude` two ways: the stand-in `tests/fake_claude/claude` always, and the
real CLI when `WXCODE_PTY_REAL_CLAUDE` names its binary (`tests/fixtures/claude/install.sh`
prints that path). Both run offline with `CLAUDE_CONFIG_DIR` set to a temp dir prepared by
`prepare_config_dir`. What the real CLI needs there, and why, is recorded in
`tests/fixtures/claude/README.md`.

`transcript_path` is written independently of the plugin's own code on purpose: tests use
it as the oracle for where Claude keeps a conversation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

__all__ = [
    "FAKE_CLAUDE",
    "REAL_CLAUDE_ENV",
    "REAL_CLAUDE_MISSING",
    "claude_env",
    "claude_params",
    "prepare_config_dir",
    "real_claude",
    "transcript_path",
]

FAKE_CLAUDE: Path = Path(__file__).resolve().parent / "fake_claude" / "claude"
REAL_CLAUDE_ENV = "WXCODE_PTY_REAL_CLAUDE"

# The real CLI cuts an encoded project folder name at this length and appends a hash.
_MAX_SANITIZED_LENGTH = 200
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def real_claude() -> Path | None:
    """The real CLI named by `WXCODE_PTY_REAL_CLAUDE`, or None when the variable is unset.

    A set variable that names no executable is an error, not a skip: a typo in CI must not
    quietly turn the real-CLI tests off.
    """
    value = os.environ.get(REAL_CLAUDE_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise FileNotFoundError(f"{REAL_CLAUDE_ENV}={value} is not an executable file")
    return path.absolute()


def prepare_config_dir(
    config_dir: Path, trusted_dirs: list[Path], permission_mode: str | None = None
) -> None:
    """Make a Claude config dir in which `claude` starts straight at its prompt.

    Offline, a fresh config dir stops at onboarding ("Unable to connect to Anthropic
    services", exit 1); each new cwd then asks whether to trust the folder (default "No,
    exit"); and `--dangerously-skip-permissions` asks once to accept bypass mode. Existing
    content is kept. For tests only: for users the trust question is theirs to answer.

    `permission_mode` sets the default permission mode. 2.1.330's own default is "auto",
    which runs a Bash command without asking when the API does not object; "default" asks
    first. Any mode but "auto" also makes the TUI offer once, over the prompt, to switch to
    auto mode: that offer is marked as already answered.
    """
    config_dir.mkdir(parents=True, exist_ok=True)

    state_file = config_dir / ".claude.json"
    state = _read_json_object(state_file)
    state["hasCompletedOnboarding"] = True
    projects = state.get("projects")
    if not isinstance(projects, dict):
        projects = {}
    for directory in trusted_dirs:
        # Claude keys projects by the realpath of its cwd.
        key = os.path.realpath(directory)
        entry = projects.get(key)
        if not isinstance(entry, dict):
            entry = {}
        entry["hasTrustDialogAccepted"] = True
        projects[key] = entry
    state["projects"] = projects
    if permission_mode is not None:
        state["hasSeenAutoDefaultNudge"] = True
    _write_json(state_file, state)

    settings_file = config_dir / "settings.json"
    settings = _read_json_object(settings_file)
    settings["skipDangerousModePermissionPrompt"] = True
    if permission_mode is not None:
        permissions = settings.get("permissions")
        if not isinstance(permissions, dict):
            permissions = {}
        permissions["defaultMode"] = permission_mode
        settings["permissions"] = permissions
    _write_json(settings_file, settings)


def transcript_path(config_dir: Path, cwd: Path, session_id: str) -> Path:
    """Where Claude keeps conversation `session_id` started in `cwd`."""
    return config_dir / "projects" / _sanitize(os.path.realpath(cwd)) / f"{session_id}.jsonl"


def claude_env(config_dir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a test's `claude`: its own config dir, no inherited session.

    A Claude started from inside another Claude Code session inherits `CLAUDECODE` and
    `CLAUDE_CODE_*`, and may then refuse to start or not save transcripts. An API key from
    the developer's shell would make the real CLI go online.
    """
    env = {
        key: value
        for key, value in (os.environ if base is None else base).items()
        if key != "CLAUDECODE"
        and not key.startswith("CLAUDE_CODE_")
        and key not in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CONFIG_DIR")
    }
    env["CLAUDE_CONFIG_DIR"] = str(config_dir)
    env["TERM"] = "xterm-256color"
    return env


def _sanitize(path: str) -> str:
    # Claude works on JavaScript strings, so on UTF-16 code units: a character outside
    # the BMP becomes two dashes and feeds two units to the hash.
    raw = path.encode("utf-16-le")
    units = [int.from_bytes(raw[i : i + 2], "little") for i in range(0, len(raw), 2)]
    sanitized = "".join(chr(u) if chr(u) in _ALNUM else "-" for u in units)
    if len(sanitized) <= _MAX_SANITIZED_LENGTH:
        return sanitized
    digest = 0
    for unit in units:  # (h << 5) - h + c as a signed 32-bit int, then abs() in base 36
        digest = ((digest << 5) - digest + unit) & 0xFFFFFFFF
    if digest >= 1 << 31:
        digest -= 1 << 32
    return f"{sanitized[:_MAX_SANITIZED_LENGTH]}-{_base36(abs(digest))}"


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out


def _read_json_object(path: Path) -> dict[str, object]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_json(path: Path, value: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


#: Why a real-CLI test is skipped (shown by ``-rs``).
REAL_CLAUDE_MISSING = (
    "real Claude CLI not installed: set WXCODE_PTY_REAL_CLAUDE "
    "(tests/fixtures/claude/install.sh prints the path; .ci/run does)"
)


def claude_params() -> list[object]:
    """Parameters running a test with the stand-in and with the real CLI (skipped, with the
    reason shown by ``-rs``, when it is not installed)."""
    real = real_claude()
    return [
        pytest.param(FAKE_CLAUDE, id="stand-in"),
        pytest.param(
            real,
            id="real-cli",
            marks=[
                pytest.mark.real_claude,
                pytest.mark.skipif(real is None, reason=REAL_CLAUDE_MISSING),
            ],
        ),
    ]
