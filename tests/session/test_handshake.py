"""The HELLO / AUTH / SESSION_READY handshake: success, chunking, negotiation and every refusal."""

from __future__ import annotations

import dataclasses
import random
import secrets
from collections.abc import Callable

import pytest

from accessfabric.errors import ErrorCode, LocalProtocolError
from accessfabric.session import Event, Session, SessionConfig, SessionState
from accessfabric.session import events as ev
from accessfabric.wire import (
    MAX_FRAME_SIZE_CAP,
    PROTOCOL_VERSION,
    Auth,
    Data,
    Frame,
    FrameDecoder,
    Hello,
    OpenStream,
    Ping,
    SessionReady,
    StreamCredit,
    TrafficClass,
    encode,
)
from tests.session.pair import Pair, authenticator, make_pair, received_bytes
from tests.session.peer_frames import goaway_code, of_type, sent_frames, terminated

Rewrite = Callable[[list[Frame]], list[Frame]]


class Exchange:
    """Pump two sessions by hand, keeping every frame each side sent."""

    def __init__(self, a: Session, b: Session, rewrite_a: Rewrite | None = None) -> None:
        self.a, self.b = a, b
        self.rewrite_a = rewrite_a
        self.from_a: list[Frame] = []
        self.from_b: list[Frame] = []
        self.events_a: list[Event] = []
        self.events_b: list[Event] = []

    def run(self, rounds: int = 20) -> Exchange:
        for _ in range(rounds):
            out_a = self.a.data_to_send(now=0.0)
            out_b = self.b.data_to_send(now=0.0)
            if not out_a and not out_b:
                return self
            frames_a = FrameDecoder(MAX_FRAME_SIZE_CAP).feed(out_a)
            if self.rewrite_a is not None:
                frames_a = self.rewrite_a(frames_a)
                out_a = b"".join(encode(frame) for frame in frames_a)
            self.from_a += frames_a
            self.from_b += FrameDecoder(MAX_FRAME_SIZE_CAP).feed(out_b)
            if out_a:
                self.events_b += self.b.receive_data(out_a, 0.0)
            if out_b:
                self.events_a += self.a.receive_data(out_b, 0.0)
        raise AssertionError("exchange did not settle")


def sessions(
    config_a: SessionConfig | None = None,
    config_b: SessionConfig | None = None,
    *,
    binding_a: bytes = b"channel",
    binding_b: bytes = b"channel",
    auth_a: int = 0,
    auth_b: int = 1,
    expected_by_a: int | None = None,
) -> tuple[Session, Session]:
    a = Session(
        dialer=True,
        authenticator=authenticator(auth_a, expected_peer=expected_by_a),
        random_bytes=secrets.token_bytes,
        config=config_a,
        channel_binding=binding_a,
        now=0.0,
    )
    b = Session(
        dialer=False,
        authenticator=authenticator(auth_b),
        random_bytes=secrets.token_bytes,
        config=config_b,
        channel_binding=binding_b,
        now=0.0,
    )
    return a, b


def assert_refused(events: list[Event], code: ErrorCode, *, remote: bool) -> None:
    assert not of_type(events, ev.SessionReady)
    end = terminated(events)
    assert end.error_code == code
    assert end.remote is remote


# ---------------------------------------------------------------- success


def test_handshake_reports_peer_identity_and_limits_on_both_sides() -> None:
    config_a = SessionConfig(max_frame_size=32 * 1024, max_concurrent_streams=7, route_epoch=5)
    config_b = SessionConfig(initial_stream_window=12345, peer_epoch=9)
    a, b = sessions(config_a, config_b)
    exchange = Exchange(a, b).run()

    (ready_a,) = of_type(exchange.events_a, ev.SessionReady)
    (ready_b,) = of_type(exchange.events_b, ev.SessionReady)
    assert ready_a.peer_node_id == authenticator(1).node_id
    assert ready_a.peer_public_key == authenticator(1).public_key
    assert ready_b.peer_node_id == authenticator(0).node_id
    assert ready_b.peer_public_key == authenticator(0).public_key
    assert ready_a.version == ready_b.version == PROTOCOL_VERSION
    # Each side reports the limits the *other* side announced.
    assert ready_b.peer_max_frame_size == 32 * 1024
    assert ready_b.peer_max_concurrent_streams == 7
    assert ready_b.route_epoch == 5
    assert ready_a.peer_max_frame_size == b.config.max_frame_size
    assert ready_a.peer_epoch == 9
    assert a.state is b.state is SessionState.READY
    assert a.peer_node_id == authenticator(1).node_id
    # The handshake is exactly HELLO, AUTH, SESSION_READY from each side; once ready,
    # each side probes the RTT once (PING) and answers the other's probe (PONG).
    for frames in (exchange.from_a, exchange.from_b):
        kinds = [type(frame) for frame in frames]
        assert kinds[:3] == [Hello, Auth, SessionReady]
        assert sorted(k.__name__ for k in kinds[3:]) == ["Ping", "Pong"]
    (announced,) = of_type(exchange.from_b, SessionReady)
    assert announced.initial_stream_window == 12345
    # No event before the handshake other than SessionReady.
    assert exchange.events_a == [ready_a]
    assert exchange.events_b == [ready_b]


def test_session_refuses_user_actions_before_ready() -> None:
    a, _ = sessions()
    with pytest.raises(LocalProtocolError):
        a.open_stream("svc")
    with pytest.raises(LocalProtocolError):
        a.ping(0.0)
    assert a.state is SessionState.AWAIT_HELLO


# ---------------------------------------------------------------- chunking


def _normalise(event: Event) -> object:
    if isinstance(event, ev.DataReceived):
        return ("data", event.stream_id, bytes(event.data), event.offset)
    if isinstance(event, ev.StreamOpened):
        # The resume token is random per stream; everything else must match.
        return dataclasses.replace(event, resume_token=b"")
    return event


def _run_transfer(byte_at_a_time: bool) -> tuple[list[object], list[object], bytes, bytes]:
    a, b = sessions()
    events_a: list[Event] = []
    events_b: list[Event] = []

    def pump() -> None:
        for _ in range(1000):
            out_a, out_b = a.data_to_send(now=0.0), b.data_to_send(now=0.0)
            if not out_a and not out_b:
                return
            for out, session, events in ((out_a, b, events_b), (out_b, a, events_a)):
                if byte_at_a_time:
                    for i in range(len(out)):
                        events += session.receive_data(out[i : i + 1], 0.0)
                elif out:
                    events += session.receive_data(out, 0.0)
        raise AssertionError("did not settle")

    pump()
    upload = bytes(range(256)) * 90  # 23 040 bytes, several DATA frames
    stream_id = a.open_stream("files", TrafficClass.BULK, route_id=3, key_exchange=b"kx")
    a.send_data(stream_id, upload[:10_000])
    a.send_data(stream_id, upload[10_000:], end_stream=True)
    pump()
    b.send_data(stream_id, b"thanks", end_stream=True)
    b.acknowledge_received(stream_id, len(upload))
    pump()
    a.acknowledge_received(stream_id, 6)
    pump()
    return (
        [_normalise(e) for e in events_a],
        [_normalise(e) for e in events_b],
        received_bytes(events_b, stream_id),
        received_bytes(events_a, stream_id),
    )


def test_byte_at_a_time_gives_the_same_events_as_whole_chunks() -> None:
    whole = _run_transfer(byte_at_a_time=False)
    bytewise = _run_transfer(byte_at_a_time=True)
    assert bytewise == whole
    events_a, events_b, upload, reply = whole
    assert upload == bytes(range(256)) * 90
    assert reply == b"thanks"
    assert isinstance(events_a[0], ev.SessionReady)
    assert isinstance(events_b[0], ev.SessionReady)
    assert any(isinstance(e, ev.StreamEnded) for e in events_b)
    assert any(isinstance(e, ev.StreamEnded) for e in events_a)


def test_handshake_split_at_every_byte_boundary() -> None:
    """Two chunks, cut at each possible offset of the acceptor's first flight."""
    a0, b0 = sessions()
    first = b0.data_to_send(now=0.0)  # b's HELLO
    for cut in range(1, len(first)):
        a, _ = sessions()
        assert a.receive_data(first[:cut], 0.0) == []
        assert a.state is SessionState.AWAIT_HELLO
        assert a.receive_data(first[cut:], 0.0) == []
        assert a.state is SessionState.AWAIT_AUTH
    assert a0.state is SessionState.AWAIT_HELLO


# ---------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("ours", "theirs", "chosen"),
    [
        ((1, 2, 3), (3, 2), 3),
        ((1, 2), (2, 7), 2),
        ((9, 4, 1), (1, 4), 4),
        ((5,), (5,), 5),
    ],
)
def test_version_negotiation_picks_the_highest_common(
    ours: tuple[int, ...], theirs: tuple[int, ...], chosen: int
) -> None:
    a, b = sessions(SessionConfig(versions=ours), SessionConfig(versions=theirs))
    exchange = Exchange(a, b).run()
    (ready_a,) = of_type(exchange.events_a, ev.SessionReady)
    (ready_b,) = of_type(exchange.events_b, ev.SessionReady)
    assert ready_a.version == ready_b.version == chosen
    assert of_type(exchange.from_a, SessionReady)[0].version == chosen
    assert of_type(exchange.from_b, SessionReady)[0].version == chosen


def test_no_common_version_is_refused_with_unsupported_version() -> None:
    a, b = sessions(SessionConfig(versions=(1, 2)), SessionConfig(versions=(3,)))
    exchange = Exchange(a, b).run()
    assert goaway_code(exchange.from_a) == ErrorCode.UNSUPPORTED_VERSION
    assert goaway_code(exchange.from_b) == ErrorCode.UNSUPPORTED_VERSION
    assert_refused(exchange.events_a, ErrorCode.UNSUPPORTED_VERSION, remote=False)
    assert_refused(exchange.events_b, ErrorCode.UNSUPPORTED_VERSION, remote=False)
    assert not of_type(exchange.from_a, Auth)
    assert a.state is b.state is SessionState.CLOSED


def test_session_ready_with_another_version_is_refused() -> None:
    b = _to_state(SessionState.AWAIT_READY)
    events = b.receive_data(encode(SessionReady(PROTOCOL_VERSION + 1, 65536, 1000, 1000, 10)), 0.0)
    assert_refused(events, ErrorCode.UNSUPPORTED_VERSION, remote=False)
    assert goaway_code(sent_frames(b)) == ErrorCode.UNSUPPORTED_VERSION


# ---------------------------------------------------------------- out-of-order frames


def _to_state(state: SessionState) -> Session:
    """A fresh acceptor driven (with a real dialer's bytes) into a handshake state."""
    a, b = sessions()
    hello_b = b.data_to_send(now=0.0)
    if state is SessionState.AWAIT_AUTH:
        b.receive_data(a.data_to_send(now=0.0), 0.0)
    elif state is SessionState.AWAIT_READY:
        a.receive_data(hello_b, 0.0)  # a signs its AUTH
        b.receive_data(a.data_to_send(now=0.0), 0.0)  # HELLO + AUTH
    assert b.state is state
    b.data_to_send(now=0.0)
    return b


EARLY_FRAMES: list[Frame] = [
    Data(1, 0, b"early bytes"),
    Data(1, 0, b"", True),
    OpenStream(1, "svc", TrafficClass.RELIABLE),
    Ping(7),
    StreamCredit(0, 1 << 20),
    SessionReady(1, 65536, 1 << 16, 1 << 20, 10),
]


EARLY_CASES = [
    pytest.param(state, frame, id=f"{state.value}-{type(frame).__name__}-{i}")
    for state in (SessionState.AWAIT_HELLO, SessionState.AWAIT_AUTH, SessionState.AWAIT_READY)
    for i, frame in enumerate(EARLY_FRAMES)
    # SESSION_READY is the very frame AWAIT_READY waits for.
    if not (isinstance(frame, SessionReady) and state is SessionState.AWAIT_READY)
]


@pytest.mark.parametrize(("state", "frame"), EARLY_CASES)
def test_non_handshake_frame_before_ready_is_a_protocol_error(
    state: SessionState, frame: Frame
) -> None:
    session = _to_state(state)
    events = session.receive_data(encode(frame), 0.0)
    assert_refused(events, ErrorCode.PROTOCOL_ERROR, remote=False)
    out = sent_frames(session)
    assert goaway_code(out) == ErrorCode.PROTOCOL_ERROR
    assert not of_type(out, SessionReady)
    assert session.state is SessionState.CLOSED
    # Nothing else is processed afterwards.
    assert session.receive_data(encode(Ping(8)), 0.0) == []
    assert session.data_to_send(now=0.0) == b""


def test_second_hello_is_a_protocol_error() -> None:
    a, b = sessions()
    hello = a.data_to_send(now=0.0)
    b.data_to_send(now=0.0)
    b.receive_data(hello, 0.0)
    events = b.receive_data(hello, 0.0)
    assert_refused(events, ErrorCode.PROTOCOL_ERROR, remote=False)
    assert goaway_code(sent_frames(b)) == ErrorCode.PROTOCOL_ERROR


# ---------------------------------------------------------------- identity and proof


def test_wrong_expected_peer_is_identity_mismatch() -> None:
    a, b = sessions(expected_by_a=2)
    exchange = Exchange(a, b).run()
    assert goaway_code(exchange.from_a) == ErrorCode.IDENTITY_MISMATCH
    assert_refused(exchange.events_a, ErrorCode.IDENTITY_MISMATCH, remote=False)
    # b learns why from the GOAWAY and never becomes ready either.
    (goaway,) = of_type(exchange.events_b, ev.GoawayReceived)
    assert goaway.error_code == ErrorCode.IDENTITY_MISMATCH
    assert_refused(exchange.events_b, ErrorCode.IDENTITY_MISMATCH, remote=True)
    assert not of_type(exchange.from_a, SessionReady)


def test_right_expected_peer_is_accepted() -> None:
    a, b = sessions(expected_by_a=1)
    exchange = Exchange(a, b).run()
    assert of_type(exchange.events_a, ev.SessionReady)
    assert of_type(exchange.events_b, ev.SessionReady)


def _flip_bit(signature: bytes) -> bytes:
    return bytes([signature[0] ^ 0x01]) + signature[1:]


@pytest.mark.parametrize(
    "corrupt",
    [_flip_bit, lambda s: s[:-1], lambda s: s + b"\x00", lambda s: bytes(len(s))],
    ids=["bit-flip", "truncated", "extended", "zeroed"],
)
def test_corrupted_auth_signature_is_authentication_failed(
    corrupt: Callable[[bytes], bytes],
) -> None:
    def rewrite(frames: list[Frame]) -> list[Frame]:
        return [Auth(corrupt(f.signature)) if isinstance(f, Auth) else f for f in frames]

    a, b = sessions()
    exchange = Exchange(a, b, rewrite_a=rewrite).run()
    assert goaway_code(exchange.from_b) == ErrorCode.AUTHENTICATION_FAILED
    assert not of_type(exchange.from_b, SessionReady)
    assert_refused(exchange.events_b, ErrorCode.AUTHENTICATION_FAILED, remote=False)
    assert_refused(exchange.events_a, ErrorCode.AUTHENTICATION_FAILED, remote=True)


def test_different_channel_bindings_fail_authentication_on_both_sides() -> None:
    a, b = sessions(binding_a=b"tls-exporter:one", binding_b=b"tls-exporter:two")
    exchange = Exchange(a, b).run()
    assert goaway_code(exchange.from_a) == ErrorCode.AUTHENTICATION_FAILED
    assert goaway_code(exchange.from_b) == ErrorCode.AUTHENTICATION_FAILED
    assert_refused(exchange.events_a, ErrorCode.AUTHENTICATION_FAILED, remote=False)
    assert_refused(exchange.events_b, ErrorCode.AUTHENTICATION_FAILED, remote=False)


def test_equal_non_default_channel_bindings_succeed() -> None:
    a, b = sessions(binding_a=b"tls-exporter:same", binding_b=b"tls-exporter:same")
    exchange = Exchange(a, b).run()
    assert of_type(exchange.events_a, ev.SessionReady)
    assert of_type(exchange.events_b, ev.SessionReady)


def _first_flights(a: Session, b: Session) -> tuple[Auth, Auth]:
    """Exchange HELLOs; return the AUTH each side then sends."""
    hello_a, hello_b = a.data_to_send(now=0.0), b.data_to_send(now=0.0)
    a.receive_data(hello_b, 0.0)
    b.receive_data(hello_a, 0.0)
    (auth_a,) = of_type(FrameDecoder().feed(a.data_to_send(now=0.0)), Auth)
    (auth_b,) = of_type(FrameDecoder().feed(b.data_to_send(now=0.0)), Auth)
    return auth_a, auth_b


def test_reflected_auth_fails_even_when_the_peer_claims_our_identity() -> None:
    """The role label is what stops reflection: same key, same transcript, other role."""
    # Control: with the peer claiming a's own key, the peer's genuine AUTH is accepted.
    a, b = sessions(auth_b=0)
    _, genuine = _first_flights(a, b)
    assert a.receive_data(encode(genuine), 0.0) == []
    assert a.state is SessionState.AWAIT_READY

    # Reflection: a's own AUTH, over the very same transcript, is refused.
    a, b = sessions(auth_b=0)
    own, _ = _first_flights(a, b)
    events = a.receive_data(encode(own), 0.0)
    assert_refused(events, ErrorCode.AUTHENTICATION_FAILED, remote=False)
    assert goaway_code(sent_frames(a)) == ErrorCode.AUTHENTICATION_FAILED


def test_reflected_auth_fails_with_distinct_identities() -> None:
    a, b = sessions()
    own, _ = _first_flights(a, b)
    events = a.receive_data(encode(own), 0.0)
    assert_refused(events, ErrorCode.AUTHENTICATION_FAILED, remote=False)


# ---------------------------------------------------------------- timeout


def test_handshake_times_out_through_handle_timer() -> None:
    a, b = sessions(SessionConfig(handshake_timeout=5.0))
    b.receive_data(a.data_to_send(now=0.0), 0.0)  # the peer got our HELLO but answers nothing
    assert a.get_timer() == 5.0
    assert a.handle_timer(4.999) == []
    assert a.state is SessionState.AWAIT_HELLO
    events = a.handle_timer(5.0)
    assert_refused(events, ErrorCode.TIMEOUT, remote=False)
    assert goaway_code(sent_frames(a, now=5.0)) == ErrorCode.TIMEOUT
    assert a.get_timer() is None
    assert a.handle_timer(6.0) == []


def test_handshake_timeout_counts_from_the_construction_time() -> None:
    a = Session(
        dialer=True,
        authenticator=authenticator(0),
        random_bytes=secrets.token_bytes,
        config=SessionConfig(handshake_timeout=2.0),
        now=100.0,
    )
    assert a.get_timer() == 102.0
    assert a.handle_timer(101.0) == []
    assert terminated(a.handle_timer(102.5)).error_code == ErrorCode.TIMEOUT


def test_completed_handshake_does_not_time_out() -> None:
    config = SessionConfig(handshake_timeout=1.0, keepalive_interval=None)
    pair: Pair = make_pair(config, config)
    assert pair.a.get_timer() is None
    assert pair.a.handle_timer(50.0) == []
    assert pair.a.state is SessionState.READY


def test_a_version_1_node_and_a_default_node_fail_clearly() -> None:
    """Version 1 bound tls-unique, version 2 binds tls-exporter (ADR 0020): a default
    (version 2) session refuses a version-1-only peer with UNSUPPORTED_VERSION before
    any AUTH, never with a misleading AUTHENTICATION_FAILED."""
    assert SessionConfig().versions == (PROTOCOL_VERSION,) == (2,)
    a, b = sessions(SessionConfig(), SessionConfig(versions=(1,)))
    exchange = Exchange(a, b).run()
    assert goaway_code(exchange.from_a) == ErrorCode.UNSUPPORTED_VERSION
    assert goaway_code(exchange.from_b) == ErrorCode.UNSUPPORTED_VERSION
    assert not of_type(exchange.from_a, Auth) and not of_type(exchange.from_b, Auth)


def _transcript(seed: int) -> list[bytes]:
    """Every byte two sessions exchange (handshake, a stream, a PING) with seeded randomness."""
    a = Session(
        dialer=True,
        authenticator=authenticator(0),
        random_bytes=random.Random(seed).randbytes,
        now=0.0,
    )
    b = Session(
        dialer=False,
        authenticator=authenticator(1),
        random_bytes=random.Random(seed + 1).randbytes,
        now=0.0,
    )
    sent: list[bytes] = []
    for step in range(6):
        if step == 3:
            a.open_stream("svc")
            a.ping(0.0)
        out_a, out_b = a.data_to_send(now=0.0), b.data_to_send(now=0.0)
        sent += [out_a, out_b]
        b.receive_data(out_a, 0.0)
        a.receive_data(out_b, 0.0)
    assert a.state is SessionState.READY
    return sent


def test_a_seeded_random_source_replays_a_session_byte_for_byte() -> None:
    # The session draws nonces, resume tokens and PING opaques only from the source it is
    # given: the same seed gives the same bytes, another seed other bytes.
    assert _transcript(7) == _transcript(7)
    assert _transcript(7) != _transcript(8)
