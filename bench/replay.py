"""Replay a recorded terminal program's output at its recorded pace: the claude_like program.

Usage: replay.py RECORDING REPEAT

Sets its terminal as Node's raw mode does (libuv's UV_TTY_MODE_RAW, what Claude Code's Ink
asks for: no line editing, no echo, output processing kept), then writes each recorded chunk
at its recorded time, REPEAT turns in a row with a short pause between them, and stays a
moment before it exits so that servers that lose the tail on exit do not lose it here.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import termios
import time
from pathlib import Path

PAUSE = 0.5  # seconds between two turns
HOLD = 1.0  # seconds to stay after the last write


def node_raw_mode(fd: int) -> None:
    attrs = termios.tcgetattr(fd)
    attrs[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON)
    attrs[1] |= termios.ONLCR
    attrs[2] |= termios.CS8
    attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSADRAIN, attrs)


def main() -> None:
    recording = json.loads(Path(sys.argv[1]).read_bytes())
    repeat = int(sys.argv[2])
    writes = [(float(t), base64.b64decode(data)) for t, data in recording["writes"]]
    period = float(recording["seconds"]) + PAUSE
    node_raw_mode(0)
    start = time.monotonic()
    for turn in range(repeat):
        for at, data in writes:
            delay = start + turn * period + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            view = memoryview(data)
            while view:
                view = view[os.write(1, view) :]
    time.sleep(HOLD)


if __name__ == "__main__":
    main()
