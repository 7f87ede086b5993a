"""ACK and STREAM_CREDIT — the answers a bulk sender reads — decode on the decoder's fast
path exactly as the general path does, and encode to the same bytes (issue 18 item 6)."""

from __future__ import annotations

import itertools
import struct

import pytest

from accessfabric.errors import LocalProtocolError, ProtocolError
from accessfabric.wire import Ack, Data, Frame, FrameDecoder, StreamCredit, encode_many
from accessfabric.wire.decoder import decode_frame
from accessfabric.wire.limits import DEFAULT_MAX_FRAME_SIZE, MAX_STREAM_ID, MAX_U32, MAX_U64
from accessfabric.wire.registry import Flags, FrameType

HEADER = struct.Struct(">IBI")
STREAM_IDS = [0, 1, 2, MAX_STREAM_ID, MAX_STREAM_ID + 1, 0xFFFFFFFF]
FLAGS = [0, int(Flags.IGNORABLE), int(Flags.END_STREAM), 0x80]


def _raw(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload) << 8 | frame_type, flags, stream_id) + payload


def _general(frame_type: int, flags: int, stream_id: int, payload: bytes) -> Frame | type:
    try:
        return decode_frame(frame_type, flags, stream_id, memoryview(payload))
    except ProtocolError as error:
        return type(error)


def _fast(raw: bytes, kind: type) -> Frame | type:
    try:
        frames = FrameDecoder().feed(kind(raw))
    except ProtocolError as error:
        return type(error)
    assert len(frames) == 1
    return frames[0]


PAYLOADS = {
    FrameType.ACK: [
        struct.pack(">QI", 0, 0),
        struct.pack(">QI", 1 << 40, 65536),
        struct.pack(">QI", MAX_U64, MAX_U32),
        struct.pack(">QI", 5, 6) + b"\0",  # one byte too long
        struct.pack(">QI", 5, 6)[:-1] + b"\0" * 5,  # 16 bytes: long enough for a DATA header
    ],
    FrameType.STREAM_CREDIT: [
        struct.pack(">Q", 0),
        struct.pack(">Q", 1 << 20),
        struct.pack(">Q", MAX_U64),
        struct.pack(">Q", 7) + b"\0",
        struct.pack(">Q", 7) + b"\0" * 4,
    ],
}


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("frame_type", sorted(PAYLOADS))
def test_fast_path_decodes_as_the_general_path(frame_type: FrameType, kind: type) -> None:
    cases = itertools.product(FLAGS, STREAM_IDS, PAYLOADS[frame_type])
    for flags, stream_id, payload in cases:
        raw = _raw(frame_type, flags, stream_id, payload)
        expected = _general(frame_type, flags, stream_id, payload)
        assert _fast(raw, kind) == expected, (frame_type, flags, stream_id, payload.hex())


def test_answers_between_data_frames_in_any_split() -> None:
    """A reader's batch: DATA of the largest size, answers, DATA, cut at every offset
    around the answers (the answers' fast path, the DATA fast path and the held-back
    frame path all meet here)."""
    big = bytes(range(256)) * ((DEFAULT_MAX_FRAME_SIZE - 8) // 256)
    frames: list[Frame] = [
        Data(1, 0, big),
        Ack(2, MAX_U64, MAX_U32),
        StreamCredit(0, 1 << 30),
        StreamCredit(2, 99),
        Ack(MAX_STREAM_ID, 0, 0),
        Data(1, len(big), b"tail", True),
    ]
    stream = bytes(encode_many(frames))
    assert len(stream) - 2 * 17 - 4 - len(big) == 21 + 17 + 17 + 21
    first_end = 17 + len(big)
    buffer = bytearray(len(stream))
    for cut in range(first_end - 20, first_end + 21 + 17 + 17 + 21 + 20):
        for kind in (bytes, memoryview):
            decoder = FrameDecoder()
            got: list[Frame] = []
            for start, end in ((0, cut), (cut, len(stream))):
                if kind is bytes:
                    got += decoder.feed(stream[start:end])
                else:  # the carrier's reused receive buffer, overwritten after each feed
                    buffer[: end - start] = stream[start:end]
                    got += decoder.feed(memoryview(buffer)[: end - start])
                    buffer[:] = bytes(len(buffer))
            assert got == frames, (cut, kind)
            assert decoder.buffered == 0


def test_answers_one_byte_at_a_time() -> None:
    frames: list[Frame] = [Ack(3, 12345, 678), StreamCredit(0, 1 << 40), StreamCredit(3, 5)]
    stream = bytes(encode_many(frames))
    decoder = FrameDecoder()
    got: list[Frame] = []
    for i in range(len(stream)):
        got += decoder.feed(stream[i : i + 1])
    assert got == frames


@pytest.mark.parametrize(
    "frame",
    [
        Ack(1, 0, 0),
        Ack(MAX_STREAM_ID, MAX_U64, MAX_U32),
        StreamCredit(0, 0),
        StreamCredit(MAX_STREAM_ID, MAX_U64),
    ],
)
def test_answers_encode_to_the_header_and_body(frame: Ack | StreamCredit) -> None:
    if isinstance(frame, Ack):
        body = struct.pack(">QI", frame.offset, frame.window)
    else:
        body = struct.pack(">Q", frame.max_offset)
    raw = _raw(frame.frame_type, 0, frame.stream_id, body)
    assert frame.to_bytes() == raw
    assert FrameDecoder().feed(raw) == [frame]


@pytest.mark.parametrize(
    "frame",
    [
        Ack(0, 1, 1),
        Ack(-1, 1, 1),
        Ack(MAX_STREAM_ID + 1, 1, 1),
        Ack(1, MAX_U64 + 1, 1),
        Ack(1, -1, 1),
        Ack(1, 1, MAX_U32 + 1),
        Ack(1, 1, -1),
        StreamCredit(-1, 1),
        StreamCredit(MAX_STREAM_ID + 1, 1),
        StreamCredit(1, MAX_U64 + 1),
        StreamCredit(1, -1),
    ],
)
def test_answers_out_of_range_do_not_encode(frame: Ack | StreamCredit) -> None:
    with pytest.raises(LocalProtocolError):
        frame.to_bytes()
