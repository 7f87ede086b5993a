"""Credit properties: whatever the interleaving, nobody exceeds credit and nothing deadlocks.

Hypothesis drives random sends (sizes, streams, classes), partial pumps with
random ``max_bytes`` and chunking, random and delayed consumption, and time.
The receiver must never see a flow-control violation, and once everything is
consumed every byte sent must have arrived, in order, on its own stream.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accessfabric.errors import ErrorCode
from accessfabric.session import Session, SessionConfig
from accessfabric.session import events as ev
from accessfabric.wire import Data, FrameDecoder, TrafficClass
from tests.session.pair import make_pair

SMALL_WINDOWS = dict(
    max_frame_size=16 * 1024,
    initial_stream_window=8 * 1024,
    max_stream_window=32 * 1024,
    initial_session_window=16 * 1024,
    max_session_window=64 * 1024,
    keepalive_interval=None,
)


@dataclass
class Sent:
    traffic_class: TrafficClass
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False


@dataclass
class Received:
    data: bytearray = field(default_factory=bytearray)
    consumed: int = 0
    final_offset: int | None = None


class Harness:
    """a sends, b receives and consumes; every event is checked as it arrives."""

    def __init__(self, paced: bool) -> None:
        config = SessionConfig(**SMALL_WINDOWS, pacing_target_delay=0.002 if paced else None)
        pair = make_pair(config, config)
        self.a: Session = pair.a
        self.b: Session = pair.b
        self.now = 0.0
        self.sent: dict[int, Sent] = {}
        self.received: dict[int, Received] = {}

    # -- checks on every event -------------------------------------------------------

    def _on_b(self, events: list[ev.Event]) -> None:
        for event in events:
            assert not isinstance(event, ev.StreamReset | ev.SessionTerminated), event
            if isinstance(event, ev.StreamOpened):
                assert event.stream_id in self.sent
                assert event.stream_id not in self.received
                self.received[event.stream_id] = Received()
            elif isinstance(event, ev.DataReceived):
                got = self.received[event.stream_id]
                assert event.offset == len(got.data), "out of order or duplicated bytes"
                assert got.final_offset is None
                got.data += event.data
            elif isinstance(event, ev.StreamEnded):
                got = self.received[event.stream_id]
                assert event.final_offset == len(got.data)
                got.final_offset = event.final_offset

    def _on_a(self, events: list[ev.Event]) -> None:
        for event in events:
            assert not isinstance(event, ev.StreamReset | ev.SessionTerminated), event

    def _check_credit(self) -> None:
        for stream_id in self.a.stream_ids():
            assert self.a.stream_metrics(stream_id).credit >= 0
        assert self.b.metrics().resets_by_code == {}
        assert ErrorCode.FLOW_CONTROL_ERROR not in self.a.metrics().resets_by_code

    # -- actions ----------------------------------------------------------------------

    def open(self, traffic_class: TrafficClass) -> None:
        if len(self.sent) < 6:
            stream_id = self.a.open_stream(f"svc-{len(self.sent)}", traffic_class)
            self.sent[stream_id] = Sent(traffic_class)

    def send(self, index: int, size: int, end: bool, seed: int) -> None:
        live = [sid for sid, s in self.sent.items() if not s.ended]
        if not live:
            return
        stream_id = live[index % len(live)]
        data = random.Random(seed).randbytes(size)
        self.a.send_data(stream_id, data, end_stream=end)
        self.sent[stream_id].data += data
        self.sent[stream_id].ended = end

    def pump_a_to_b(self, max_bytes: int | None, cut: int) -> None:
        out = self.a.data_to_send(max_bytes, now=self.now)
        split = len(out) * cut // 100
        for piece in (out[:split], out[split:]):
            if piece:
                self._on_b(self.b.receive_data(piece, self.now))
        self._check_credit()

    def pump_b_to_a(self, max_bytes: int | None) -> None:
        out = self.b.data_to_send(max_bytes, now=self.now)
        if out:
            self._on_a(self.a.receive_data(out, self.now))

    def consume(self, index: int, fraction: float) -> None:
        if not self.received:
            return
        stream_id = sorted(self.received)[index % len(self.received)]
        got = self.received[stream_id]
        pending = len(got.data) - got.consumed
        nbytes = min(pending, max(1, int(pending * fraction))) if pending else 0
        if nbytes:
            self.b.acknowledge_received(stream_id, nbytes)
            got.consumed += nbytes

    def tick(self, dt: float) -> None:
        self.now += dt
        self._on_a(self.a.handle_timer(self.now))
        self._on_b(self.b.handle_timer(self.now))

    # -- the end ----------------------------------------------------------------------

    def finish(self) -> None:
        """Close every stream, then consume everything until both sides go quiet."""
        for stream_id, sent in self.sent.items():
            if not sent.ended:
                self.a.close_stream(stream_id)
                sent.ended = True
        for _ in range(5000):
            to_b = self.a.data_to_send(None, now=self.now)
            if to_b:
                self._on_b(self.b.receive_data(to_b, self.now))
                self._check_credit()
            for index in range(len(self.received)):
                self.consume(index, 1.0)
            to_a = self.b.data_to_send(None, now=self.now)
            if to_a:
                self._on_a(self.a.receive_data(to_a, self.now))
            done = all(
                stream_id in self.received and self.received[stream_id].final_offset is not None
                for stream_id in self.sent
            )
            if done and not to_b and not to_a:
                break
            if not to_b and not to_a:
                self.tick(0.005)  # only a paced sender may be waiting for time to pass
        else:
            pytest.fail(f"deadlock: a still queues {self.a.queued_bytes()} bytes")
        for stream_id, sent in self.sent.items():
            got = self.received[stream_id]
            assert hashlib.sha256(got.data).digest() == hashlib.sha256(sent.data).digest()
            assert got.final_offset == len(sent.data)
            assert got.consumed == len(sent.data)
        assert self.a.dropped_bytes == 0
        assert self.a.queued_bytes() == 0


classes = st.sampled_from(list(TrafficClass))
max_bytes = st.one_of(st.none(), st.integers(0, 40), st.integers(41, 40_000))
send = st.tuples(
    st.just("send"),
    st.integers(0, 7),
    st.one_of(st.integers(1, 12_000), st.sampled_from([4_000, 8_192, 9_000, 12_000])),
    st.integers(0, 9).map(lambda roll: roll == 0),  # end the stream now and then
    st.integers(0, 1 << 16),
)
operations = st.one_of(
    st.tuples(st.just("open"), classes),
    send,
    send,
    st.tuples(st.just("pump_ab"), max_bytes, st.integers(0, 100)),
    st.tuples(st.just("pump_ab"), max_bytes, st.integers(0, 100)),
    st.tuples(st.just("pump_ba"), max_bytes),
    st.tuples(st.just("consume"), st.integers(0, 7), st.floats(0.0, 1.0)),
    st.tuples(st.just("tick"), st.floats(0.0001, 0.05)),
)
scripts = st.lists(operations, min_size=20, max_size=80)


def run(paced: bool, ops: list[tuple[object, ...]]) -> Harness:
    harness = Harness(paced)
    harness.open(TrafficClass.RELIABLE)
    for op in ops:
        name, *args = op
        getattr(harness, {"pump_ab": "pump_a_to_b", "pump_ba": "pump_b_to_a"}.get(str(name), name))(
            *args
        )
    harness.finish()
    return harness


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paced=st.booleans(), ops=scripts)
def test_random_interleavings_respect_credit_and_deliver_everything(
    paced: bool, ops: list[tuple[object, ...]]
) -> None:
    run(paced, ops)


def test_a_streams_open_precedes_its_data_whatever_the_budget() -> None:
    """Found by the property above: with a carrier budget too small for every queued
    OPEN_STREAM, DATA of a stream whose open was still queued went out first and the
    peer ended the session (INVALID_STREAM_ID)."""
    ops: list[tuple[object, ...]] = [("open", TrafficClass.CONTROL)] * 6
    ops += [("send", 0, 1, True, 0), ("send", 0, 1, True, 0), ("pump_ab", 71, 0)]
    run(False, ops)  # raises on any reset or termination


def test_receiver_that_never_consumes_stops_the_sender_at_its_window() -> None:
    harness = Harness(paced=False)
    harness.open(TrafficClass.BULK)
    harness.open(TrafficClass.RELIABLE)
    for index in range(2):
        harness.send(index, 50_000, False, index)
    for _ in range(20):
        harness.pump_a_to_b(None, 50)
        harness.pump_b_to_a(None)
    delivered = sum(len(r.data) for r in harness.received.values())
    # Each stream stops at its 8 KiB window, and together they stay under the session's.
    assert all(len(r.data) == 8 * 1024 for r in harness.received.values())
    assert delivered <= 16 * 1024
    assert harness.a.queued_bytes() == 100_000 - delivered
    assert harness.a.metrics().credit_stalls >= 2
    harness.finish()


@pytest.mark.parametrize("offered", [0, 1, 9, 17, 18, 100])
def test_small_max_bytes_still_returns_a_frame(offered: int) -> None:
    """``data_to_send`` promises at least one frame when anything is queued."""
    pair = make_pair(SessionConfig(pacing_target_delay=None))
    stream_id = pair.a.open_stream("svc")
    pair.pump()
    pair.a.send_data(stream_id, b"payload")
    out = pair.a.data_to_send(max_bytes=offered, now=0.0)
    frames = FrameDecoder().feed(out)
    assert len(frames) == 1
    assert isinstance(frames[0], Data)
    assert bytes(frames[0].payload)
    assert len(out) <= max(offered, 18)


@pytest.mark.parametrize("offered", [1, 17, 18, 64])
def test_a_carrier_with_a_tiny_socket_buffer_still_delivers(offered: int) -> None:
    pair = make_pair(SessionConfig(pacing_target_delay=None))
    stream_id = pair.a.open_stream("svc")
    message = bytes(range(256)) * 4
    pair.a.send_data(stream_id, message, end_stream=True)
    got = bytearray()
    ended = False
    for _ in range(5000):
        out = pair.a.data_to_send(max_bytes=offered, now=0.0)
        if not out:
            break
        for event in pair.b.receive_data(out, 0.0):
            if isinstance(event, ev.DataReceived):
                got += event.data
            ended |= isinstance(event, ev.StreamEnded)
        pair.a.receive_data(pair.b.data_to_send(now=0.0), 0.0)
    assert bytes(got) == message
    assert ended
