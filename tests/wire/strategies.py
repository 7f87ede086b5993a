"""Hypothesis strategies for valid frames of every type, and one fixed sample frame per type."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st

from accessfabric.errors import ErrorCode
from accessfabric.wire import (
    Ack,
    Auth,
    CloseStream,
    Data,
    Flags,
    Frame,
    FrameType,
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
)
from accessfabric.wire.limits import (
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

hypothesis_bytes_warning = pytest.mark.filterwarnings(
    "ignore:Comparison between bytes and:BytesWarning:hypothesis.internal.cache"
)
"""Under ``python -bb`` Hypothesis's own choice cache can compare a bytes choice with an int
one (``hash(b"") == hash(0)``) and raise BytesWarning inside Hypothesis; only there is it
ignored -- a bytes/str mix-up in the code under test still fails."""

UNKNOWN_TYPE_CODES = [code for code in range(256) if code not in FrameType._value2member_map_]

stream_ids = st.one_of(st.sampled_from([1, 2, MAX_STREAM_ID]), st.integers(1, MAX_STREAM_ID))
u64s = st.one_of(st.sampled_from([0, 1, MAX_U64]), st.integers(0, MAX_U64))
u32s = st.one_of(st.sampled_from([0, 1, MAX_U32]), st.integers(0, MAX_U32))
error_codes = st.one_of(st.sampled_from(list(ErrorCode)), u32s)


def utf8_text(low: int, high: int) -> st.SearchStrategy[str]:
    """Text (no surrogates) whose UTF-8 encoding has ``low..high`` bytes."""

    def trim(text: str) -> str:
        while len(text.encode("utf-8")) > high:
            text = text[:-1]
        return text

    return (
        st.text(st.characters(codec="utf-8"), min_size=low, max_size=high)
        .map(trim)
        .filter(lambda text: len(text.encode("utf-8")) >= low)
    )


def blobs(low: int, high: int, *, typical: int = 300) -> st.SearchStrategy[bytes]:
    """Bytes of ``low..high``, usually short, sometimes exactly at the bound."""
    short = st.binary(min_size=low, max_size=min(high, typical))
    return st.one_of(short, short, st.just(b"\xab" * high), st.just(b"\xcd" * low))


FRAME_STRATEGIES: dict[str, st.SearchStrategy[Frame]] = {
    "DATA": st.builds(Data, stream_ids, u64s, blobs(0, 4000), st.booleans()),
    "OPEN_STREAM": st.builds(
        OpenStream,
        stream_ids,
        utf8_text(1, MAX_SERVICE_NAME),
        st.sampled_from(list(TrafficClass)),
        u64s,
        u64s,
        st.booleans(),
        blobs(0, MAX_RESUME_TOKEN),
        blobs(0, MAX_KEY_EXCHANGE),
        blobs(0, MAX_ROUTE_LEASE),
    ),
    "ACK": st.builds(Ack, stream_ids, u64s, u32s),
    "STREAM_CREDIT": st.builds(StreamCredit, st.one_of(st.just(0), stream_ids), u64s),
    "CLOSE_STREAM": st.builds(CloseStream, stream_ids, u64s),
    "RESET_STREAM": st.builds(ResetStream, stream_ids, error_codes),
    "PING": st.builds(Ping, u64s),
    "PONG": st.builds(Pong, u64s),
    "ROUTE_UPDATE": st.builds(RouteUpdate, blobs(1, 20000)),
    "NODE_PRESSURE": st.builds(NodePressure, *[st.integers(0, MAX_PRESSURE_LEVEL)] * 4),
    "GOAWAY": st.builds(
        Goaway, st.integers(0, MAX_STREAM_ID), error_codes, utf8_text(0, MAX_GOAWAY_REASON)
    ),
    "HELLO": st.builds(
        Hello,
        st.lists(st.integers(1, 0xFFFF), min_size=1, max_size=MAX_VERSIONS).map(tuple),
        utf8_text(1, MAX_NODE_ID),
        st.binary(min_size=32, max_size=32),
        st.binary(min_size=32, max_size=32),
        blobs(0, MAX_CAPABILITIES),
        blobs(0, MAX_NODE_RECORD),
    ),
    "AUTH": st.builds(Auth, blobs(1, MAX_SIGNATURE)),
    "SESSION_READY": st.builds(
        SessionReady,
        st.integers(0, 0xFFFF),
        st.one_of(
            st.sampled_from([MIN_MAX_FRAME_SIZE, MAX_FRAME_SIZE_CAP]),
            st.integers(MIN_MAX_FRAME_SIZE, MAX_FRAME_SIZE_CAP),
        ),
        u32s,
        u32s,
        u32s,
        u64s,
        u64s,
    ),
    "UNKNOWN": st.builds(
        UnknownFrame,
        st.sampled_from(UNKNOWN_TYPE_CODES),
        st.integers(0, 0x7F).map(lambda low: low | Flags.IGNORABLE),
        st.integers(0, MAX_STREAM_ID),
        st.binary(max_size=300),
    ),
}
assert set(FRAME_STRATEGIES) == {t.name for t in FrameType} | {"UNKNOWN"}

any_frame: st.SearchStrategy[Frame] = st.one_of(*FRAME_STRATEGIES.values())


def sample_frames() -> dict[str, Frame]:
    """One fixed, valid frame of every type (and an ignorable unknown one)."""
    return {
        "DATA": Data(1, 0, b"payload bytes", False),
        "OPEN_STREAM": OpenStream(
            3, "ssh", TrafficClass.INTERACTIVE, 7, 0, False, b"", b"\x01" * 32, b"lease"
        ),
        "ACK": Ack(3, 100, 65536),
        "STREAM_CREDIT": StreamCredit(0, 1 << 20),
        "CLOSE_STREAM": CloseStream(3, 100),
        "RESET_STREAM": ResetStream(5, ErrorCode.CANCEL),
        "PING": Ping(42),
        "PONG": Pong(42),
        "ROUTE_UPDATE": RouteUpdate(b"\x02" * 40),
        "NODE_PRESSURE": NodePressure(10, 20, 30, 40),
        "GOAWAY": Goaway(7, ErrorCode.NO_ERROR, "bye"),
        "HELLO": Hello((1,), "node-a", b"\x11" * 32, b"\x22" * 32, b"caps", b"record"),
        "AUTH": Auth(b"\x33" * 64),
        "SESSION_READY": SessionReady(1, 65536, 262144, 1 << 20, 100, 1, 2),
        "UNKNOWN": UnknownFrame(0x3F, Flags.IGNORABLE, 0, b"future"),
    }
