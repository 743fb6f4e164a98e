"""``ScreenModel``: the screen of a program as an attached terminal shows it, off the hot path.

A tab that attaches late should see the program's current screen, not the last bytes of its
output: while a full-screen program (Claude's TUI) only redraws a spinner, those bytes hold no
conversation at all. The model is a terminal emulator (asciinema's ``avt``, in Rust) fed with
the same output as the replay buffer; its :meth:`ScreenModel.snapshot` is the screen, some
scrollback, the cursor and the pen, written as ordinary escape sequences for a freshly reset
terminal of the model's size.

Bounded cost:

- :meth:`ScreenModel.feed` (the output path) only queues the chunk.
- Parsing happens in :meth:`ScreenModel.run`, a background task, in slices of at most
  ``slice_bytes``, using at most ``cpu_share`` of the loop's time.
- Past ``pending_limit`` queued bytes (a flood: ``cat`` of a big file) the queue is dropped
  and the model is *stale*. It is rebuilt from the replay buffer's bytes when the flood ends
  (or when a snapshot is asked for first). A rebuilt model starts from a blank screen fed the
  replay window: exact for a plain stream, and for a full-screen program only as good as the
  window (a program that redraws all of its screen within it is shown whole; older scrollback
  is gone). Still never worse than replaying the window raw.
- A snapshot is bounded by ``rows`` + ``scrollback`` lines of ``cols`` cells.

The model does not know about stream offsets: the session feeds it every chunk it appends to
its replay buffer, so once :meth:`ScreenModel.snapshot` has drained the queue the snapshot is
the state at the buffer's end. What a late client is sent is then the snapshot, standing for
the stream up to that end, followed by the live output from that end on.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import avt

__all__ = [
    "DEFAULT_PENDING_LIMIT",
    "DEFAULT_SCROLLBACK",
    "ScreenModel",
]

log = logging.getLogger("wxcode_pty")

#: Lines of scrollback kept and sent above the screen.
DEFAULT_SCROLLBACK: Final = 200
#: Output queued but not yet parsed, past which the model gives up and goes stale. It also
#: bounds what :meth:`ScreenModel.snapshot` may have to parse at once.
DEFAULT_PENDING_LIMIT: Final = 256 * 1024
#: Most bytes parsed in one step of the background task.
DEFAULT_SLICE: Final = 32 * 1024
#: Most of the loop's time the background task takes while it has a backlog.
DEFAULT_CPU_SHARE: Final = 0.25
#: How often a stale model checks whether the flood has ended (seconds).
_FLOOD_CHECK: Final = 0.25

#: avt writes 8-bit CSI and ``38:2:r:g:b``; xterm.js reads the colon form as ``38:2:<colour
#: space>:r:g`` (blue lost), so every SGR is rewritten with semicolons.
_C1_CSI: Final = "\x9b"
_SGR: Final = re.compile(r"\x1b\[([0-9:;]*)m")
#: avt also repeats a character with REP (``CSI n b``); written out, the snapshot needs nothing
#: of the terminal beyond printing (avt's own REP mishandles wide characters).
_REP: Final = re.compile(r"([^\x00-\x1f\x7f-\x9f])\x1b\[(\d+)b")
_RESET: Final = "\x1b[0m"

Resize = tuple[int, int]


def _semicolons(match: re.Match[str]) -> str:
    return "\x1b[" + match.group(1).replace(":", ";") + "m"


def _repeated(match: re.Match[str]) -> str:
    return match.group(1) * (int(match.group(2)) + 1)


def _portable(dump: str) -> str:
    """avt's dump in the sequences every xterm-like terminal reads the same way."""
    dump = dump.replace(_C1_CSI, "\x1b[")
    return _REP.sub(_repeated, _SGR.sub(_semicolons, dump))


def _colour(colour: avt.Color | None, base: int) -> str:
    """SGR parameters for a foreground (``base`` 30) or background (40) colour."""
    if colour is None:
        return ""
    if isinstance(colour, avt.Color.Indexed):
        index = colour[0]
        if index < 8:
            return f";{base + index}"
        if index < 16:
            return f";{base + 60 + index - 8}"
        return f";{base + 8};5;{index}"
    if isinstance(colour, avt.Color.RGB):
        return f";{base + 8};2;{colour[0]};{colour[1]};{colour[2]}"
    return ""


def _sgr(pen: avt.Pen) -> str:
    if pen.is_default():
        return _RESET
    params = "0"
    if pen.bold:
        params += ";1"
    if pen.faint:
        params += ";2"
    if pen.italic:
        params += ";3"
    if pen.underline:
        params += ";4"
    if pen.blink:
        params += ";5"
    if pen.inverse:
        params += ";7"
    if pen.strikethrough:
        params += ";9"
    return f"\x1b[{params}{_colour(pen.foreground, 30)}{_colour(pen.background, 40)}m"


def _line(line: avt.Line) -> str:
    """One line as text with SGRs, trailing blank cells left out, ending in the default pen."""
    out: list[str] = []
    pen: avt.Pen | None = None
    sgr = _RESET
    blanks = 0
    # Per cell, as few calls into avt as possible: a snapshot walks up to 200 lines of them.
    for cell in line.cells:
        char = cell.char
        if char == " ":
            if cell.width == 0:  # the right half of a wide character
                continue
            cell_pen = cell.pen
            if cell_pen.is_default():
                blanks += 1
                continue
        else:
            cell_pen = cell.pen
        if blanks:
            if sgr != _RESET:
                out.append(_RESET)
                sgr, pen = _RESET, None
            out.append(" " * blanks)
            blanks = 0
        if pen is None or cell_pen != pen:
            pen = cell_pen
            cell_sgr = _sgr(cell_pen)
            if cell_sgr != sgr:
                out.append(cell_sgr)
                sgr = cell_sgr
        out.append(char)
    if sgr != _RESET:
        out.append(_RESET)
    return "".join(out)


#: Characters handed to the emulator per call (see ``_feed_vt``).
_FEED_PIECE = 1024


class ScreenModel:
    """A terminal emulator fed with one program's output; see the module's docstring."""

    def __init__(
        self,
        cols: int,
        rows: int,
        *,
        scrollback: int = DEFAULT_SCROLLBACK,
        pending_limit: int = DEFAULT_PENDING_LIMIT,
        slice_bytes: int = DEFAULT_SLICE,
        cpu_share: float = DEFAULT_CPU_SHARE,
    ) -> None:
        if pending_limit <= 0 or slice_bytes <= 0 or scrollback < 0:
            raise ValueError("pending_limit and slice_bytes must be positive, scrollback >= 0")
        if not 0 < cpu_share <= 1:
            raise ValueError("cpu_share must be in (0, 1]")
        self.scrollback = scrollback
        self.pending_limit = pending_limit
        self.slice_bytes = slice_bytes
        self.cpu_share = cpu_share
        self._cols, self._rows = self._clamp(cols, rows)
        # Chunks and resizes in stream order: a resize applies between the bytes around it.
        self._queue: deque[bytes | Resize] = deque()
        self._pending = 0
        self._stale = False
        self._fed_while_stale = 0
        self._wake = asyncio.Event()
        self._vt: avt.Vt | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._reset()

    # -- the output path ---------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Queue output for parsing; O(1). Past ``pending_limit`` the model goes stale.

        The background task is woken only once a whole slice waits: typing and its echo cost
        no task switch (what is left is parsed when a snapshot is taken)."""
        if self._stale:
            self._fed_while_stale += len(data)
            return
        self._queue.append(data)
        self._pending += len(data)
        if self._pending > self.pending_limit:
            self._go_stale()
        elif self._pending >= self.slice_bytes and not self._wake.is_set():
            self._wake.set()

    def resize(self, cols: int, rows: int) -> None:
        """The terminal's size changes after the output fed so far."""
        size = self._clamp(cols, rows)
        if size == (self._cols, self._rows):
            return
        self._cols, self._rows = size
        if not self._stale:
            self._queue.append(size)
            if not self._wake.is_set():
                self._wake.set()

    # -- state -------------------------------------------------------------------------------

    @property
    def cols(self) -> int:
        """The width after everything fed so far (the screen's, once drained)."""
        return self._cols

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def stale(self) -> bool:
        """True when output was dropped: only :meth:`rebuild` makes the model true again."""
        return self._stale

    @property
    def pending(self) -> int:
        """Bytes fed but not parsed yet."""
        return self._pending

    # -- parsing -----------------------------------------------------------------------------

    def drain(self, budget: int) -> int:
        """Parse at most ``budget`` queued bytes (and resizes between them); the count parsed."""
        done = 0
        queue = self._queue
        while queue and self._vt is not None:
            item = queue[0]
            if not isinstance(item, tuple) and done >= budget:
                break
            queue.popleft()
            try:
                if isinstance(item, tuple):
                    self._vt.resize(*item)
                    continue
                if len(item) > budget - done:
                    queue.appendleft(item[budget - done :])
                    item = item[: budget - done]
                self._pending -= len(item)
                done += len(item)
                self._feed_vt(self._decoder.decode(item))
            except BaseException as exc:
                self._failed(exc)
        return done

    def rebuild(self, history: bytes) -> None:
        """Start again from a blank screen fed ``history``: the output up to the current end.

        The caller bounds ``history`` (the replay buffer's bytes); anything queued is dropped,
        since ``history`` already holds it.
        """
        self._queue.clear()
        self._pending = 0
        self._fed_while_stale = 0
        self._stale = False
        self._reset()
        if self._vt is not None:
            try:
                self._feed_vt(self._decoder.decode(history))
            except BaseException as exc:
                self._failed(exc)

    def snapshot(self, history: Callable[[], bytes]) -> bytes | None:
        """What a freshly reset terminal of ``cols`` x ``rows`` must be sent to show the screen
        as it is after everything fed so far; None when the emulator failed.

        Synchronous and bounded: it first parses what is still queued (at most
        ``pending_limit``) or, when stale, rebuilds from ``history()``. Await
        :meth:`catch_up` before it to do most of that parsing in slices.
        """
        if self._stale:
            self.rebuild(history())
        self.drain(self._pending)
        vt = self._vt
        if self._stale or vt is None:
            return None
        try:
            rows = vt.size[1]
            lines = vt.lines()
            screen = vt.dump()
        except BaseException as exc:
            self._failed(exc)
            return None
        history_lines = lines[: len(lines) - rows]
        parts = [_line(line) + "\r\n" for line in history_lines]
        if parts:
            # The lines above went through the top of a terminal with no scroll region into its
            # scrollback; a blank screen with the cursor at home is what `dump` expects.
            parts.append(f"\x1b[{rows};1H" + "\n" * min(len(parts), rows - 1))
            parts.append("\x1b[H")
        parts.append(_portable(screen))
        return "".join(parts).encode()

    # -- the background task -----------------------------------------------------------------

    async def catch_up(self) -> None:
        """Parse the queue in slices, yielding to the loop between them, until at most one
        slice is left (output may keep coming while this waits)."""
        while self._pending > self.slice_bytes and not self._stale:
            self.drain(self.slice_bytes)
            await asyncio.sleep(0)

    async def run(self, history: Callable[[], bytes]) -> None:
        """Keep the model up to date until cancelled: the session's background task.

        ``history`` returns the replay buffer's bytes up to the current end, for rebuilding
        after a flood.
        """
        while True:
            if self._stale:
                await self._flood_over()
                if self._stale:  # a snapshot may have rebuilt it meanwhile
                    self.rebuild(history())
                    if self._stale:
                        # The emulator failed on the history itself: leave rebuilding to
                        # the snapshots rather than retry forever.
                        return
                continue
            if self._pending < self.slice_bytes:
                self._wake.clear()
                await self._wake.wait()
                continue
            started = time.perf_counter()
            self.drain(self.slice_bytes)
            spent = time.perf_counter() - started
            # Sleeping in proportion to the work done caps the share of the loop it takes.
            await asyncio.sleep(spent * (1 - self.cpu_share) / self.cpu_share)

    async def _flood_over(self) -> None:
        """Return once output comes slowly enough to be parsed again (or the model is rebuilt)."""
        while self._stale:
            self._fed_while_stale = 0
            await asyncio.sleep(_FLOOD_CHECK)
            # A rate the background task parses with ease within its share of the loop.
            if self._fed_while_stale <= self.pending_limit // 4:
                return

    # -- internals ---------------------------------------------------------------------------

    def _feed_vt(self, text: str) -> None:
        # avt's memory while it parses grows with the text of one call (lines that scroll
        # out are kept until the call returns, and the allocator keeps the peak): small
        # pieces keep a flood from leaving tens of MB behind.
        vt = self._vt
        if vt is None:
            return
        for start in range(0, len(text), _FEED_PIECE):
            vt.feed_str(text[start : start + _FEED_PIECE])

    @staticmethod
    def _clamp(cols: int, rows: int) -> Resize:
        # avt panics on a wide character in a one-column terminal.
        return max(2, cols), max(1, rows)

    def _reset(self) -> None:
        self._decoder.reset()
        try:
            self._vt = avt.Vt(self._cols, self._rows, scrollback_limit=self.scrollback)
        except BaseException as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        """The emulator raised (a Rust panic is a BaseException): stale until rebuilt."""
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise exc
        log.warning("screen model failed, rebuilt on the next snapshot: %r", exc)
        self._vt = None
        self._go_stale()

    def _go_stale(self) -> None:
        self._stale = True
        self._queue.clear()
        self._pending = 0
        self._fed_while_stale = 0
        self._wake.set()
