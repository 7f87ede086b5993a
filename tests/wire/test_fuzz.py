"""Fuzzing: for any bytes only ProtocolError leaves the decoder; for any field values only
LocalProtocolError leaves the encoder (websockets ``fuzzing/`` style, run under Hypothesis)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accessfabric.errors import (
    ErrorCode,
    FrameSizeError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from accessfabric.tools import fuzz
from accessfabric.wire import (
    Ack,
    Auth,
    CloseStream,
    Data,
    Flags,
    Frame,
    FrameDecoder,
    Goaway,
    Hello,
    NodePressure,
    OpenStream,
    Ping,
    Pong,
    ResetStream,
    RouteUpdate,
    SessionReady,
    StreamCredit,
    TrafficClass,
    UnknownFrame,
    encode,
)
from accessfabric.wire.limits import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    MAX_FRAME_SIZE_CAP,
    MIN_MAX_FRAME_SIZE,
)

from .strategies import any_frame, hypothesis_bytes_warning

pytestmark = hypothesis_bytes_warning

VECTORS = Path(__file__).parents[1] / "vectors" / "frames.json"
max_frame_sizes = st.sampled_from([MIN_MAX_FRAME_SIZE, DEFAULT_MAX_FRAME_SIZE])


def decode_only_protocol_errors(
    data: bytes, max_frame_size: int, cuts: list[int] | None = None
) -> list[Frame] | None:
    """Decode ``data``; return the frames, or None after a ProtocolError.  Anything else fails."""
    decoder = FrameDecoder(max_frame_size)
    frames: list[Frame] = []
    start = 0
    try:
        for end in [*sorted(cuts or []), len(data)]:
            frames += decoder.feed(data[start:end])
            start = end
            assert decoder.buffered < HEADER_SIZE + max_frame_size
    except ProtocolError as error:
        assert isinstance(error, RemoteProtocolError)
        assert isinstance(error.error_code, ErrorCode)
        return None
    return frames


# --- decoder: random bytes -----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), max_frame_sizes)
def test_random_bytes(data: bytes, max_frame_size: int) -> None:
    decode_only_protocol_errors(data, max_frame_size)


@settings(max_examples=500, deadline=None)
@given(
    type_code=st.integers(0, 255),
    flags=st.integers(0, 255),
    stream_id=st.one_of(st.sampled_from([0, 1, 1 << 31]), st.integers(0, (1 << 32) - 1)),
    payload=st.binary(max_size=300),
    length_delta=st.sampled_from([0, 0, 0, -1, 1, 1 << 20]),
    trailing=st.binary(max_size=20),
)
def test_random_frames_with_a_plausible_header(
    type_code: int, flags: int, stream_id: int, payload: bytes, length_delta: int, trailing: bytes
) -> None:
    length = min(max(len(payload) + length_delta, 0), MAX_FRAME_SIZE_CAP)
    data = (
        length.to_bytes(3, "big")
        + bytes((type_code, flags))
        + stream_id.to_bytes(4, "big")
        + payload
        + trailing
    )
    decode_only_protocol_errors(data, DEFAULT_MAX_FRAME_SIZE)


# --- decoder: mutations of valid encodings -------------------------------------------------

mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16), st.just(0)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 16)),
    st.tuples(st.just("splice"), st.integers(0, 1 << 16), st.integers(0, 1 << 16)),
    st.tuples(st.just("huge_length"), st.integers(0, 32), st.integers(0, (1 << 24) - 1)),
)


def apply(data: bytearray, frame_starts: list[int], mutation: tuple[str, int, int]) -> None:
    op, where, arg = mutation
    if not data:
        return
    at = where % len(data)
    if op == "flip":
        data[at] ^= 1 << arg
    elif op == "set":
        data[at] = arg
    elif op == "truncate":
        del data[at:]
    elif op == "delete":
        del data[at : at + arg]
    elif op == "splice":  # copy a run of the input over another place
        source = arg % len(data)
        data[at : at + 16] = data[source : source + 16]
    else:  # "huge_length": rewrite the length field of one frame
        start = frame_starts[where % len(frame_starts)]
        if start + 3 <= len(data):
            data[start : start + 3] = arg.to_bytes(3, "big")


@settings(max_examples=400, deadline=None)
@given(
    frames=st.lists(any_frame, min_size=1, max_size=5),
    mutation_list=st.lists(mutations, min_size=1, max_size=4),
    max_frame_size=max_frame_sizes,
    data=st.data(),
)
def test_mutated_valid_streams(
    frames: list[Frame],
    mutation_list: list[tuple[str, int, int]],
    max_frame_size: int,
    data: st.DataObject,
) -> None:
    encoded = [encode(f) for f in frames]
    starts = [sum(len(e) for e in encoded[:i]) for i in range(len(encoded))]
    wire = bytearray(b"".join(encoded))
    for mutation in mutation_list:
        apply(wire, starts, mutation)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=10))
    whole = decode_only_protocol_errors(bytes(wire), max_frame_size)
    chunked = decode_only_protocol_errors(bytes(wire), max_frame_size, cuts)
    assert (whole is None) == (chunked is None)
    if whole is not None:
        assert whole == chunked
        for frame in whole:  # whatever the decoder accepts, the encoder can write
            assert FrameDecoder(max_frame_size).feed(encode(frame)) == [frame]


def test_fuzz_module_campaign_runs_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert fuzz.main(["--inputs", "3000", "--seed", "7", "--vectors", str(VECTORS)]) == 0
    out = capsys.readouterr().out
    assert "vectors in the seed corpus" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("fuzz: 3000 inputs, ") and ", 0 crashes, " in last


def test_fuzz_module_reports_a_crash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken_feed(self: FrameDecoder, data: bytes | bytearray | memoryview) -> list[Frame]:
        raise IndexError("planted bug")

    monkeypatch.setattr(FrameDecoder, "feed", broken_feed)
    assert fuzz.main(["--inputs", "10", "--seed", "1", "--vectors", "/nonexistent"]) == 1
    captured = capsys.readouterr()
    assert "input hex: " in captured.err and "planted bug" in captured.err


# --- decoder: the max_frame_size guard -----------------------------------------------------


@pytest.mark.parametrize("max_frame_size", [MIN_MAX_FRAME_SIZE, DEFAULT_MAX_FRAME_SIZE, 1 << 20])
@pytest.mark.parametrize("claimed", [MAX_FRAME_SIZE_CAP, "max+1"])
def test_oversized_header_is_rejected_before_any_payload_is_buffered(
    max_frame_size: int, claimed: int | str
) -> None:
    length = max_frame_size + 1 if claimed == "max+1" else claimed
    assert isinstance(length, int)
    head = length.to_bytes(3, "big") + bytes((0, 0)) + (1).to_bytes(4, "big")
    decoder = FrameDecoder(max_frame_size)
    for byte in head[:-1]:
        assert decoder.feed(bytes((byte,))) == []
    assert decoder.buffered == HEADER_SIZE - 1
    with pytest.raises(FrameSizeError):
        decoder.feed(head[-1:] + bytes(4096))
    assert decoder.buffered < HEADER_SIZE
    with pytest.raises(FrameSizeError):
        FrameDecoder(max_frame_size).feed(head + bytes(100_000))


def test_frame_of_exactly_max_frame_size_is_buffered_until_complete() -> None:
    head = MIN_MAX_FRAME_SIZE.to_bytes(3, "big") + bytes((0x08, 0, 0, 0, 0, 0))
    decoder = FrameDecoder(MIN_MAX_FRAME_SIZE)
    assert decoder.feed(head + bytes(MIN_MAX_FRAME_SIZE - 1)) == []
    assert decoder.buffered == HEADER_SIZE + MIN_MAX_FRAME_SIZE - 1
    assert decoder.feed(b"\x01") == [RouteUpdate(bytes(MIN_MAX_FRAME_SIZE - 1) + b"\x01")]


# --- encoder: any field value gives bytes or LocalProtocolError ----------------------------

any_int = st.one_of(
    st.integers(),
    st.sampled_from([-1, 0, 1 << 31, (1 << 31) - 1, 1 << 32, 1 << 64, (1 << 64) - 1, 1 << 100]),
)
any_text = st.one_of(
    st.text(max_size=300),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
    st.tuples(st.text(max_size=20), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)).map(
        "".join
    ),
)
any_bytes = st.one_of(st.binary(max_size=40), st.integers(0, 10_000).map(lambda n: b"\x00" * n))

unchecked_frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(Data, any_int, any_int, any_bytes, st.booleans()),
    st.builds(
        OpenStream,
        any_int,
        any_text,
        st.one_of(st.sampled_from(list(TrafficClass)), any_int),
        any_int,
        any_int,
        st.booleans(),
        any_bytes,
        any_bytes,
        any_bytes,
    ),
    st.builds(Ack, any_int, any_int, any_int),
    st.builds(StreamCredit, any_int, any_int),
    st.builds(CloseStream, any_int, any_int),
    st.builds(ResetStream, any_int, any_int),
    st.builds(Ping, any_int),
    st.builds(Pong, any_int),
    st.builds(RouteUpdate, any_bytes),
    st.builds(NodePressure, any_int, any_int, any_int, any_int),
    st.builds(Goaway, any_int, any_int, any_text),
    st.builds(
        Hello,
        st.lists(any_int, max_size=20).map(tuple),
        any_text,
        any_bytes,
        any_bytes,
        any_bytes,
        any_bytes,
    ),
    st.builds(Auth, any_bytes),
    st.builds(SessionReady, any_int, any_int, any_int, any_int, any_int, any_int, any_int),
    st.builds(UnknownFrame, any_int, any_int, any_int, any_bytes),
)


@settings(max_examples=800, deadline=None)
@given(unchecked_frames)
def test_encoder_raises_only_local_protocol_error(frame: Frame) -> None:
    try:
        wire = encode(frame)
    except LocalProtocolError:
        return
    # Whatever the encoder writes, the decoder (at the hard cap) reads back unchanged.
    assert FrameDecoder(MAX_FRAME_SIZE_CAP).feed(wire) == [frame]


@pytest.mark.parametrize(
    "frame",
    [
        OpenStream(1, "svc\udc80", TrafficClass.BULK),
        OpenStream(1, "svc", 6),  # type: ignore[arg-type]
        OpenStream(1, "svc", -1),  # type: ignore[arg-type]
        Goaway(0, ErrorCode.NO_ERROR, "\ud800"),
        Hello((1,), "node\udfff", bytes(32), bytes(32)),
        UnknownFrame(0x100, Flags.IGNORABLE, 0, b""),
        UnknownFrame(-1, Flags.IGNORABLE, 0, b""),
        UnknownFrame(0x3F, 0, 0, b""),
        UnknownFrame(0x3F, 0x1FF, 0, b""),
        UnknownFrame(0x00, Flags.IGNORABLE, 0, b""),
        Data(-1, 0, b""),
        Data(1, -1, b""),
        Data(1, 1 << 64, b""),
        Ping(1 << 64),
        ResetStream(1, 1 << 32),
        NodePressure(0, 0, 0, -1),
        SessionReady(1 << 16, DEFAULT_MAX_FRAME_SIZE, 0, 0, 0),
        Hello((1 << 16,), "a", bytes(32), bytes(32)),
    ],
    ids=lambda frame: type(frame).__name__,
)
def test_encoder_rejects_out_of_range_fields(frame: Frame) -> None:
    with pytest.raises(LocalProtocolError):
        encode(frame)


def test_unknown_frame_with_ignorable_round_trips() -> None:
    frame = UnknownFrame(0x3F, Flags.IGNORABLE, 5, b"x")
    assert FrameDecoder().feed(encode(frame)) == [frame]
