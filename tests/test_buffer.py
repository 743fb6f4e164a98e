"""ReplayBuffer: exact offsets, FIFO eviction, safe replay boundaries."""

from __future__ import annotations

import random

import pytest

from wxcode_pty.buffer import ReplayBuffer, safe_start


def test_since_returns_exactly_the_missing_bytes() -> None:
    rng = random.Random(7)
    buffer = ReplayBuffer(1000)
    stream = bytearray()
    for _ in range(300):
        chunk = rng.randbytes(rng.randint(1, 120))
        buffer.append(chunk)
        stream += chunk
        assert len(buffer) <= 1000
        assert buffer.end == len(stream)
        for offset in {buffer.start, buffer.end, rng.randint(buffer.start, buffer.end)}:
            replay = buffer.since(offset)
            assert not replay.truncated
            assert (replay.start, replay.end) == (offset, len(stream))
            assert replay.data == bytes(stream[offset:])


def test_evicted_offset_is_truncated_and_starts_at_a_safe_boundary() -> None:
    buffer = ReplayBuffer(64)
    buffer.append(b"A" * 60 + b"\x1b[31mred\x1b[0m line\r\n" + b"tail")
    assert buffer.start > 0
    replay = buffer.since(0)
    assert replay.truncated
    assert replay.data.startswith(b"\x1b") or replay.data == b"tail"
    assert replay.data == bytes(buffer.since(replay.start).data)
    assert replay.end == buffer.end


def test_chunk_larger_than_capacity_keeps_the_newest_bytes() -> None:
    buffer = ReplayBuffer(10)
    buffer.append(b"0123")
    buffer.append(b"abcdefghijklmnop")
    assert buffer.start == 10 and buffer.end == 20
    assert buffer.since(10).data == b"ghijklmnop"


def test_whole_replay_from_the_first_byte_is_not_cut() -> None:
    buffer = ReplayBuffer(100)
    buffer.append(b"\x80not really utf8 but the start of the stream")
    assert buffer.since(None).data.startswith(b"\x80not")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # A cut UTF-8 character: its continuation bytes are skipped.
        ("é".encode()[1:] + b"bc", 1),
        ("€".encode()[1:] + b"x", 2),
        # A cut escape sequence: start at the next ESC.
        (b"5;1H\x1b[2Jhello", 4),
        # ...or after the next line break, whichever is first.
        (b"8;5;12mtext\nnext", 12),
        (b"\r\nabc", 1),
    ],
)
def test_safe_start(data: bytes, expected: int) -> None:
    assert safe_start(data) == expected


def test_replay_never_starts_inside_a_utf8_character() -> None:
    text = ("héllo wörld € 😀 " * 200).encode()
    for capacity in range(50, 90):
        buffer = ReplayBuffer(capacity)
        buffer.append(text)
        # Without line breaks or escapes in reach, the replay must still decode cleanly.
        buffer.since(None).data.decode("utf-8")


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReplayBuffer(0)
