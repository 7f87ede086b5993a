"""A hostile peer: every violation gets its documented error code, read back off the wire.

Each test takes an established pair and feeds hand-encoded frames to the
acceptor ``b`` (so peer streams are odd), then decodes what ``b`` sends back.
Stream-level violations reset only that stream; session-level ones end the
session with GOAWAY.
"""

from __future__ import annotations

import secrets
import struct

import pytest

from accessfabric.errors import ErrorCode, LocalProtocolError
from accessfabric.session import Session, SessionConfig, SessionState
from accessfabric.session import events as ev
from accessfabric.wire import (
    Ack,
    Auth,
    CloseStream,
    Data,
    Frame,
    Goaway,
    OpenStream,
    Ping,
    Pong,
    ResetStream,
    SessionReady,
    StreamCredit,
    TrafficClass,
    UnknownFrame,
    encode,
)
from tests.session.pair import authenticator, make_pair, received_bytes
from tests.session.peer_frames import (
    feed,
    goaway_code,
    of_type,
    reset_codes,
    sent_frames,
    terminated,
)


def acceptor(config: SessionConfig | None = None) -> Session:
    """An acceptor that finished a real handshake and has nothing left to send."""
    session = make_pair(None, config).b
    assert session.data_to_send(now=0.0) == b""
    return session


def open_(stream_id: int, traffic_class: TrafficClass = TrafficClass.RELIABLE) -> OpenStream:
    return OpenStream(stream_id, f"svc-{stream_id}", traffic_class)


def assert_session_alive(session: Session, frames: list[Frame]) -> None:
    assert not of_type(frames, Goaway)
    assert session.state is SessionState.READY
    assert session.terminated is None


def assert_session_failed(session: Session, events: list[ev.Event], code: ErrorCode) -> None:
    end = terminated(events)
    assert end.error_code == code
    assert end.remote is False
    assert goaway_code(sent_frames(session)) == code
    assert session.state is SessionState.CLOSED
    # A closed session ignores whatever else arrives and sends nothing more.
    assert session.receive_data(encode(Ping(1)), 0.0) == []
    assert session.data_to_send(now=0.0) == b""


# ---------------------------------------------------------------- flow control


def test_stream_credit_violation_resets_only_that_stream() -> None:
    b = acceptor(SessionConfig(initial_stream_window=4096))
    events = feed(b, open_(1), open_(3), Data(1, 0, b"a" * 4096), Data(3, 0, b"before"))
    assert received_bytes(events, 1) == b"a" * 4096
    sent_frames(b)

    events = feed(b, Data(1, 4096, b"!"), Data(3, 6, b" after"))
    (reset,) = of_type(events, ev.StreamReset)
    assert (reset.stream_id, reset.error_code, reset.remote) == (
        1,
        ErrorCode.FLOW_CONTROL_ERROR,
        False,
    )
    assert received_bytes(events, 3) == b" after"
    frames = sent_frames(b)
    assert reset_codes(frames) == {1: ErrorCode.FLOW_CONTROL_ERROR}
    assert_session_alive(b, frames)
    assert b.metrics().resets_by_code == {ErrorCode.FLOW_CONTROL_ERROR: 1}

    # Late DATA on the reset stream is dropped quietly; stream 3 keeps flowing.
    events = feed(b, Data(1, 4097, b"late"), Data(3, 12, b"!"), CloseStream(3, 13))
    assert received_bytes(events, 1) == b""
    assert received_bytes(events, 3) == b"!"
    assert of_type(events, ev.StreamEnded)[0].stream_id == 3
    frames = sent_frames(b)
    assert reset_codes(frames) == {}
    assert_session_alive(b, frames)


def test_one_oversized_frame_is_a_stream_credit_violation() -> None:
    b = acceptor(SessionConfig(initial_stream_window=4096))
    events = feed(b, open_(1), Data(1, 0, b"x" * 4097))
    assert not of_type(events, ev.DataReceived)
    assert reset_codes(sent_frames(b)) == {1: ErrorCode.FLOW_CONTROL_ERROR}


def test_session_credit_violation_is_goaway_flow_control_error() -> None:
    config = SessionConfig(
        initial_stream_window=16384, initial_session_window=16384, max_session_window=16384
    )
    b = acceptor(config)
    # Half the session window leaves half of it: no grant yet, the limit is still 16384.
    events = feed(b, open_(1), open_(3), Data(1, 0, b"a" * 8192))
    assert len(received_bytes(events, 1)) == 8192
    assert_session_alive(b, sent_frames(b))
    # A frame one byte past the credit granted so far is a session-level violation,
    # whichever stream carries it (stream 3 is still within its own window).
    events = feed(b, Data(3, 0, b"c" * 8193))
    assert_session_failed(b, events, ErrorCode.FLOW_CONTROL_ERROR)


def test_session_credit_returns_as_bytes_arrive_once_each() -> None:
    """Session credit comes back when DATA arrives, read or not, and once per byte.

    Grants never exceed bytes received + window, whatever resets and late
    application ACKs happen, so a peer cannot get more than a window in flight
    (ADR 0014).  What a stream holds unread stays within the stream's window.
    """
    window = 8192
    config = SessionConfig(
        initial_stream_window=window,
        max_stream_window=window,
        initial_session_window=window,
        max_session_window=window,
    )
    b = acceptor(config)
    feed(b, open_(1), Data(1, 0, b"x" * 5000))  # nobody reads it
    grants = [f.max_offset for f in of_type(sent_frames(b), StreamCredit) if f.stream_id == 0]
    assert grants == [5000 + window], "credit returns on arrival, before any read"
    feed(b, Data(1, 5000, b"y" * 100, True))
    events = feed(b, Data(1, 5100, b"z" * 3000))  # DATA after END: stream 1 is reset
    assert of_type(events, ev.StreamReset)[0].error_code == ErrorCode.STREAM_CLOSED
    b.acknowledge_received(1, 5100)  # the application's late ACK frees nothing more
    events = feed(b, open_(3), Data(3, 0, b"z" * 5000))  # 13100 in all: within 13192
    assert len(received_bytes(events, 3)) == 5000
    grants += [f.max_offset for f in of_type(sent_frames(b), StreamCredit) if f.stream_id == 0]
    assert grants == [5000 + window, 13100 + window]  # once per byte received, no more
    assert b.metrics().unread_bytes == 5000  # stream 3's; the reset freed stream 1's
    # Past the credit granted so far is still the session's violation.
    events = feed(b, Data(3, 5000, b"z" * 3000), Data(3, 8000, b"z" * 192), open_(5))
    events += feed(b, Data(5, 0, b"!" * (window + 1)))
    assert_session_failed(b, events, ErrorCode.FLOW_CONTROL_ERROR)


@pytest.mark.parametrize("close_first", [False, True], ids=["open", "closed"])
def test_acknowledging_bytes_of_a_reset_stream_grants_nothing(close_first: bool) -> None:
    """The reset frees the stream's unread bytes; the application's late ACK grants nothing."""
    window = 8192
    config = SessionConfig(
        initial_stream_window=window,
        max_stream_window=window,
        initial_session_window=window,
        max_session_window=window,
    )
    b = acceptor(config)
    events = feed(b, open_(1), Data(1, 0, b"x" * 5000, close_first))
    assert len(received_bytes(events, 1)) == 5000
    if close_first:
        b.send_data(1, b"reply", end_stream=True)  # unacknowledged: the stream stays known
    sent_frames(b)
    events = feed(b, ResetStream(1, ErrorCode.CANCEL))
    assert of_type(events, ev.StreamReset)[0].remote is True
    b.acknowledge_received(1, 5000)  # the application consumed what it was given
    assert not of_type(sent_frames(b), StreamCredit)
    # Acknowledging more than arrived is still refused on a live stream.
    feed(b, open_(3), Data(3, 0, b"y" * 10))
    with pytest.raises(LocalProtocolError):
        b.acknowledge_received(3, 11)


# ---------------------------------------------------------------- stream ids


@pytest.mark.parametrize(
    "frames",
    [
        [open_(1), open_(1)],
        [open_(5), open_(3)],
        [open_(1), ResetStream(1, ErrorCode.CANCEL), open_(1)],
        [open_(1), Data(1, 0, b"done", True), open_(1)],
    ],
    ids=["same-id", "lower-id", "after-reset", "after-end"],
)
def test_stream_id_reuse_is_goaway_invalid_stream_id(frames: list[Frame]) -> None:
    b = acceptor()
    events = feed(b, *frames)
    assert_session_failed(b, events, ErrorCode.INVALID_STREAM_ID)


def test_open_with_our_parity_is_goaway_invalid_stream_id() -> None:
    b = acceptor()
    assert_session_failed(b, feed(b, open_(2)), ErrorCode.INVALID_STREAM_ID)
    a = make_pair().a  # the dialer owns the odd ids
    events = feed(a, open_(1))
    end = terminated(events)
    assert end.error_code == ErrorCode.INVALID_STREAM_ID
    assert goaway_code(sent_frames(a)) == ErrorCode.INVALID_STREAM_ID


@pytest.mark.parametrize(
    "frame",
    [
        Data(7, 0, b"hello"),
        Data(7, 0, b"", True),
        Ack(7, 0, 100),
        StreamCredit(7, 1000),
        CloseStream(7, 0),
        ResetStream(7, ErrorCode.CANCEL),
        Data(2, 0, b"on a stream we never opened"),
        StreamCredit(4, 1000),
    ],
    ids=lambda f: f"{type(f).__name__}-{f.stream_id}",
)
def test_frame_on_a_never_opened_stream_is_invalid_stream_id(frame: Frame) -> None:
    b = acceptor()
    events = feed(b, open_(1), frame)
    assert_session_failed(b, events, ErrorCode.INVALID_STREAM_ID)


def test_streams_beyond_max_concurrent_are_refused() -> None:
    b = acceptor(SessionConfig(max_concurrent_streams=2))
    events = feed(b, open_(1), open_(3), open_(5), Data(1, 0, b"one"))
    assert [e.stream_id for e in of_type(events, ev.StreamOpened)] == [1, 3]
    assert received_bytes(events, 1) == b"one"
    frames = sent_frames(b)
    assert reset_codes(frames) == {5: ErrorCode.REFUSED_STREAM}
    assert_session_alive(b, frames)
    # DATA the peer sent before it saw the refusal is dropped quietly.
    events = feed(b, Data(5, 0, b"in flight"))
    assert not of_type(events, ev.DataReceived)
    assert_session_alive(b, sent_frames(b))
    # Once a stream ends, a new one fits again.
    events = feed(b, ResetStream(1, ErrorCode.CANCEL), open_(7))
    assert [e.stream_id for e in of_type(events, ev.StreamOpened)] == [7]
    assert reset_codes(sent_frames(b)) == {}
    assert b.metrics().resets_by_code.get(ErrorCode.REFUSED_STREAM) == 1


# ---------------------------------------------------------------- stream-level violations


def test_data_after_end_resets_only_that_stream() -> None:
    b = acceptor()
    events = feed(b, open_(1), open_(3), Data(1, 0, b"abc", True), Data(3, 0, b"x"))
    assert of_type(events, ev.StreamEnded)[0].final_offset == 3
    sent_frames(b)
    events = feed(b, Data(1, 3, b"more"), Data(3, 1, b"y"))
    (reset,) = of_type(events, ev.StreamReset)
    assert (reset.stream_id, reset.error_code) == (1, ErrorCode.STREAM_CLOSED)
    assert received_bytes(events, 1) == b""
    assert received_bytes(events, 3) == b"y"
    frames = sent_frames(b)
    assert reset_codes(frames) == {1: ErrorCode.STREAM_CLOSED}
    assert_session_alive(b, frames)


def test_a_second_end_resets_the_stream() -> None:
    b = acceptor()
    feed(b, open_(1), Data(1, 0, b"abc", True))
    sent_frames(b)
    events = feed(b, CloseStream(1, 3))
    assert of_type(events, ev.StreamReset)[0].error_code == ErrorCode.STREAM_CLOSED
    assert reset_codes(sent_frames(b)) == {1: ErrorCode.STREAM_CLOSED}


def test_resent_bytes_before_the_end_are_ignored() -> None:
    b = acceptor()
    feed(b, open_(1), Data(1, 0, b"abc", True))
    sent_frames(b)
    events = feed(b, Data(1, 0, b"abc", True))  # a retransmission, not a violation
    assert events == []
    assert reset_codes(sent_frames(b)) == {}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (Data(1, 10, b"gap"), ErrorCode.PROTOCOL_ERROR),
        (CloseStream(1, 2), ErrorCode.PROTOCOL_ERROR),
        (CloseStream(1, 9), ErrorCode.PROTOCOL_ERROR),
        (Ack(1, 1, 100), ErrorCode.PROTOCOL_ERROR),
    ],
    ids=["data-gap", "close-short", "close-long", "ack-unsent"],
)
def test_stream_level_violations_reset_the_stream(frame: Frame, code: ErrorCode) -> None:
    b = acceptor()
    feed(b, open_(1), open_(3), Data(1, 0, b"hello"))
    sent_frames(b)
    events = feed(b, frame, Data(3, 0, b"still here"))
    (reset,) = of_type(events, ev.StreamReset)
    assert (reset.stream_id, reset.error_code, reset.remote) == (1, code, False)
    assert received_bytes(events, 3) == b"still here"
    frames = sent_frames(b)
    assert reset_codes(frames) == {1: code}
    assert_session_alive(b, frames)


def test_reset_with_an_unknown_code_keeps_the_number() -> None:
    b = acceptor()
    feed(b, open_(1))
    events = feed(b, ResetStream(1, 0xDEAD))
    (reset,) = of_type(events, ev.StreamReset)
    assert (reset.error_code, reset.remote) == (0xDEAD, True)
    assert b.metrics().resets_by_code == {0xDEAD: 1}
    assert_session_alive(b, sent_frames(b))


@pytest.mark.parametrize(
    "frame",
    [
        Auth(b"\x01" * 64),
        SessionReady(1, 65536, 1 << 16, 1 << 20, 10),
    ],
    ids=lambda f: type(f).__name__,
)
def test_handshake_frames_after_ready_are_a_protocol_error(frame: Frame) -> None:
    b = acceptor()
    assert_session_failed(b, feed(b, frame), ErrorCode.PROTOCOL_ERROR)


def test_hello_after_ready_is_a_protocol_error() -> None:
    pair = make_pair()
    hello = Session(
        dialer=True, authenticator=authenticator(0), random_bytes=secrets.token_bytes, now=0.0
    ).data_to_send(now=0.0)
    events = pair.b.receive_data(hello, 0.0)
    assert_session_failed(pair.b, events, ErrorCode.PROTOCOL_ERROR)


# ---------------------------------------------------------------- garbage


def _header(length: int, frame_type: int, flags: int, stream_id: int) -> bytes:
    return struct.pack(">IBI", length << 8 | frame_type, flags, stream_id)


GARBAGE = [
    pytest.param(b"\xff" * 32, ErrorCode.FRAME_SIZE_ERROR, id="all-ones"),
    pytest.param(_header(70_000, 0x06, 0, 0), ErrorCode.FRAME_SIZE_ERROR, id="too-long"),
    pytest.param(_header(7, 0x06, 0, 0) + bytes(7), ErrorCode.FRAME_SIZE_ERROR, id="short-ping"),
    pytest.param(_header(4, 0x00, 0, 1) + bytes(4), ErrorCode.FRAME_SIZE_ERROR, id="short-data"),
    pytest.param(_header(0, 0x3F, 0, 0), ErrorCode.UNKNOWN_FRAME_TYPE, id="unknown-type"),
    pytest.param(_header(8, 0x06, 0x01, 0) + bytes(8), ErrorCode.FRAME_FORMAT_ERROR, id="flags"),
    pytest.param(
        _header(8, 0x06, 0, 1 << 31) + bytes(8), ErrorCode.FRAME_FORMAT_ERROR, id="reserved-bit"
    ),
    pytest.param(
        _header(9, 0x0A, 0, 0) + bytes(8) + b"\xff", ErrorCode.FRAME_FORMAT_ERROR, id="bad-utf8"
    ),
    pytest.param(_header(8, 0x06, 0, 5) + bytes(8), ErrorCode.INVALID_STREAM_ID, id="ping-on-5"),
    pytest.param(_header(8, 0x00, 0, 0) + bytes(8), ErrorCode.INVALID_STREAM_ID, id="data-on-0"),
]


@pytest.mark.parametrize(("garbage", "code"), GARBAGE)
def test_garbage_is_goaway_with_a_frame_error_code(garbage: bytes, code: ErrorCode) -> None:
    b = acceptor()
    events = b.receive_data(garbage, 0.0)
    assert_session_failed(b, events, code)


@pytest.mark.parametrize(("garbage", "code"), GARBAGE)
def test_garbage_one_byte_at_a_time_fails_once(garbage: bytes, code: ErrorCode) -> None:
    b = acceptor()
    events: list[ev.Event] = []
    for i in range(len(garbage)):
        events += b.receive_data(garbage[i : i + 1], 0.0)
    assert len(of_type(events, ev.SessionTerminated)) == 1
    assert_session_failed(b, events, code)


def test_unknown_frame_with_ignorable_is_dropped() -> None:
    b = acceptor()
    events = feed(b, UnknownFrame(0x3F, 0x80, 0, b"future"), UnknownFrame(0x40, 0x81, 9, b""))
    assert events == []
    assert_session_alive(b, sent_frames(b))
    assert b.ignored_frames == 2


# ---------------------------------------------------------------- control floods


def test_pings_up_to_the_control_queue_limit_are_answered() -> None:
    b = acceptor(SessionConfig(max_control_queue=16))
    events = feed(b, *(Ping(i) for i in range(16)))
    assert events == []
    frames = sent_frames(b)
    assert [f.opaque for f in of_type(frames, Pong)] == list(range(16))
    assert_session_alive(b, frames)


def test_pings_drained_between_chunks_never_count_as_a_flood() -> None:
    b = acceptor(SessionConfig(max_control_queue=4))
    for i in range(100):
        assert feed(b, *(Ping(i * 4 + j) for j in range(4))) == []
        assert len(of_type(sent_frames(b), Pong)) == 4
    assert b.state is SessionState.READY


def test_ping_flood_is_enhance_your_calm() -> None:
    b = acceptor(SessionConfig(max_control_queue=16))
    events = feed(b, *(Ping(i) for i in range(17)))
    assert_session_failed(b, events, ErrorCode.ENHANCE_YOUR_CALM)


def test_refused_stream_flood_is_enhance_your_calm() -> None:
    """Every refused OPEN_STREAM queues a RESET_STREAM: a flood of them is a control flood."""
    b = acceptor(SessionConfig(max_concurrent_streams=1, max_control_queue=16))
    events = feed(b, *(open_(i) for i in range(1, 2 * 17, 2)))  # one accepted, 16 refused
    assert [e.stream_id for e in of_type(events, ev.StreamOpened)] == [1]
    frames = sent_frames(b)
    assert len(reset_codes(frames)) == 16
    assert_session_alive(b, frames)
    events = feed(b, *(open_(i) for i in range(35, 35 + 2 * 17, 2)))  # 17 refused at once
    assert_session_failed(b, events, ErrorCode.ENHANCE_YOUR_CALM)


def test_stream_violation_flood_is_enhance_your_calm() -> None:
    """Streams opened only to be reset for a violation cannot grow the control queue either."""
    b = acceptor(SessionConfig(max_control_queue=16))
    flood: list[Frame] = []
    for stream_id in range(1, 2 * 40, 2):
        flood += [open_(stream_id), Data(stream_id, 5, b"gap")]
    events = feed(b, *flood)
    assert_session_failed(b, events, ErrorCode.ENHANCE_YOUR_CALM)
