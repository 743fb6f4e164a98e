"""One answer per terminal query, however many clients are attached.

Every attached terminal sees the program's output live, so each of them answers a query (device
attributes, cursor position, a mode, a colour...): without a filter the program would read one
answer per client. :class:`AnswerFilter`, one per session and without I/O, lets exactly one
through: the active client's (its size is the PTY's, so its cursor report is the true one), or,
when that one has not answered within ``grace`` seconds of the question, the first other
answer, held back until then; every further copy is dropped. Focus reports and colour-scheme
notifications reach the program only from the active client.

Keystrokes are never dropped. Some keys look like answers (Shift+F3 is ``CSI 1 ; 2 R``, a cursor
report): an answer-shaped sequence counts as an answer only while a question for that shape,
asked since the client attached, waits for that client's answer; each client answers each
question once. Only complete answer sequences are taken out of the input; every other byte
passes, in order. A question is forgotten ``lifetime`` seconds after it was asked, so a very
late answer reaches the program as if typed.

Queries are recognised in the output with ``termquery.py``'s patterns, after a quick search for
where one can start (the output path), and their answers in the input by their shape: xterm.js
answers in 7-bit form, one answer per message.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from .termquery import FINISHED, QUERY, SEQ_CONTROL, SEQ_PARAM, compile_pattern, is_query
from .termstate import parameters

__all__ = ["AnswerFilter", "FilteredInput"]

# Where a query this filter follows can start (a superset, confirmed with termquery's QUERY):
# DA, XTVERSION, DSR/CPR, DECRQM, kitty flags, window reports, OSC colours, DECRQSS.
_CANDIDATE_TEMPLATE = rb"""
    \x1b %(F)b*+ (?: \[ %(F)b*+ (?: [?>] %(P)b*+ [cnqu$] | %(P)b*+ [cnt$] )
                   | \] (?: [0-9;] | %(F)b )*+ \?
                   | P %(P)b*+ \$ ) %(C1)b
"""
_CANDIDATE = compile_pattern(_CANDIDATE_TEMPLATE, F=SEQ_CONTROL, P=SEQ_PARAM, C1=b"")
# The C1 form makes every search slower; it only runs on output that holds a C1 introducer.
_CANDIDATE_C1 = compile_pattern(
    _CANDIDATE_TEMPLATE, F=SEQ_CONTROL, P=SEQ_PARAM, C1=rb"| \xc2 [\x9b\x9d\x90]"
)
_C1_INTRODUCERS: Final = (b"\xc2\x9b", b"\xc2\x9d", b"\xc2\x90")

# A query's parts once the controls xterm.js executes inside it are gone.
_CSI_PARTS = re.compile(rb"\x1b\[([<=>?]?)([0-9:;]*)([\x20-\x2f]*)([\x40-\x7e])")
_EXECUTED = bytes([*range(0x18), 0x19, *range(0x1C, 0x20), 0x7F])
_SEVEN_BIT: Final = ((b"\xc2\x9b", b"\x1b["), (b"\xc2\x9d", b"\x1b]"), (b"\xc2\x90", b"\x1bP"))
_OSC_END = re.compile(rb"(?:\x1b\\|\xc2\x9c)\Z")
#: An unfinished sequence longer than this at the end of a read is not carried over.
_TAIL_LIMIT: Final = 256

# Answers and reports as terminals send them.
_ANSWER = re.compile(
    rb"""
      \x1b\[ (?: (?P<focus> [IO] )
               | (?P<prefix> [?>]? ) (?P<params> [0-9;]{0,64} ) (?P<final> [cnRtu] | \$y ) )
    | \x1b\] (?P<color> 4;[0-9]{1,3} | 1[0-2] ) ; [^\x07\x1b]{0,256} (?: \x07 | \x1b\\ )
    | \x1bP (?P<dcs> >\| | [01]\$r ) [^\x1b]{0,1024} \x1b\\
    """,
    re.X,
)

# What a piece of input is.
_KEY: Final = 0  # typed: passes
_PASS: Final = 1  # an answer or report that passes
_REMOVE: Final = 2  # an answer held back or dropped, or a report from another client

#: Key of the colour-scheme answer, which is also sent unasked when the scheme changes.
_SCHEME: Final = "scheme"


class FilteredInput(NamedTuple):
    """What to write to the program, and whether the client typed anything."""

    data: bytes
    #: The input held more than answers and reports (keys, a paste): the client is active.
    typed: bool


@dataclass(slots=True, eq=False)
class _Question:
    key: str
    asked_at: float
    serial: int
    answered: bool = False
    #: The clients whose answer to this question has been seen.
    responders: set[object] = field(default_factory=set)
    #: A non-active client's answer, waiting for the active client's.
    held: bytes | None = None


class AnswerFilter:
    """Pending questions of one session's program, and the filter for its clients' input.

    ``now`` is ``time.monotonic()`` (the clock of ``loop.time()``) throughout.
    """

    __slots__ = (
        "_asked",
        "_attached",
        "_due",
        "_grace",
        "_lifetime",
        "_max_questions",
        "_questions",
        "_tail",
    )

    def __init__(
        self, *, grace: float = 0.15, lifetime: float = 2.0, max_questions: int = 32
    ) -> None:
        if not 0 < grace < lifetime or max_questions <= 0:
            raise ValueError("need 0 < grace < lifetime and max_questions > 0")
        self._grace = grace
        self._lifetime = lifetime
        self._max_questions = max_questions
        self._questions: deque[_Question] = deque()
        self._asked = 0
        #: Each attached client and how many questions had been asked when it attached.
        self._attached: dict[object, int] = {}
        #: Held answers of questions forgotten to stay within max_questions: (due, answer).
        self._due: list[tuple[float, bytes]] = []
        self._tail = b""

    # -- the output --------------------------------------------------------------------------

    def on_output(self, data: bytes, now: float) -> None:
        """Note the queries in ``data``, the next bytes of the output (the hot path).

        With fewer than two clients attached there is no copy to drop: the caller may skip
        this then, and save a scan of the output. Queries asked meanwhile go unnoted, and
        their answers pass as typed.
        """
        if self._tail:
            data = self._tail + data
        elif b"\x1b" not in data and b"\xc2" not in data:
            return
        candidates = _CANDIDATE
        if b"\xc2" in data and any(intro in data for intro in _C1_INTRODUCERS):
            candidates = _CANDIDATE_C1
        for candidate in candidates.finditer(data):
            query = QUERY.match(data, candidate.start())
            if query is not None and is_query(query):
                for key in _question_keys(query[0]):
                    self._ask(key, now)
        self._tail = _unfinished(data)

    def _ask(self, key: str, now: float) -> None:
        questions = self._questions
        questions.append(_Question(key, now, self._asked))
        self._asked += 1
        if len(questions) > self._max_questions:
            oldest = questions.popleft()
            if oldest.held is not None and not oldest.answered:
                self._due.append((oldest.asked_at + self._grace, oldest.held))

    # -- clients -----------------------------------------------------------------------------

    def attach(self, client: object) -> None:
        """``client`` sees the output from now on: it answers only the questions asked later."""
        self._attached[client] = self._asked
        if len(self._attached) == 2:
            # The output was not followed with one client: a kept tail is stale.
            self._tail = b""

    def detach(self, client: object) -> None:
        self._attached.pop(client, None)

    def filter_input(
        self, client: object, data: bytes, *, active: bool, now: float
    ) -> FilteredInput:
        """The bytes to write to the program for ``client``'s input ``data``.

        ``active`` says whether ``client`` is the active one. Held answers that are due come
        first. When the result leaves answers held, :attr:`deadline` says when to
        :meth:`release` them.
        """
        released = self.release(now)
        if b"\x1b" not in data:
            return FilteredInput(released + data, bool(data))
        pieces = [released]
        kept_from = 0
        answered = 0  # bytes of answers and reports
        for match in _ANSWER.finditer(data):
            verdict = self._judge(client, active, match, now)
            if verdict == _KEY:
                continue
            answered += match.end() - match.start()
            if verdict == _REMOVE:
                pieces.append(data[kept_from : match.start()])
                kept_from = match.end()
        if kept_from == 0:
            return FilteredInput(released + data, answered < len(data))
        pieces.append(data[kept_from:])
        return FilteredInput(b"".join(pieces), answered < len(data))

    def _judge(self, client: object, active: bool, match: re.Match[bytes], now: float) -> int:
        if match["focus"] is not None:
            return _PASS if active else _REMOVE
        key = _answer_key(match)
        if key is None:
            return _KEY
        question = self._waiting(key, client)
        if question is None:
            if key == _SCHEME:  # a notification that the scheme changed
                return _PASS if active else _REMOVE
            return _KEY
        question.responders.add(client)
        if question.answered:
            return _REMOVE
        if active:
            question.answered = True
            question.held = None
            return _PASS
        if question.held is not None:
            return _REMOVE
        if now < question.asked_at + self._grace:
            question.held = match[0]
            return _REMOVE
        question.answered = True
        return _PASS

    def _waiting(self, key: str, client: object) -> _Question | None:
        """The oldest question for ``key`` that ``client`` saw and has not answered."""
        since = self._attached.get(client, 0)
        for question in self._questions:
            if (
                question.key == key
                and question.serial >= since
                and client not in question.responders
            ):
                return question
        return None

    # -- held answers ------------------------------------------------------------------------

    @property
    def deadline(self) -> float | None:
        """When the next held answer is due for :meth:`release`, or None."""
        if not self._due and not self._questions:
            return None  # the usual case, on every keystroke: nothing asked
        times = [due for due, _ in self._due]
        times += [q.asked_at + self._grace for q in self._questions if q.held is not None]
        return min(times, default=None)

    def release(self, now: float) -> bytes:
        """The held answers that are due (their active client did not answer in time).

        Also forgets the questions older than ``lifetime``.
        """
        out: list[bytes] = []
        if self._due:
            out += [answer for due, answer in self._due if due <= now]
            self._due = [(due, answer) for due, answer in self._due if due > now]
        grace = self._grace
        for question in self._questions:
            if question.held is not None and now >= question.asked_at + grace:
                out.append(question.held)
                question.held = None
                question.answered = True
        questions = self._questions
        while questions and now - questions[0].asked_at >= self._lifetime:
            questions.popleft()
        return b"".join(out)


def _question_keys(query: bytes) -> list[str]:
    """The answers a query (as termquery matched it) expects from xterm.js, by shape."""
    query = query.translate(None, _EXECUTED)
    for c1, seven_bit in _SEVEN_BIT:
        if query.startswith(c1):
            query = seven_bit + query[len(c1) :]
    if query.startswith(b"\x1b]"):
        return _color_keys(_OSC_END.sub(b"", query[2:]))
    if query.startswith(b"\x1bP"):
        return ["status-string"] if query[2:4] == b"$q" else []
    parts = _CSI_PARTS.fullmatch(query)
    if parts is None:
        return []
    prefix, params_text, intermediates, final = parts.groups()
    params = parameters(params_text)
    if intermediates == b"$" and final == b"p":
        return [f"mode{prefix.decode()}{params[0]}"]
    if intermediates:
        return []
    first = params[0]
    shape = (prefix, final)
    if shape == (b"", b"c") and first == 0:
        return ["da1"]
    if shape == (b">", b"c") and first == 0:
        return ["da2"]
    if shape == (b">", b"q") and first == 0:
        return ["xtversion"]
    if shape == (b"", b"n") and first in (5, 6):
        return ["status" if first == 5 else "cpr"]
    if shape == (b"?", b"n") and first in (6, 996):
        return ["xcpr" if first == 6 else _SCHEME]
    if shape == (b"?", b"u"):
        return ["kitty"]
    # 14;2 asks for the screen's size, which xterm.js does not report.
    if shape == (b"", b"t") and first in (14, 16, 18) and not (first == 14 and params[1:2] == [2]):
        return [f"window{first - 10}"]
    return []


def _color_keys(body: bytes) -> list[str]:
    """OSC 4 asks for each index with "?", OSC 10-12 for the colours from theirs on."""
    number, _, text = body.partition(b";")
    fields = text.split(b";")
    number = number.lstrip(b"0")
    if number == b"4":
        pairs = zip(fields[::2], fields[1::2], strict=False)
        return [f"color4;{int(index)}" for index, spec in pairs if spec == b"?" and _index(index)]
    if number in (b"10", b"11", b"12"):
        first = int(number)
        return [f"color{first + i}" for i, spec in enumerate(fields[: 13 - first]) if spec == b"?"]
    return []


def _index(text: bytes) -> bool:
    return text.isdigit() and len(text) <= 3 and int(text) <= 255


def _answer_key(match: re.Match[bytes]) -> str | None:
    """The question an answer-shaped sequence would answer, or None for other sequences."""
    color = match["color"]
    if color is not None:
        number, _, index = color.partition(b";")
        return f"color4;{int(index)}" if index else f"color{int(number)}"
    dcs = match["dcs"]
    if dcs is not None:
        return "xtversion" if dcs == b">|" else "status-string"
    prefix, final = match["prefix"], match["final"]
    params = match["params"].split(b";")
    if not all(param.isdigit() for param in params):
        return None
    count = len(params)
    if final == b"$y":
        return f"mode{prefix.decode()}{int(params[0])}" if count == 2 else None
    shape = (prefix, final)
    if shape == (b"?", b"c"):
        return "da1"
    if shape == (b">", b"c"):
        return "da2"
    if shape == (b"", b"R") and count == 2:
        return "cpr"
    if shape == (b"?", b"R") and count in (2, 3):
        return "xcpr"
    if shape == (b"", b"n") and count == 1:
        return "status"
    if shape == (b"?", b"n") and count == 2 and int(params[0]) == 997:
        return _SCHEME
    if shape == (b"?", b"u") and count == 1:
        return "kitty"
    if shape == (b"", b"t") and count == 3 and params[0] in (b"4", b"6", b"8"):
        return f"window{int(params[0])}"
    return None


def _unfinished(data: bytes) -> bytes:
    """The end of ``data`` when it is an unfinished sequence (which may be a query)."""
    size = len(data)
    cut = max(0, size - _TAIL_LIMIT)
    start = data.rfind(b"\x1b", cut)
    c1 = b"\xc2" in data
    if c1:
        start = max(start, *(data.rfind(intro, cut) for intro in _C1_INTRODUCERS))
    if start >= 0 and FINISHED.match(data, start) is None:
        return data[start:]
    return b"\xc2" if c1 and data[-1] == 0xC2 else b""
