"""The decoder gives the same frames for any chunking of the same bytes (h11 test_io style)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accessfabric.errors import FrameFormatError, ProtocolError
from accessfabric.wire import Data, Frame, FrameDecoder, Ping, encode, encode_many
from accessfabric.wire.limits import HEADER_SIZE, MAX_FRAME_SIZE_CAP

from .strategies import any_frame, hypothesis_bytes_warning, sample_frames

pytestmark = hypothesis_bytes_warning

ALL_FRAMES: list[Frame] = [
    *sample_frames().values(),
    Data(9, 1 << 40, bytes(range(256)) * 8, True),
    Data(11, 0, b"", True),
]
STREAM = bytes(encode_many(ALL_FRAMES))


def feed_pieces(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[Frame]:
    frames: list[Frame] = []
    start = 0
    for end in [*sorted(cuts), len(data)]:
        frames += decoder.feed(data[start:end])
        start = end
    return frames


def test_one_piece() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(STREAM) == ALL_FRAMES
    assert decoder.buffered == 0


def test_one_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    frames: list[Frame] = []
    for i in range(len(STREAM)):
        frames += decoder.feed(STREAM[i : i + 1])
    assert frames == ALL_FRAMES
    assert decoder.buffered == 0


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_one_byte_at_a_time_from_each_buffer_type(kind: type) -> None:
    decoder = FrameDecoder()
    frames: list[Frame] = []
    for i in range(len(STREAM)):
        frames += decoder.feed(kind(STREAM[i : i + 1]))
    assert frames == ALL_FRAMES


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=40))
def test_random_splits(cuts: list[int]) -> None:
    assert feed_pieces(FrameDecoder(), STREAM, cuts) == ALL_FRAMES


@settings(max_examples=100, deadline=None)
@given(st.lists(any_frame, min_size=1, max_size=8), st.data())
def test_random_frames_in_random_splits(frames: list[Frame], data: st.DataObject) -> None:
    stream = bytes(encode_many(frames))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    assert feed_pieces(FrameDecoder(MAX_FRAME_SIZE_CAP), stream, cuts) == frames


def feed_through_reused_buffer(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[Frame]:
    """Feed like the TCP carrier: every piece lands in one buffer, overwritten after ``feed``."""
    shared = bytearray(len(data) + 1)
    frames: list[Frame] = []
    start = 0
    for end in [*sorted(cuts), len(data)]:
        size = end - start
        shared[:size] = data[start:end]
        frames += decoder.feed(memoryview(shared)[:size])
        shared[:] = b"\xee" * len(shared)
        start = end
    return frames


@settings(max_examples=100, deadline=None)
@given(st.lists(any_frame, min_size=1, max_size=8), st.data())
def test_random_frames_through_a_reused_buffer(frames: list[Frame], data: st.DataObject) -> None:
    stream = bytes(encode_many(frames))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    decoder = FrameDecoder(MAX_FRAME_SIZE_CAP)
    assert feed_through_reused_buffer(decoder, stream, cuts) == frames
    assert decoder.buffered == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=40))
def test_random_splits_through_a_reused_buffer(cuts: list[int]) -> None:
    assert feed_through_reused_buffer(FrameDecoder(), STREAM, cuts) == ALL_FRAMES


def test_data_payloads_from_a_reused_buffer_are_bytes() -> None:
    """One copy per payload, of that payload: a reader can take it as it is."""
    wire = encode(Data(1, 0, b"a" * 1000)) + encode(Data(1, 1000, b"b" * 1000))
    frames = feed_through_reused_buffer(FrameDecoder(), wire, [])
    assert [(type(f.payload), f.payload) for f in frames if isinstance(f, Data)] == [
        (bytes, b"a" * 1000),
        (bytes, b"b" * 1000),
    ]


def test_oversized_frame_after_a_split_header_fails() -> None:
    decoder = FrameDecoder()
    big = encode(Data(1, 0, b"x" * 70_000))
    first = bytearray(big[:4])
    decoder.feed(memoryview(first))
    with pytest.raises(ProtocolError):
        decoder.feed(memoryview(bytearray(big[4:20])))


def test_empty_feed_returns_nothing() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(STREAM[:5]) == []
    assert decoder.feed(b"") == []
    assert decoder.buffered == 5


def test_payload_spanning_many_feeds() -> None:
    payload = bytes(i * 7 % 251 for i in range(60_000))
    wire = encode(Data(1, 12345, payload, True))
    decoder = FrameDecoder()
    frames: list[Frame] = []
    for start in range(0, len(wire), 1000):
        assert frames == []
        frames += decoder.feed(wire[start : start + 1000])
    assert frames == [Data(1, 12345, payload, True)]
    assert decoder.buffered == 0


def test_largest_frame_spanning_many_feeds() -> None:
    payload = b"\x5a" * (MAX_FRAME_SIZE_CAP - 8)
    wire = encode(Data(1, 0, payload))
    decoder = FrameDecoder(MAX_FRAME_SIZE_CAP)
    frames: list[Frame] = []
    for start in range(0, len(wire), 1 << 20):
        frames += decoder.feed(memoryview(wire)[start : start + (1 << 20)])
    assert len(frames) == 1 and isinstance(frames[0], Data)
    assert frames[0].payload == payload


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_reused_caller_buffer_does_not_corrupt_returned_payloads(kind: type) -> None:
    """A receive buffer overwritten after feed() must not change frames already returned."""
    first = encode(Data(1, 0, b"A" * 100))
    second = encode(Data(1, 100, b"B" * 100))
    buffer = bytearray(first + second[:50])
    decoder = FrameDecoder()
    view = kind(buffer) if kind is memoryview else buffer
    frames = decoder.feed(view)
    assert frames == [Data(1, 0, b"A" * 100)]
    buffer[:] = b"\xff" * len(buffer)  # the caller reuses its buffer
    assert frames[0] == Data(1, 0, b"A" * 100)
    rest = bytearray(second[50:])
    frames += decoder.feed(kind(rest) if kind is memoryview else rest)
    rest[:] = b"\x00" * len(rest)
    assert frames == [Data(1, 0, b"A" * 100), Data(1, 100, b"B" * 100)]


def test_payloads_survive_later_feeds() -> None:
    """The decoder's own buffer is reused between feeds; earlier payloads must not change."""
    frames_in: list[Frame] = [Data(1, i * 10, bytes([i]) * 10) for i in range(20)]
    wire = bytes(encode_many(frames_in))
    decoder = FrameDecoder()
    frames: list[Frame] = []
    for start in range(0, len(wire), 7):
        frames += decoder.feed(bytearray(wire[start : start + 7]))
    assert frames == frames_in


def test_frames_after_a_partial_header_are_complete() -> None:
    wire = encode(Ping(1)) + encode(Ping(2))
    decoder = FrameDecoder()
    assert decoder.feed(wire[: HEADER_SIZE - 1]) == []
    assert decoder.feed(wire[HEADER_SIZE - 1 :]) == [Ping(1), Ping(2)]


def test_decoder_stays_failed_after_an_error() -> None:
    decoder = FrameDecoder()
    bad = bytes.fromhex("000008060080000000") + bytes(8)  # PING, reserved bit
    with pytest.raises(FrameFormatError) as first:
        decoder.feed(bad)
    with pytest.raises(ProtocolError) as again:
        decoder.feed(encode(Ping(1)))
    assert again.value is first.value
