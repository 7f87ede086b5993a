"""Hypothesis round trip: every frame type with random valid fields -> encode -> decode -> equal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accessfabric.wire import Frame, FrameDecoder, decode_frame, encode, encode_into, encode_many
from accessfabric.wire.limits import HEADER_SIZE, MAX_FRAME_SIZE_CAP

from .strategies import FRAME_STRATEGIES, any_frame, hypothesis_bytes_warning

pytestmark = hypothesis_bytes_warning


def decode_all(data: bytes) -> list[Frame]:
    decoder = FrameDecoder(MAX_FRAME_SIZE_CAP)
    frames = decoder.feed(data)
    assert decoder.buffered == 0
    return frames


@pytest.mark.parametrize("name", sorted(FRAME_STRATEGIES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_of_each_type(name: str, data: st.DataObject) -> None:
    frame = data.draw(FRAME_STRATEGIES[name])
    wire = encode(frame)
    assert int.from_bytes(wire[:3], "big") == len(wire) - HEADER_SIZE
    assert decode_all(wire) == [frame]
    out = bytearray()
    encode_into(frame, out)
    assert bytes(out) == wire


@pytest.mark.parametrize("name", sorted(FRAME_STRATEGIES))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_decode_frame_on_the_payload(name: str, data: st.DataObject) -> None:
    frame = data.draw(FRAME_STRATEGIES[name])
    wire = encode(frame)
    frame_type, flags = wire[3], wire[4]
    stream_id = int.from_bytes(wire[5:9], "big")
    assert decode_frame(frame_type, flags, stream_id, memoryview(wire)[HEADER_SIZE:]) == frame


@settings(max_examples=100, deadline=None)
@given(st.lists(any_frame, max_size=12))
def test_round_trip_of_mixed_streams(frames: list[Frame]) -> None:
    wire = bytes(encode_many(frames))
    assert wire == b"".join(encode(f) for f in frames)
    assert decode_all(wire) == frames
