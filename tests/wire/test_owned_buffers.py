"""A buffer fed with ``owned=True`` is never written again: DATA payloads are views of it
(no copy in the decoder), and each view keeps its own buffer's bytes whatever is fed later
(ADR 0054).  A buffer fed without it is the caller's to reuse: payloads are copies."""

from __future__ import annotations

from accessfabric.wire import Data, FrameDecoder, Ping, encode_many
from accessfabric.wire.limits import HEADER_SIZE

FIRST = Data(1, 0, bytes(range(256)) * 64, False)  # 16 KiB
SECOND = Data(1, len(FIRST.payload), b"\xaa" * 40_000, False)
THIRD = Data(3, 0, b"tail", True)
WIRE = bytes(encode_many([FIRST, Ping(7), SECOND, THIRD]))


def test_owned_payloads_are_views_of_the_buffer_and_outlive_later_feeds() -> None:
    decoder = FrameDecoder()
    cut = len(WIRE) - 30_000  # SECOND straddles the two receives
    first_buffer = bytearray(WIRE[:cut])
    frames = decoder.feed(memoryview(first_buffer), owned=True)
    assert frames == [FIRST, Ping(7)]
    payload = frames[0].payload  # type: ignore[union-attr]
    assert isinstance(payload, memoryview) and payload.obj is first_buffer  # not copied
    # The next receive lands in another buffer; the first is not written again.
    frames += decoder.feed(memoryview(bytearray(WIRE[cut:])), owned=True)
    assert frames == [FIRST, Ping(7), SECOND, THIRD]
    assert bytes(payload) == FIRST.payload
    assert decoder.buffered == 0


def test_a_held_back_frame_completed_by_an_owned_buffer() -> None:
    decoder = FrameDecoder()
    wire = bytes(encode_many([FIRST, SECOND]))
    assert decoder.feed(memoryview(bytearray(wire[:5])), owned=True) == []  # inside the header
    assert decoder.buffered == 5
    second_buffer = bytearray(wire[5:])
    frames = decoder.feed(memoryview(second_buffer), owned=True)
    assert frames == [FIRST, SECOND]
    assert frames[1].payload.obj is second_buffer  # type: ignore[union-attr]  # not copied


def test_an_unowned_buffer_is_copied_out_of_before_it_is_reused() -> None:
    decoder = FrameDecoder()
    scratch = bytearray(len(WIRE))
    scratch[:] = WIRE
    frames = decoder.feed(memoryview(scratch)[: len(WIRE) - HEADER_SIZE])  # THIRD held back
    scratch[:] = b"\x00" * len(scratch)  # the carrier reuses its buffer for the next receive
    assert frames == [FIRST, Ping(7), SECOND]
    assert all(type(frame.payload) is bytes for frame in frames if type(frame) is Data)
