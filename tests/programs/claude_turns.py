#!/usr/bin/env python3
"""A Claude Code stand-in whose turns the browser tests drive: it runs the ``--settings`` hooks
that wxcode-pty injects (SessionStart, UserPromptSubmit, PreToolUse, Notification, Stop) the way
the real CLI does, so the server reports Claude's state (SPEC 8.1) as it would for Claude.

Unlike tests/fake_claude/claude, it can stop a turn for the user's permission (a
``permission_prompt`` Notification) and make a turn last a given time; it keeps no transcripts.
It sets the terminal title "Claude stand-in" (OSC 0).

Typed lines (Enter submits):
  ask        a turn that asks for permission: UserPromptSubmit, then Notification;
             the next line answers it: PreToolUse, then Stop
  slow N     a turn of N seconds: UserPromptSubmit, N seconds, Stop
  anything   a turn at once: UserPromptSubmit, Stop

Standard library only.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import tty
import uuid

PERMISSION = "Claude needs your permission to use Bash"


def settings_hooks(argv: list[str]) -> dict[str, list[str]]:
    """Event name -> shell commands, from every ``--settings`` JSON string in ``argv``."""
    commands: dict[str, list[str]] = {}
    for flag, value in itertools.pairwise(argv):
        if flag != "--settings":
            continue
        hooks = json.loads(value).get("hooks", {})
        for event, groups in hooks.items():
            for group in groups:
                for hook in group.get("hooks", []):
                    if hook.get("type") == "command":
                        commands.setdefault(event, []).append(hook["command"])
    return commands


def session_id(argv: list[str]) -> str:
    for flag, value in itertools.pairwise(argv):
        if flag in ("--session-id", "--resume"):
            return value
    return str(uuid.uuid4())


def write(text: str) -> None:
    data = text.replace("\n", "\r\n").encode()
    while data:
        data = data[os.write(1, data) :]


def main(argv: list[str]) -> int:
    hooks = settings_hooks(argv)
    sid = session_id(argv)

    def hook(event: str, **fields: object) -> None:
        payload = json.dumps({"hook_event_name": event, "session_id": sid, **fields})
        for command in hooks.get(event, []):
            subprocess.run(["/bin/sh", "-c", command], input=payload.encode(), check=False)

    tty.setraw(0)
    hook("SessionStart", source="startup")
    write("\x1b]0;Claude stand-in\x07Claude stand-in: type ask, slow N or anything\n> ")
    line = ""
    asking = False
    while True:
        data = os.read(0, 4096)
        if not data:
            return 0
        for char in data.decode(errors="replace"):
            if char != "\r":
                if char >= " ":
                    line += char
                    write(char)
                continue
            command, line = line.strip(), ""
            write("\n")
            if asking:
                asking = False
                hook("PreToolUse", tool_name="Bash")
                write(f"answered {command}\n")
                hook("Stop")
            elif command == "ask":
                hook("UserPromptSubmit", prompt=command)
                hook("Notification", notification_type="permission_prompt", message=PERMISSION)
                write("Allow Bash? (y/n)\n")
                asking = True
                continue
            elif command.startswith("slow "):
                hook("UserPromptSubmit", prompt=command)
                time.sleep(float(command.split()[1]))
                write("slow turn done\n")
                hook("Stop")
            else:
                hook("UserPromptSubmit", prompt=command)
                write(f"you said: {command}\n")
                hook("Stop")
            write("> ")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
