"""Every bound at its edge (at the limit accepted, one over rejected) on encode and on decode;
stream-id rules, flags, the reserved bit and unknown frame types."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from accessfabric.errors import ErrorCode, LocalProtocolError, ProtocolError
from accessfabric.wire import (
    Ack,
    Auth,
    CloseStream,
    Data,
    Flags,
    Frame,
    FrameDecoder,
    FrameType,
    Goaway,
    Hello,
    NodePressure,
    OpenStream,
    Ping,
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
    MAX_CAPABILITIES,
    MAX_FRAME_SIZE_CAP,
    MAX_GOAWAY_REASON,
    MAX_KEY_EXCHANGE,
    MAX_NODE_ID,
    MAX_NODE_RECORD,
    MAX_PRESSURE_LEVEL,
    MAX_RESUME_TOKEN,
    MAX_ROUTE_LEASE,
    MAX_SERVICE_NAME,
    MAX_SIGNATURE,
    MAX_STREAM_ID,
    MAX_U32,
    MAX_U64,
    MAX_VERSIONS,
    MIN_MAX_FRAME_SIZE,
)

from .strategies import UNKNOWN_TYPE_CODES, sample_frames

KEY = b"\x01" * 32
NONCE = b"\x02" * 32
SAMPLES = sample_frames()


def raw(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes((frame_type, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def decode(data: bytes, max_frame_size: int = MAX_FRAME_SIZE_CAP) -> list[Frame]:
    decoder = FrameDecoder(max_frame_size)
    frames = decoder.feed(data)
    assert decoder.buffered == 0
    return frames


def decode_error(data: bytes, max_frame_size: int = MAX_FRAME_SIZE_CAP) -> ErrorCode:
    with pytest.raises(ProtocolError) as caught:
        FrameDecoder(max_frame_size).feed(data)
    return caught.value.error_code


def open_payload(
    service: bytes = b"svc",
    token: bytes = b"",
    kex: bytes = b"",
    lease: bytes = b"",
    traffic_class: int = 3,
) -> bytes:
    return b"".join(
        (
            bytes((traffic_class,)),
            bytes(16),
            bytes((len(service),)),
            service,
            bytes((len(token),)),
            token,
            len(kex).to_bytes(2, "big"),
            kex,
            len(lease).to_bytes(2, "big"),
            lease,
        )
    )


def hello_payload(
    versions: tuple[int, ...] = (1,),
    node_id: bytes = b"a",
    caps: bytes = b"",
    record: bytes = b"",
) -> bytes:
    return b"".join(
        (
            bytes((len(versions),)),
            b"".join(v.to_bytes(2, "big") for v in versions),
            KEY,
            NONCE,
            bytes((len(node_id),)),
            node_id,
            len(caps).to_bytes(2, "big"),
            caps,
            len(record).to_bytes(2, "big"),
            record,
        )
    )


# --- length bounds: (frame at the limit, frame one over) on encode ------------------------


def edge(
    make: Callable[[int], Frame], limit: int
) -> tuple[Callable[[], Frame], Callable[[], Frame]]:
    """The frames ``make`` builds at ``limit`` and at one over it."""
    return lambda: make(limit), lambda: make(limit + 1)


EDGES: dict[str, tuple[Callable[[], Frame], Callable[[], Frame]]] = {
    "service bytes": edge(lambda n: OpenStream(1, "s" * n, TrafficClass.BULK), MAX_SERVICE_NAME),
    "service bytes, not characters": (
        lambda: OpenStream(1, "é" * 127 + "a", TrafficClass.BULK),
        lambda: OpenStream(1, "é" * 128, TrafficClass.BULK),
    ),
    "service not empty": (
        lambda: OpenStream(1, "s", TrafficClass.BULK),
        lambda: OpenStream(1, "", TrafficClass.BULK),
    ),
    "resume token": edge(
        lambda n: OpenStream(1, "s", TrafficClass.BULK, resume_token=b"t" * n), MAX_RESUME_TOKEN
    ),
    "key exchange": edge(
        lambda n: OpenStream(1, "s", TrafficClass.BULK, key_exchange=b"k" * n), MAX_KEY_EXCHANGE
    ),
    "route lease": edge(
        lambda n: OpenStream(1, "s", TrafficClass.BULK, route_lease=b"l" * n), MAX_ROUTE_LEASE
    ),
    "node id": edge(lambda n: Hello((1,), "n" * n, KEY, NONCE), MAX_NODE_ID),
    "node id not empty": (
        lambda: Hello((1,), "n", KEY, NONCE),
        lambda: Hello((1,), "", KEY, NONCE),
    ),
    "versions": (
        lambda: Hello(tuple(range(1, MAX_VERSIONS + 1)), "n", KEY, NONCE),
        lambda: Hello(tuple(range(1, MAX_VERSIONS + 2)), "n", KEY, NONCE),
    ),
    "versions not empty": (
        lambda: Hello((1,), "n", KEY, NONCE),
        lambda: Hello((), "n", KEY, NONCE),
    ),
    "version value": (
        lambda: Hello((0xFFFF,), "n", KEY, NONCE),
        lambda: Hello((0x10000,), "n", KEY, NONCE),
    ),
    "version 0 reserved": (
        lambda: Hello((1,), "n", KEY, NONCE),
        lambda: Hello((0,), "n", KEY, NONCE),
    ),
    "public key size": (
        lambda: Hello((1,), "n", KEY, NONCE),
        lambda: Hello((1,), "n", KEY + b"\x00", NONCE),
    ),
    "nonce size": (
        lambda: Hello((1,), "n", KEY, NONCE),
        lambda: Hello((1,), "n", KEY, NONCE[:-1]),
    ),
    "capabilities": edge(lambda n: Hello((1,), "n", KEY, NONCE, b"c" * n), MAX_CAPABILITIES),
    "node record": edge(lambda n: Hello((1,), "n", KEY, NONCE, b"", b"r" * n), MAX_NODE_RECORD),
    "signature": (lambda: Auth(b"s" * MAX_SIGNATURE), lambda: Auth(b"s" * (MAX_SIGNATURE + 1))),
    "signature not empty": (lambda: Auth(b"s"), lambda: Auth(b"")),
    "goaway reason": edge(lambda n: Goaway(0, 0, "r" * n), MAX_GOAWAY_REASON),
    "goaway reason bytes, not characters": (
        lambda: Goaway(0, 0, "€" * (MAX_GOAWAY_REASON // 3) + "r"),
        lambda: Goaway(0, 0, "€" * (MAX_GOAWAY_REASON // 3) + "rr"),
    ),
    "goaway last stream id": edge(lambda n: Goaway(n, 0), MAX_STREAM_ID),
    "route update not empty": (lambda: RouteUpdate(b"x"), lambda: RouteUpdate(b"")),
    "pressure": edge(lambda n: NodePressure(0, 0, 0, n), MAX_PRESSURE_LEVEL),
    "max frame size low": (
        lambda: SessionReady(1, MIN_MAX_FRAME_SIZE, 0, 0, 0),
        lambda: SessionReady(1, MIN_MAX_FRAME_SIZE - 1, 0, 0, 0),
    ),
    "max frame size high": edge(lambda n: SessionReady(1, n, 0, 0, 0), MAX_FRAME_SIZE_CAP),
    "session-ready version": (
        lambda: SessionReady(0xFFFF, MIN_MAX_FRAME_SIZE, 0, 0, 0),
        lambda: SessionReady(0x10000, MIN_MAX_FRAME_SIZE, 0, 0, 0),
    ),
    "u32 window": (lambda: Ack(1, 0, MAX_U32), lambda: Ack(1, 0, MAX_U32 + 1)),
    "u32 error code": (lambda: ResetStream(1, MAX_U32), lambda: ResetStream(1, MAX_U32 + 1)),
    "u64 offset": (lambda: Data(1, MAX_U64, b""), lambda: Data(1, MAX_U64 + 1, b"")),
    "u64 credit": (lambda: StreamCredit(0, MAX_U64), lambda: StreamCredit(0, MAX_U64 + 1)),
    "u64 opaque": (lambda: Ping(MAX_U64), lambda: Ping(MAX_U64 + 1)),
    "stream id": (lambda: Ack(MAX_STREAM_ID, 0, 0), lambda: Ack(MAX_STREAM_ID + 1, 0, 0)),
    "data stream id": edge(lambda n: Data(n, 0, b""), MAX_STREAM_ID),
    "negative": (lambda: CloseStream(1, 0), lambda: CloseStream(1, -1)),
}


@pytest.mark.parametrize("name", sorted(EDGES))
def test_encode_at_the_limit_and_one_over(name: str) -> None:
    at_limit, over = EDGES[name]
    frame = at_limit()
    assert decode(encode(frame)) == [frame]
    with pytest.raises(LocalProtocolError):
        encode(over())


def test_encoder_hard_cap_on_frame_size() -> None:
    at_cap = Data(1, 0, bytes(MAX_FRAME_SIZE_CAP - 8))
    assert len(encode(at_cap)) == HEADER_SIZE + MAX_FRAME_SIZE_CAP
    with pytest.raises(LocalProtocolError):
        encode(Data(1, 0, bytes(MAX_FRAME_SIZE_CAP - 7)))
    with pytest.raises(LocalProtocolError):
        encode_into_fresh(Data(1, 0, bytes(MAX_FRAME_SIZE_CAP - 7)))
    with pytest.raises(LocalProtocolError):
        encode(RouteUpdate(bytes(MAX_FRAME_SIZE_CAP + 1)))


def encode_into_fresh(frame: Frame) -> bytearray:
    out = bytearray()
    frame.encode_into(out)
    return out


# --- length bounds on decode: (payload at the limit, payload one over, expected code) -----

F = FrameType
FORMAT = ErrorCode.FRAME_FORMAT_ERROR
SIZE = ErrorCode.FRAME_SIZE_ERROR


def decode_edge(make: Callable[[int], bytes], limit: int) -> tuple[bytes, bytes, ErrorCode]:
    """The frame bytes ``make`` builds at ``limit`` and at one over it (a format error)."""
    return make(limit), make(limit + 1), FORMAT


DECODE_EDGES: dict[str, tuple[bytes, bytes, ErrorCode]] = {
    "service bytes (u8 length: 255 is the most it can say)": (
        raw(F.OPEN_STREAM, 0, 1, open_payload(service=b"s" * MAX_SERVICE_NAME)),
        raw(F.OPEN_STREAM, 0, 1, open_payload(service=b"")),
        FORMAT,
    ),
    "resume token": decode_edge(
        lambda n: raw(F.OPEN_STREAM, 0, 1, open_payload(token=b"t" * n)), MAX_RESUME_TOKEN
    ),
    "key exchange": decode_edge(
        lambda n: raw(F.OPEN_STREAM, 0, 1, open_payload(kex=b"k" * n)), MAX_KEY_EXCHANGE
    ),
    "route lease": decode_edge(
        lambda n: raw(F.OPEN_STREAM, 0, 1, open_payload(lease=b"l" * n)), MAX_ROUTE_LEASE
    ),
    "traffic class": (
        raw(F.OPEN_STREAM, 0, 1, open_payload(traffic_class=max(TrafficClass))),
        raw(F.OPEN_STREAM, 0, 1, open_payload(traffic_class=max(TrafficClass) + 1)),
        FORMAT,
    ),
    "node id": decode_edge(
        lambda n: raw(F.HELLO, 0, 0, hello_payload(node_id=b"n" * n)), MAX_NODE_ID
    ),
    "versions": (
        raw(F.HELLO, 0, 0, hello_payload(versions=tuple(range(1, MAX_VERSIONS + 1)))),
        raw(F.HELLO, 0, 0, hello_payload(versions=tuple(range(1, MAX_VERSIONS + 2)))),
        FORMAT,
    ),
    "versions not empty": (
        raw(F.HELLO, 0, 0, hello_payload(versions=(1,))),
        raw(F.HELLO, 0, 0, hello_payload(versions=())),
        FORMAT,
    ),
    "capabilities": decode_edge(
        lambda n: raw(F.HELLO, 0, 0, hello_payload(caps=b"c" * n)), MAX_CAPABILITIES
    ),
    "node record": decode_edge(
        lambda n: raw(F.HELLO, 0, 0, hello_payload(record=b"r" * n)), MAX_NODE_RECORD
    ),
    "signature": decode_edge(lambda n: raw(F.AUTH, 0, 0, b"s" * n), MAX_SIGNATURE),
    "goaway reason": decode_edge(
        lambda n: raw(F.GOAWAY, 0, 0, bytes(8) + b"r" * n), MAX_GOAWAY_REASON
    ),
    "goaway last stream id": decode_edge(
        lambda n: raw(F.GOAWAY, 0, 0, n.to_bytes(4, "big") + bytes(4)), MAX_STREAM_ID
    ),
    "pressure": decode_edge(
        lambda n: raw(F.NODE_PRESSURE, 0, 0, bytes((n, 0, 0, 0))), MAX_PRESSURE_LEVEL
    ),
    "max frame size": (
        raw(F.SESSION_READY, 0, 0, encode(SessionReady(1, MIN_MAX_FRAME_SIZE, 0, 0, 0))[9:]),
        raw(
            F.SESSION_READY, 0, 0, encode(SessionReady(1, MIN_MAX_FRAME_SIZE, 0, 0, 0))[9:]
        ).replace(
            MIN_MAX_FRAME_SIZE.to_bytes(4, "big"), (MIN_MAX_FRAME_SIZE - 1).to_bytes(4, "big")
        ),
        FORMAT,
    ),
    "data needs its offset": (raw(F.DATA, 0, 1, bytes(8)), raw(F.DATA, 0, 1, bytes(7)), SIZE),
    "stream id": decode_edge(lambda n: raw(F.ACK, 0, n, bytes(12)), MAX_STREAM_ID),
}


@pytest.mark.parametrize("name", sorted(DECODE_EDGES))
def test_decode_at_the_limit_and_one_over(name: str) -> None:
    at_limit, over, code = DECODE_EDGES[name]
    (frame,) = decode(at_limit)
    assert encode(frame) == at_limit
    assert decode_error(over) == code


@pytest.mark.parametrize("max_frame_size", [MIN_MAX_FRAME_SIZE, DEFAULT_MAX_FRAME_SIZE])
def test_decoder_max_frame_size_edge(max_frame_size: int) -> None:
    at_limit = encode(Data(1, 0, bytes(max_frame_size - 8)))
    assert len(decode(at_limit, max_frame_size)) == 1
    over = encode(Data(1, 0, bytes(max_frame_size - 7)))
    assert decode_error(over, max_frame_size) == ErrorCode.FRAME_SIZE_ERROR
    assert decode_error(over[:HEADER_SIZE], max_frame_size) == ErrorCode.FRAME_SIZE_ERROR


def test_default_max_frame_size_is_64_kib() -> None:
    assert FrameDecoder().max_frame_size == DEFAULT_MAX_FRAME_SIZE == 65536


@pytest.mark.parametrize("size", [MIN_MAX_FRAME_SIZE - 1, MAX_FRAME_SIZE_CAP + 1, 0, -1])
def test_decoder_max_frame_size_setting_is_bounded(size: int) -> None:
    with pytest.raises(LocalProtocolError):
        FrameDecoder(size)
    decoder = FrameDecoder()
    with pytest.raises(LocalProtocolError):
        decoder.set_max_frame_size(size)
    decoder.set_max_frame_size(MAX_FRAME_SIZE_CAP)
    assert decoder.max_frame_size == MAX_FRAME_SIZE_CAP


@pytest.mark.parametrize("length", [12 - 1, 12 + 1])
def test_fixed_size_payload_off_by_one(length: int) -> None:
    assert decode_error(raw(F.ACK, 0, 1, bytes(length))) == ErrorCode.FRAME_SIZE_ERROR


# --- stream ids, flags, reserved bit -------------------------------------------------------

NONZERO_ONLY = {"DATA", "OPEN_STREAM", "ACK", "CLOSE_STREAM", "RESET_STREAM"}
EITHER = {"STREAM_CREDIT"}


def with_header(frame: Frame, *, flags: int | None = None, stream_id: int | None = None) -> bytes:
    data = bytearray(encode(frame))
    if flags is not None:
        data[4] = flags
    if stream_id is not None:
        data[5:9] = stream_id.to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize("name", [t.name for t in FrameType])
def test_stream_id_rules(name: str) -> None:
    frame = SAMPLES[name]
    on_zero = with_header(frame, stream_id=0)
    on_stream = with_header(frame, stream_id=5)
    if name in NONZERO_ONLY:
        assert decode_error(on_zero) == ErrorCode.INVALID_STREAM_ID
        assert len(decode(on_stream)) == 1
    elif name in EITHER:
        assert decode(on_zero) == [StreamCredit(0, frame.max_offset)]  # type: ignore[attr-defined]
        assert decode(on_stream) == [StreamCredit(5, frame.max_offset)]  # type: ignore[attr-defined]
    else:
        assert decode(on_zero) == [frame]
        assert decode_error(on_stream) == ErrorCode.INVALID_STREAM_ID


@pytest.mark.parametrize(
    "frame",
    [
        Data(0, 0, b""),
        OpenStream(0, "s", TrafficClass.BULK),
        Ack(0, 0, 0),
        CloseStream(0, 0),
        ResetStream(0, ErrorCode.CANCEL),
    ],
    ids=lambda frame: type(frame).__name__,
)
def test_encoder_refuses_stream_zero_for_stream_frames(frame: Frame) -> None:
    with pytest.raises(LocalProtocolError):
        encode(frame)


ALLOWED_FLAGS = {"DATA": Flags.END_STREAM, "OPEN_STREAM": Flags.RESUME}


@pytest.mark.parametrize("name", [t.name for t in FrameType])
@pytest.mark.parametrize("bit", range(8))
def test_flags(name: str, bit: int) -> None:
    flag = 1 << bit
    data = with_header(SAMPLES[name], flags=flag)
    allowed = ALLOWED_FLAGS.get(name, 0) | Flags.IGNORABLE
    if flag & allowed:
        (frame,) = decode(data)
        if name == "DATA":
            assert isinstance(frame, Data) and frame.end_stream == (flag == Flags.END_STREAM)
        if name == "OPEN_STREAM":
            assert isinstance(frame, OpenStream) and frame.resume == (flag == Flags.RESUME)
    else:
        assert decode_error(data) == ErrorCode.FRAME_FORMAT_ERROR


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_reserved_stream_bit(name: str) -> None:
    data = bytearray(encode(SAMPLES[name]))
    data[5] |= 0x80
    assert decode_error(bytes(data)) == ErrorCode.FRAME_FORMAT_ERROR


def test_unknown_frame_types() -> None:
    assert len(UNKNOWN_TYPE_CODES) == 256 - len(FrameType)
    for code in UNKNOWN_TYPE_CODES:
        ignorable = raw(code, Flags.IGNORABLE, 3, b"abc")
        assert decode(ignorable) == [UnknownFrame(code, Flags.IGNORABLE, 3, b"abc")]
        assert decode_error(raw(code, 0x7F, 3, b"abc")) == ErrorCode.UNKNOWN_FRAME_TYPE


def test_unknown_frame_between_known_frames_is_decoded_and_the_rest_continues() -> None:
    data = encode(Ping(1)) + raw(0x40, Flags.IGNORABLE, 0, b"x" * 10) + encode(Ping(2))
    assert decode(data) == [Ping(1), UnknownFrame(0x40, Flags.IGNORABLE, 0, b"x" * 10), Ping(2)]


def test_unknown_error_codes_are_kept_as_integers() -> None:
    (known,) = decode(raw(F.RESET_STREAM, 0, 1, int(ErrorCode.CANCEL).to_bytes(4, "big")))
    assert isinstance(known, ResetStream) and known.error_code is ErrorCode.CANCEL
    (unknown,) = decode(raw(F.RESET_STREAM, 0, 1, (0x99).to_bytes(4, "big")))
    assert isinstance(unknown, ResetStream)
    assert unknown.error_code == 0x99 and not isinstance(unknown.error_code, ErrorCode)
    (goaway,) = decode(raw(F.GOAWAY, 0, 0, bytes(4) + MAX_U32.to_bytes(4, "big")))
    assert isinstance(goaway, Goaway) and goaway.error_code == MAX_U32
