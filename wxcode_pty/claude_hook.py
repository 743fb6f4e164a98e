"""The hook that Claude runs (SessionStart, UserPromptSubmit, PreToolUse, PostToolUse,
Notification, Stop, SessionEnd): hand its JSON to the server, print nothing.

Run by Claude through a shell as ``python -I claude_hook.py`` (standard library only: it
must work whatever environment the program has). It reads the event from stdin and sends
one line, ``<token> <json>``, to the session's Unix socket named in ``WXCODE_PTY_HOOK``.
Whatever goes wrong (no server, a bad event), it exits 0 silently: Claude must start anyway,
and a SessionStart hook's stdout would reach the model's context.
"""

from __future__ import annotations

import json
import os
import socket
import sys

#: What the server uses of an event; the rest (a prompt's text, a tool's input, the last
#: answer) does not leave Claude's process.
_FIELDS = ("hook_event_name", "session_id", "source", "reason", "notification_type", "message")


def main() -> int:
    path = os.environ.get("WXCODE_PTY_HOOK")
    token = os.environ.get("WXCODE_PTY_HOOK_TOKEN", "")
    if not path:
        return 0
    try:
        event = json.loads(sys.stdin.read() or "null")
        if not isinstance(event, dict):
            return 0
        kept = {name: event[name] for name in _FIELDS if name in event}
        line = f"{token} {json.dumps(kept, separators=(',', ':'))}\n".encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(2)
            connection.connect(path)
            connection.sendall(line)
    except (OSError, ValueError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
