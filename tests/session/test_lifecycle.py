"""How a session lives and ends: GOAWAY drain, keepalive, idle timeout, PING, signals, metrics."""

from __future__ import annotations

from typing import Any

import pytest

from accessfabric.errors import ErrorCode, LocalProtocolError
from accessfabric.session import SessionConfig, SessionState
from accessfabric.session import events as ev
from accessfabric.wire import (
    Data,
    Frame,
    FrameDecoder,
    Goaway,
    OpenStream,
    Ping,
    Pong,
    TrafficClass,
)
from tests.session.pair import Pair, make_pair, received_bytes
from tests.session.peer_frames import feed, goaway_code, of_type, reset_codes, sent_frames


def quiet_pair(**changes: Any) -> Pair:
    """A pair with no keepalive and no pacing unless asked for."""
    settings: dict[str, Any] = {"keepalive_interval": None, "pacing_target_delay": None}
    config = SessionConfig(**{**settings, **changes})
    return make_pair(config, config)


def settle(pair: Pair) -> None:
    """Pump, and run whatever timers are due now (a drained session ends on its timer)."""
    for _ in range(10):
        pair.pump()
        due = False
        for session, events in ((pair.a, pair.events_a), (pair.b, pair.events_b)):
            timer = session.get_timer()
            if timer is not None and timer <= pair.now:
                due = True
                events += session.handle_timer(pair.now)
        if not due:
            return
    raise AssertionError("timers keep firing")


def decode(data: bytes) -> list[Frame]:
    return FrameDecoder().feed(data)


# ---------------------------------------------------------------- GOAWAY


def test_goaway_drains_open_streams_then_both_sides_end_with_no_error() -> None:
    pair = quiet_pair()
    a, b = pair.a, pair.b
    up = a.open_stream("upload")
    a.send_data(up, b"first ")
    down = b.open_stream("callback")
    pair.pump()
    pair.take("a"), pair.take("b")

    a.goaway(reason="maintenance")
    pair.pump()
    (goaway,) = of_type(pair.events_b, ev.GoawayReceived)
    assert (goaway.last_stream_id, goaway.error_code, goaway.reason) == (
        down,
        ErrorCode.NO_ERROR,
        "maintenance",
    )
    assert a.state is b.state is SessionState.DRAINING
    assert not of_type(pair.events_a + pair.events_b, ev.SessionTerminated)
    with pytest.raises(LocalProtocolError):
        b.open_stream("new")
    with pytest.raises(LocalProtocolError):
        a.open_stream("new")

    # Streams already open keep going, in both directions, until both ends close.
    a.send_data(up, b"second", end_stream=True)
    b.send_data(down, b"called back", end_stream=True)
    pair.pump()
    assert received_bytes(pair.events_b, up) == b"second"
    assert received_bytes(pair.events_a, down) == b"called back"
    assert not of_type(pair.events_a + pair.events_b, ev.SessionTerminated)
    b.send_data(up, b"ok", end_stream=True)
    a.close_stream(down)
    settle(pair)
    assert received_bytes(pair.events_a, up) == b"ok"

    end_a = of_type(pair.events_a, ev.SessionTerminated)
    end_b = of_type(pair.events_b, ev.SessionTerminated)
    assert [(e.error_code, e.remote) for e in end_a] == [(ErrorCode.NO_ERROR, False)]
    assert [(e.error_code, e.remote) for e in end_b] == [(ErrorCode.NO_ERROR, True)]
    assert a.state is b.state is SessionState.CLOSED
    assert not of_type(pair.events_a + pair.events_b, ev.StreamReset)


def test_goaway_without_streams_ends_at_the_next_timer() -> None:
    pair = quiet_pair()
    pair.a.goaway()
    pair.pump()
    assert pair.a.get_timer() == pair.now
    events = pair.a.handle_timer(pair.now)
    assert [(e.error_code, e.remote) for e in of_type(events, ev.SessionTerminated)] == [
        (ErrorCode.NO_ERROR, False)
    ]
    assert pair.a.get_timer() is None


def test_both_sides_sending_goaway_still_drain_open_streams() -> None:
    pair = quiet_pair()
    a, b = pair.a, pair.b
    stream_id = a.open_stream("upload")
    pair.pump()
    a.goaway()
    pair.pump()
    b.goaway()  # the usual answer to a GOAWAY
    pair.pump()
    assert b.terminated is None, "an answering NO_ERROR GOAWAY must not cut open streams"
    a.send_data(stream_id, b"still delivered", end_stream=True)
    b.close_stream(stream_id)
    settle(pair)
    assert received_bytes(pair.events_b, stream_id) == b"still delivered"
    assert pair.a.terminated is not None and pair.a.terminated.error_code == ErrorCode.NO_ERROR
    assert pair.b.terminated is not None and pair.b.terminated.error_code == ErrorCode.NO_ERROR


def test_error_goaway_after_a_graceful_one_still_reaches_the_peer() -> None:
    pair = quiet_pair()
    a, b = pair.a, pair.b
    a.open_stream("upload")
    pair.pump()
    a.goaway()
    pair.pump()
    assert b.state is SessionState.DRAINING
    a.goaway(ErrorCode.INTERNAL_ERROR, "gave up waiting")
    assert a.state is SessionState.CLOSED
    out = a.data_to_send(now=0.0)
    assert goaway_code(decode(out)) == ErrorCode.INTERNAL_ERROR
    events = b.receive_data(out, pair.now)
    assert events[-1] == ev.SessionTerminated(
        error_code=ErrorCode.INTERNAL_ERROR, reason="gave up waiting", remote=True
    )
    a.goaway(ErrorCode.INTERNAL_ERROR)  # closed: nothing more
    assert a.data_to_send(now=0.0) == b""


def test_goaway_with_an_error_terminates_at_once() -> None:
    pair = quiet_pair()
    a, b = pair.a, pair.b
    stream_id = a.open_stream("upload")
    pair.pump()
    a.send_data(stream_id, b"never sent")
    a.goaway(ErrorCode.INTERNAL_ERROR, "disk on fire")
    assert a.terminated == ev.SessionTerminated(
        error_code=ErrorCode.INTERNAL_ERROR, reason="disk on fire", remote=False
    )
    assert a.state is SessionState.CLOSED
    frames = sent_frames(a)
    assert [type(f) for f in frames] == [Goaway]
    assert goaway_code(frames) == ErrorCode.INTERNAL_ERROR

    events = b.receive_data(frames[0].to_bytes(), pair.now)
    assert [type(e) for e in events] == [ev.GoawayReceived, ev.SessionTerminated]
    assert events[-1] == ev.SessionTerminated(
        error_code=ErrorCode.INTERNAL_ERROR, reason="disk on fire", remote=True
    )
    assert b.state is SessionState.CLOSED
    with pytest.raises(LocalProtocolError):
        b.open_stream("again")
    assert b.receive_data(Ping(1).to_bytes(), pair.now) == []


def test_our_streams_above_last_stream_id_are_refused() -> None:
    pair = quiet_pair()
    a, b = pair.a, pair.b
    seen = b.open_stream("seen")
    pair.pump()
    assert [e.stream_id for e in of_type(pair.take("a"), ev.StreamOpened)] == [seen]
    unseen = b.open_stream("unseen")
    b.send_data(unseen, b"in flight")
    b.send_data(seen, b"kept")
    a.goaway()  # a has only seen stream `seen` when it says goodbye
    pair.pump()
    (goaway,) = of_type(pair.events_b, ev.GoawayReceived)
    assert goaway.last_stream_id == seen
    resets = of_type(pair.events_b, ev.StreamReset)
    assert [(r.stream_id, r.error_code, r.remote) for r in resets] == [
        (unseen, ErrorCode.REFUSED_STREAM, True)
    ]
    assert b.stream_state(unseen) is None
    assert received_bytes(pair.events_a, seen) == b"kept"
    assert received_bytes(pair.events_a, unseen) == b""
    assert not of_type(pair.events_a, ev.StreamOpened)


def test_open_stream_after_our_goaway_is_refused() -> None:
    pair = quiet_pair()
    pair.a.goaway()
    sent_frames(pair.a)
    events = feed(pair.a, OpenStream(2, "late", TrafficClass.RELIABLE), Data(2, 0, b"x"))
    assert not of_type(events, ev.StreamOpened)
    assert reset_codes(sent_frames(pair.a)) == {2: ErrorCode.REFUSED_STREAM}


# ---------------------------------------------------------------- keepalive and timeouts


def test_keepalive_ping_after_the_interval_and_timeout_when_unanswered() -> None:
    pair = quiet_pair(keepalive_interval=5.0, ping_timeout=2.0)
    a, b = pair.a, pair.b
    assert a.get_timer() == 5.0
    assert a.handle_timer(4.9) == []
    assert a.data_to_send(now=4.9) == b""
    assert a.handle_timer(5.0) == []
    (ping,) = decode(a.data_to_send(now=5.0))
    assert isinstance(ping, Ping)

    # Answered: no event (the keepalive is internal), and the next one is due 5 s later.
    pong = b.receive_data(ping.to_bytes(), 5.5)
    assert pong == []
    assert a.receive_data(b.data_to_send(now=5.5), 5.5) == []
    assert a.get_timer() == 10.5

    # Unanswered: PING at 10.5, dead at 12.5.
    assert a.handle_timer(10.5) == []
    assert isinstance(decode(a.data_to_send(now=10.5))[0], Ping)
    assert a.get_timer() == 12.5
    assert a.handle_timer(12.4) == []
    events = a.handle_timer(12.5)
    assert [(e.error_code, e.remote) for e in of_type(events, ev.SessionTerminated)] == [
        (ErrorCode.TIMEOUT, False)
    ]
    assert goaway_code(sent_frames(a, now=12.5)) == ErrorCode.TIMEOUT
    assert a.get_timer() is None


def test_anything_received_postpones_the_keepalive() -> None:
    pair = quiet_pair(keepalive_interval=5.0, ping_timeout=2.0)
    pair.now = 3.0
    pair.b.send_pressure(10)
    pair.pump()
    assert pair.a.get_timer() == 8.0
    assert pair.a.handle_timer(7.0) == []
    assert pair.a.data_to_send(now=7.0) == b""


def test_idle_timeout_ends_a_session_without_streams() -> None:
    pair = quiet_pair(idle_timeout=30.0)
    a = pair.a
    assert a.get_timer() == 30.0
    assert a.handle_timer(29.0) == []
    events = a.handle_timer(30.0)
    assert [(e.error_code, e.reason, e.remote) for e in events] == [
        (ErrorCode.NO_ERROR, "idle", False)
    ]
    assert goaway_code(sent_frames(a, now=30.0)) == ErrorCode.NO_ERROR


def test_idle_timeout_waits_for_open_streams_and_restarts_when_they_end() -> None:
    pair = quiet_pair(idle_timeout=30.0)
    a, b = pair.a, pair.b
    pair.now = 10.0
    stream_id = a.open_stream("svc")
    pair.pump()
    assert a.get_timer() is None  # a stream is open: never idle
    assert a.handle_timer(100.0) == []
    pair.now = 100.0
    a.send_data(stream_id, b"bye", end_stream=True)
    b.close_stream(stream_id)
    pair.pump()
    assert a.stream_ids() == []
    assert a.get_timer() == 130.0
    assert a.handle_timer(129.0) == []
    (end,) = of_type(a.handle_timer(130.0), ev.SessionTerminated)
    assert end.error_code == ErrorCode.NO_ERROR


# ---------------------------------------------------------------- PING and signals


def test_ping_reports_the_injected_round_trip_time() -> None:
    pair = quiet_pair()
    a, b = pair.a, pair.b
    a.data_to_send(now=1.0)
    opaque = a.ping(1.0)
    out = a.data_to_send(now=1.0)
    (ping,) = decode(out)
    assert ping == Ping(opaque)
    assert b.receive_data(out, 1.1) == []
    (pong,) = decode(reply := b.data_to_send(now=1.1))
    assert pong == Pong(opaque)
    events = a.receive_data(reply, 1.25)
    assert events == [ev.PingAcknowledged(opaque=opaque, rtt=0.25)]
    assert a.rtt.srtt is not None
    # The same PONG again is not a second answer.
    assert a.receive_data(reply, 2.0) == []


def test_two_pings_are_told_apart() -> None:
    pair = quiet_pair()
    a, b = pair.a, pair.b
    first = a.ping(0.0)
    b.receive_data(a.data_to_send(now=0.0), 0.0)
    a.handle_timer(0.5)  # time reaches the session only through its inputs
    second = a.ping(0.5)
    b.receive_data(a.data_to_send(now=0.5), 0.5)
    events = a.receive_data(b.data_to_send(now=0.5), 0.75)
    assert [(e.opaque, e.rtt) for e in of_type(events, ev.PingAcknowledged)] == [
        (first, 0.75),
        (second, 0.25),
    ]


def test_send_pressure_arrives_as_peer_pressure() -> None:
    pair = quiet_pair()
    pair.a.send_pressure(70, cpu=20, memory=5, network=99)
    pair.pump()
    assert pair.take("b") == [ev.PeerPressure(queue=70, cpu=20, memory=5, network=99)]


def test_send_route_update_arrives_as_route_updated() -> None:
    pair = quiet_pair()
    lease = bytes(range(200))
    pair.b.send_route_update(lease)
    pair.pump()
    assert pair.take("a") == [ev.RouteUpdated(lease=lease)]


def test_signals_need_a_ready_session() -> None:
    pair = quiet_pair()
    pair.a.goaway(ErrorCode.CANCEL)
    for action in (
        lambda: pair.a.ping(0.0),
        lambda: pair.a.send_pressure(1),
        lambda: pair.a.send_route_update(b"x"),
    ):
        with pytest.raises(LocalProtocolError):
            action()


# ---------------------------------------------------------------- metrics


def test_metrics_count_bytes_and_frames_by_class() -> None:
    pair = quiet_pair()
    a, b = pair.a, pair.b
    bulk = a.open_stream("download", TrafficClass.BULK)
    chat = a.open_stream("chat", TrafficClass.INTERACTIVE)
    a.send_data(bulk, b"B" * 5000)
    a.send_data(chat, b"C" * 100)
    a.send_data(chat, b"C" * 20)
    pair.pump()
    out, into = a.metrics(), b.metrics()
    assert out.bytes_out_by_class["bulk"] == 5000
    assert out.bytes_out_by_class["interactive"] == 120
    assert out.bytes_out_by_class["reliable"] == 0
    assert into.bytes_in_by_class == out.bytes_out_by_class
    assert out.frames_out_by_class["bulk"] >= 1
    assert out.frames_out_by_class["interactive"] >= 1
    assert into.frames_in_by_class == out.frames_out_by_class

    # Totals survive the streams: end both, let them be forgotten, count again.
    for stream_id in (bulk, chat):
        a.close_stream(stream_id)
        b.close_stream(stream_id)
    pair.pump()
    assert a.stream_ids() == [] and b.stream_ids() == []
    assert a.metrics().bytes_out_by_class["bulk"] == 5000
    assert b.metrics().bytes_in_by_class["interactive"] == 120
    assert a.metrics().frames_out_by_class["bulk"] >= 2  # data, then its end


def test_metrics_count_resets_by_code_on_both_sides() -> None:
    pair = quiet_pair()
    a, b = pair.a, pair.b
    one, two, three = (a.open_stream(f"s{i}") for i in range(3))
    pair.pump()
    a.reset_stream(one, ErrorCode.CANCEL)
    a.reset_stream(two, ErrorCode.CANCEL)
    b.reset_stream(three, ErrorCode.SERVICE_UNAVAILABLE)
    pair.pump()
    assert a.metrics().resets_by_code == {
        ErrorCode.CANCEL: 2,
        ErrorCode.SERVICE_UNAVAILABLE: 1,
    }
    assert b.metrics().resets_by_code == a.metrics().resets_by_code


def test_metrics_count_credit_stalls() -> None:
    pair = quiet_pair(initial_stream_window=4096, max_stream_window=4096)
    a, b = pair.a, pair.b
    stream_id = a.open_stream("svc")
    a.send_data(stream_id, b"x" * 4096)
    pair.pump()
    assert a.metrics().credit_stalls == 0
    a.send_data(stream_id, b"y" * 1000)  # no credit left: this stalls
    pair.pump()
    assert a.metrics().credit_stalls == 1
    assert a.stream_metrics(stream_id).credit == 0
    assert a.stream_metrics(stream_id).queued_bytes == 1000
    pair.now = 2.0
    assert a.stream_metrics(stream_id).credit_stalls == 1
    b.acknowledge_received(stream_id, 4096)
    pair.pump()
    metrics = a.stream_metrics(stream_id)
    assert metrics.queued_bytes == 0
    assert metrics.stall_seconds == pytest.approx(2.0)
    assert received_bytes(pair.events_b, stream_id) == b"x" * 4096 + b"y" * 1000


def test_a_stream_waiting_for_session_credit_counts_a_stall_and_urgent_keeps_a_reserve() -> None:
    """Issue 13: a stream blocked on session credit used to report ``credit_stalls`` 0."""
    pair = quiet_pair(initial_session_window=16384, max_session_window=16384)
    a, b = pair.a, pair.b
    bulk = a.open_stream("bulk", TrafficClass.BULK)
    chat = a.open_stream("chat", TrafficClass.INTERACTIVE)
    pair.pump()
    a.send_data(bulk, b"b" * 65536)
    in_flight = a.data_to_send(now=pair.now)  # not delivered yet: the session credit is used
    assert a.stream_metrics(bulk).bytes_out == 16384 - 4096  # a quarter is kept for urgent
    assert a.stream_metrics(bulk).session_credit_stalls == 1
    a.send_data(chat, b"c" * 6000)
    in_flight += a.data_to_send(now=pair.now)
    assert a.stream_metrics(chat).bytes_out == 4096  # the reserve, no more
    chat_metrics = a.stream_metrics(chat)
    assert chat_metrics.credit_stalls == chat_metrics.session_credit_stalls == 1
    assert a.metrics().session_credit_stalls == 2
    assert a.metrics().session_credit == 0
    pair.now = 1.5
    assert a.data_to_send(now=pair.now) == b""  # still nothing to send it with
    assert a.metrics().session_credit_stall_seconds == pytest.approx(1.5)
    # The bytes arrive, unread: the session credit comes back all the same.
    pair.events_b += b.receive_data(in_flight, pair.now)
    pair.pump()
    assert len(received_bytes(pair.events_b, chat)) == 6000
    assert a.metrics().session_credit_stall_seconds == pytest.approx(1.5)
    assert a.stream_metrics(chat).stall_seconds == pytest.approx(1.5)
    assert b.metrics().unread_bytes > 16384  # more than the session window, none of it read
