"""AnswerFilter: one answer per query reaches the program, and no keystroke is lost.

Clients here are plain objects standing for attached terminals; the answers are the bytes
xterm.js 6 sends for each query.
"""

from __future__ import annotations

import pytest

from wxcode_pty.answers import AnswerFilter, FilteredInput

DA1 = b"\x1b[c"
DA1_ANSWER = b"\x1b[?1;2c"
CPR = b"\x1b[6n"
SHIFT_F3 = b"\x1b[1;2R"
FOCUS_IN = b"\x1b[I"
FOCUS_OUT = b"\x1b[O"
SCHEME_DARK = b"\x1b[?997;2n"

# (query, an answer from one terminal, the same answer from another)
QUERIES = [
    (DA1, DA1_ANSWER, DA1_ANSWER),
    (b"\x1b[0c", DA1_ANSWER, DA1_ANSWER),
    (b"\x1b[>c", b"\x1b[>0;276;0c", b"\x1b[>0;276;0c"),
    (b"\x1b[>0q", b"\x1bP>|xterm.js(6.0.0)\x1b\\", b"\x1bP>|xterm.js(6.0.0)\x1b\\"),
    (CPR, b"\x1b[5;10R", b"\x1b[5;12R"),
    (b"\x1b[?6n", b"\x1b[?5;10R", b"\x1b[?5;12R"),
    (b"\x1b[5n", b"\x1b[0n", b"\x1b[0n"),
    (b"\x1b[?2004$p", b"\x1b[?2004;2$y", b"\x1b[?2004;2$y"),
    (b"\x1b[4$p", b"\x1b[4;2$y", b"\x1b[4;2$y"),
    (b"\x1b]4;1;?\x07", b"\x1b]4;1;rgb:cdcd/3131/3131\x1b\\", b"\x1b]4;1;rgb:cdcd/0000/0000\x07"),
    (b"\x1b]10;?\x1b\\", b"\x1b]10;rgb:ffff/ffff/ffff\x1b\\", b"\x1b]10;rgb:0000/0000/0000\x1b\\"),
    (b"\x1b]11;?\x07", b"\x1b]11;rgb:1a1a/1b1b/1e1e\x1b\\", b"\x1b]11;rgb:ffff/ffff/ffff\x1b\\"),
    (b"\x1b]12;?\x07", b"\x1b]12;rgb:ffff/ffff/ffff\x1b\\", b"\x1b]12;rgb:ffff/ffff/ffff\x1b\\"),
    (b"\x1b[?u", b"\x1b[?0u", b"\x1b[?1u"),
    (b"\x1b[14t", b"\x1b[4;600;800t", b"\x1b[4;300;400t"),
    (b"\x1b[16t", b"\x1b[6;17;9t", b"\x1b[6;17;9t"),
    (b"\x1b[18t", b"\x1b[8;24;80t", b"\x1b[8;40;120t"),
    (b"\x1b[?996n", b"\x1b[?997;1n", SCHEME_DARK),
    (b"\x1bP$qm\x1b\\", b"\x1bP1$r0m\x1b\\", b"\x1bP1$r0m\x1b\\"),
]


class Client:
    """An attached terminal (the filter only needs something hashable per client)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


@pytest.fixture
def clients() -> tuple[AnswerFilter, Client, Client]:
    """A filter with an active client and another one, both attached."""
    answers = AnswerFilter(grace=0.15, lifetime=2.0)
    active, other = Client("active"), Client("other")
    answers.attach(active)
    answers.attach(other)
    return answers, active, other


def typed(answers: AnswerFilter, client: Client, data: bytes, active: bool, now: float) -> bytes:
    return answers.filter_input(client, data, active=active, now=now).data


@pytest.mark.parametrize(("query", "answer", "copy"), QUERIES)
def test_two_clients_answer_once(
    clients: tuple[AnswerFilter, Client, Client], query: bytes, answer: bytes, copy: bytes
) -> None:
    answers, active, other = clients
    answers.on_output(b"text " + query + b" more", now=10.0)
    assert typed(answers, other, copy, False, 10.01) == b""  # held: the active one may answer
    assert answers.deadline == pytest.approx(10.15)
    assert answers.filter_input(active, answer, active=True, now=10.02) == FilteredInput(
        answer, False
    )
    assert answers.deadline is None
    assert answers.release(10.5) == b""
    # A client that attached since never saw the query: what it sends is not an answer.
    answers.attach(third := Client("third"))
    expected = b"" if copy == SCHEME_DARK else copy  # unasked, that one is a notification
    assert typed(answers, third, copy, False, 10.6) == expected


@pytest.mark.parametrize(("query", "answer", "copy"), QUERIES)
def test_the_other_answer_passes_when_the_active_client_is_late(
    clients: tuple[AnswerFilter, Client, Client], query: bytes, answer: bytes, copy: bytes
) -> None:
    answers, active, other = clients
    answers.on_output(query, now=10.0)
    assert typed(answers, other, copy, False, 10.01) == b""
    assert answers.release(10.1) == b""
    deadline = answers.deadline
    assert deadline is not None
    assert deadline == pytest.approx(10.15)
    assert answers.release(deadline) == copy
    assert answers.deadline is None
    assert typed(answers, active, answer, True, 10.3) == b""  # too late: a copy


def test_da1_from_two_clients_reaches_the_program_once(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, active, other = clients
    answers.on_output(DA1, now=1.0)
    to_program = typed(answers, active, DA1_ANSWER, True, 1.01)
    to_program += typed(answers, other, DA1_ANSWER, False, 1.02)
    to_program += answers.release(5.0)
    assert to_program == DA1_ANSWER


def test_an_answer_after_the_deadline_passes_at_once(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, active, other = clients
    answers.on_output(CPR, now=1.0)
    assert typed(answers, other, b"\x1b[3;4R", False, 1.5) == b"\x1b[3;4R"
    assert typed(answers, active, b"\x1b[3;5R", True, 1.6) == b""


def test_nobody_active_first_answer_after_the_grace(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, active, other = clients
    answers.on_output(DA1, now=1.0)
    assert typed(answers, active, DA1_ANSWER, False, 1.01) == b""
    assert typed(answers, other, DA1_ANSWER, False, 1.02) == b""
    assert answers.release(1.2) == DA1_ANSWER


def test_due_answers_come_before_the_next_input(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, active, other = clients
    answers.on_output(CPR, now=1.0)
    typed(answers, other, b"\x1b[3;4R", False, 1.01)
    assert typed(answers, active, b"x", True, 1.2) == b"\x1b[3;4Rx"


# -- keystrokes ------------------------------------------------------------------------------


def test_shift_f3_without_a_question_passes(clients: tuple[AnswerFilter, Client, Client]) -> None:
    answers, active, other = clients
    assert answers.filter_input(active, SHIFT_F3, active=True, now=1.0) == FilteredInput(
        SHIFT_F3, True
    )
    assert answers.filter_input(other, SHIFT_F3, active=False, now=1.0) == FilteredInput(
        SHIFT_F3, True
    )


def test_a_key_shaped_like_an_answered_query_passes(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, active, other = clients
    answers.on_output(CPR, now=1.0)
    assert typed(answers, active, b"\x1b[7;1R", True, 1.01) == b"\x1b[7;1R"
    assert typed(answers, other, b"\x1b[7;3R", False, 1.02) == b""
    # Each client answered the one question: what looks like an answer now is a key.
    assert typed(answers, active, SHIFT_F3, True, 1.1) == SHIFT_F3
    assert typed(answers, other, SHIFT_F3, False, 1.2) == SHIFT_F3


def test_a_key_while_a_question_waits_is_delayed_not_lost(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, _, other = clients
    answers.on_output(CPR, now=1.0)
    # A query no terminal answers (or not yet): the key is taken for an answer and held.
    assert typed(answers, other, SHIFT_F3, False, 1.01) == b""
    assert answers.release(1.15) == SHIFT_F3


def test_a_client_that_attached_after_the_question_is_not_waited_for() -> None:
    answers = AnswerFilter()
    early = Client("early")
    answers.attach(early)
    answers.on_output(CPR, now=1.0)
    late = Client("late")
    answers.attach(late)
    assert typed(answers, late, SHIFT_F3, False, 1.01) == SHIFT_F3
    assert typed(answers, early, b"\x1b[2;2R", True, 1.02) == b"\x1b[2;2R"
    answers.detach(late)


def test_questions_are_forgotten_after_their_lifetime(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, active, other = clients
    answers.on_output(CPR, now=1.0)
    assert typed(answers, active, b"\x1b[2;2R", True, 1.01) == b"\x1b[2;2R"
    assert typed(answers, other, SHIFT_F3, False, 2.5) == b""  # taken for a late copy
    answers.on_output(CPR, now=3.0)
    assert typed(answers, active, b"\x1b[2;2R", True, 3.01) == b"\x1b[2;2R"
    assert typed(answers, other, SHIFT_F3, False, 5.5) == SHIFT_F3  # the question is forgotten


def test_answers_are_cut_out_and_the_rest_passes_in_order(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, active, other = clients
    answers.on_output(DA1 + CPR, now=1.0)
    assert answers.filter_input(
        other, b"ab" + DA1_ANSWER + b"cd\x1b[3;4Ref", active=False, now=1.01
    ) == FilteredInput(b"abcdef", True)
    assert answers.filter_input(
        active, b"\x1b[A" + DA1_ANSWER + b"\x1b[3;5R", active=True, now=1.02
    ) == FilteredInput(b"\x1b[A" + DA1_ANSWER + b"\x1b[3;5R", True)
    assert answers.release(2.0) == b""


def test_incomplete_answers_and_other_sequences_pass(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, _, other = clients
    answers.on_output(DA1 + CPR + b"\x1b[?2004$p", now=1.0)
    for data in (
        b"\x1b[?1;2",
        b"\x1b[1;2;3R",  # not a cursor report
        b"\x1b[?1004;2$y",  # another mode
        b"\x1b[200~pasted\x1b[201~",
        b"\x1b[<0;3;4M",  # a mouse report
        b"\x1bOR",  # F3
    ):
        assert typed(answers, other, data, False, 1.01) == data


def test_several_questions_of_one_kind_are_answered_in_order(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, active, other = clients
    answers.on_output(CPR + b"x" + CPR, now=1.0)
    assert typed(answers, other, b"\x1b[1;1R\x1b[1;2R", False, 1.01) == b""
    assert typed(answers, active, b"\x1b[1;1R", True, 1.02) == b"\x1b[1;1R"
    assert answers.release(1.2) == b"\x1b[1;2R"  # the second: the active one had not answered
    assert typed(answers, active, b"\x1b[1;2R", True, 1.3) == b""


def test_osc_4_asks_for_each_index(clients: tuple[AnswerFilter, Client, Client]) -> None:
    answers, active, other = clients
    answers.on_output(b"\x1b]4;1;?;2;?;3;rgb:00/00/00\x1b\\", now=1.0)
    one, two = b"\x1b]4;1;rgb:0/0/0\x1b\\", b"\x1b]4;2;rgb:0/0/0\x1b\\"
    three = b"\x1b]4;3;rgb:0/0/0\x1b\\"
    assert typed(answers, active, one + two + three, True, 1.01) == one + two + three
    assert typed(answers, other, one + two, False, 1.02) == b""


def test_osc_10_asks_for_the_colours_after_it_too(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, active, other = clients
    answers.on_output(b"\x1b]10;?;?\x07\x1b]12;?;?\x07", now=1.0)
    fg, bg = b"\x1b]10;rgb:f/f/f\x1b\\", b"\x1b]11;rgb:0/0/0\x1b\\"
    cursor, beyond = b"\x1b]12;rgb:f/f/f\x1b\\", b"\x1b]13;rgb:f/f/f\x1b\\"
    assert typed(answers, active, fg + bg + cursor, True, 1.01) == fg + bg + cursor
    assert typed(answers, other, fg + bg + cursor + beyond, False, 1.02) == beyond


# -- reports ---------------------------------------------------------------------------------


def test_focus_reports_pass_only_from_the_active_client(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, active, other = clients
    assert answers.filter_input(other, FOCUS_IN, active=False, now=1.0) == FilteredInput(b"", False)
    assert answers.filter_input(other, b"a" + FOCUS_OUT, active=False, now=1.0) == FilteredInput(
        b"a", True
    )
    assert answers.filter_input(active, FOCUS_OUT, active=True, now=1.0) == FilteredInput(
        FOCUS_OUT, False
    )


def test_colour_scheme_notifications_pass_only_from_the_active_client(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, active, other = clients
    assert typed(answers, other, SCHEME_DARK, False, 1.0) == b""
    assert typed(answers, active, SCHEME_DARK, True, 1.0) == SCHEME_DARK


def test_input_without_escapes_is_returned_as_is(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, _, other = clients
    answers.on_output(DA1, now=1.0)
    data = b"plain text \xc3\xa9"
    result = answers.filter_input(other, data, active=False, now=1.01)
    assert result == FilteredInput(data, True)
    assert result.data is data
    assert answers.filter_input(other, b"", active=False, now=1.02) == FilteredInput(b"", False)


# -- the output ------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", range(1, len(b"ab\x1b]11;?\x1b\\")))
def test_a_query_split_between_reads_is_seen(
    clients: tuple[AnswerFilter, Client, Client], cut: int
) -> None:
    answers, _, other = clients
    output = b"ab\x1b]11;?\x1b\\"
    answers.on_output(output[:cut], now=1.0)
    answers.on_output(output[cut:] + b"cd", now=1.0)
    assert typed(answers, other, b"\x1b]11;rgb:0/0/0\x1b\\", False, 1.01) == b""


def test_c1_and_controls_inside_queries(clients: tuple[AnswerFilter, Client, Client]) -> None:
    answers, _, other = clients
    answers.on_output(b"\xc2\x9b6n", now=1.0)
    answers.on_output(b"\x1b[\r6n", now=1.0)
    answers.on_output(b"\xc2", now=1.0)
    answers.on_output(b"\x9bc", now=1.0)
    assert typed(answers, other, b"\x1b[1;1R\x1b[1;1R" + DA1_ANSWER, False, 1.01) == b""


@pytest.mark.parametrize(
    "output",
    [
        b"\x1b[?2026h\x1b[38;2;1;2;3mtext\x1b[39m\x1b[?2026l",
        b"\x1b[1c",  # DA1 with a parameter: xterm.js does not answer
        b"\x1b[>1q",
        b"\x1b[14;2t",
        b"\x1b[8;24;80t",  # a resize request, not a query
        b"\x1b[=c",  # DA3, which xterm.js does not answer
        b"\x1b]11;rgb:0/0/0\x07",  # a colour set
        b"\x1b]8;;https://example.com/?\x1b\\",
        b"\x1b[?25l\x1b[>1u",
        b"[6n ]11;?",
    ],
)
def test_output_that_asks_nothing(
    clients: tuple[AnswerFilter, Client, Client], output: bytes
) -> None:
    answers, _, other = clients
    answers.on_output(output, now=1.0)
    # Every answer but the colour scheme's, which another client may not send unasked.
    everything = b"".join(copy for _, _, copy in QUERIES if copy != SCHEME_DARK)
    assert typed(answers, other, everything, False, 1.01) == everything


def test_questions_are_bounded_and_held_answers_survive(
    clients: tuple[AnswerFilter, Client, Client],
) -> None:
    answers, _, other = clients
    answers.on_output(DA1, now=1.0)
    assert typed(answers, other, DA1_ANSWER, False, 1.01) == b""
    answers.on_output(CPR * 1000, now=1.02)
    assert len(answers._questions) <= 32
    assert answers.deadline == pytest.approx(1.15)
    assert answers.release(1.15) == DA1_ANSWER
    assert answers.deadline is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        AnswerFilter(grace=0)
    with pytest.raises(ValueError):
        AnswerFilter(grace=3, lifetime=2)
    with pytest.raises(ValueError):
        AnswerFilter(max_questions=0)
