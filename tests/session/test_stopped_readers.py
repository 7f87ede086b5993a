"""Stopped and slow readers take nothing from the other streams (issue 13, ADR 0014).

Over an in-memory session pair with a link of fixed capacity per round trip,
Hypothesis picks any set of streams of any classes and lets any subset of
their readers stop (after reading for a while, so their windows may have
grown) or read slowly.  Every other stream must keep moving at its share: at
least half of what it gets in the same run with every reader reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from accessfabric.session import SessionConfig
from accessfabric.session import events as ev
from accessfabric.session.scheduler import URGENT_CLASSES
from accessfabric.wire import TrafficClass
from tests.session.pair import make_pair

WINDOWS = dict(
    max_frame_size=16 * 1024,
    initial_stream_window=8 * 1024,
    max_stream_window=32 * 1024,
    initial_session_window=16 * 1024,
    max_session_window=64 * 1024,
    stream_window_budget=64 * 1024,
    keepalive_interval=None,
    pacing_target_delay=None,
)
RTT = 0.01
WARM_UP_ROUNDS = 20
MEASURED_ROUNDS = 60
URGENT_MESSAGE = 1024
"""An urgent stream (control, dns, interactive) sends this much per round trip."""
GREEDY_QUEUE = 64 * 1024
"""A shared-class stream keeps this much queued: it always has more to send."""
PACED_READ = 2048
"""A paced reader consumes at most this much per round trip."""


class Reader(Enum):
    READS = "reads"
    STOPS = "stops"
    PACED = "paced"


@dataclass
class Flow:
    traffic_class: TrafficClass
    reader: Reader
    stream_id: int = 0
    received: int = 0
    consumed: int = 0
    measured: int = 0
    urgent_sent: list[int] = field(default_factory=list)  # end offsets, per round


def run(flows: list[Flow], stop_after: int, link: int) -> dict[int, int]:
    """Bytes each flow received in the measured rounds; readers of STOPS/PACED flows
    read normally for ``stop_after`` rounds first."""
    config = SessionConfig(**WINDOWS)  # type: ignore[arg-type]
    pair = make_pair(config, config)
    a, b = pair.a, pair.b
    for index, flow in enumerate(flows):
        flow.stream_id = a.open_stream(f"svc-{index}", flow.traffic_class)
    by_id = {flow.stream_id: flow for flow in flows}
    sent = dict.fromkeys(by_id, 0)
    now = 0.0
    for round_ in range(WARM_UP_ROUNDS + MEASURED_ROUNDS):
        measuring = round_ >= WARM_UP_ROUNDS
        for flow in flows:
            sid = flow.stream_id
            if flow.traffic_class in URGENT_CLASSES:
                a.send_data(sid, b"u" * URGENT_MESSAGE)
                sent[sid] += URGENT_MESSAGE
                flow.urgent_sent.append(sent[sid])
            else:
                queued = a.stream_metrics(sid).queued_bytes
                if queued < GREEDY_QUEUE:
                    a.send_data(sid, b"s" * (GREEDY_QUEUE - queued))
                    sent[sid] += GREEDY_QUEUE - queued
        # One round trip: a's share of the link to b, b reads, b's answers back to a.
        out = a.data_to_send(link, now=now)
        for event in b.receive_data(out, now + RTT / 2):
            assert not isinstance(event, ev.StreamReset | ev.SessionTerminated), event
            if isinstance(event, ev.DataReceived):
                flow = by_id[event.stream_id]
                assert event.offset == flow.received
                flow.received += len(event.data)
                if measuring:
                    flow.measured += len(event.data)
        for flow in flows:
            unread = flow.received - flow.consumed
            if flow.reader is Reader.STOPS and round_ >= stop_after:
                unread = 0
            elif flow.reader is Reader.PACED and round_ >= stop_after:
                unread = min(unread, PACED_READ)
            if unread:
                b.acknowledge_received(flow.stream_id, unread)
                flow.consumed += unread
        # Unread bytes stay within the streams' windows, whatever the readers do.
        assert b.metrics().unread_bytes <= len(flows) * 8 * 1024 + WINDOWS["stream_window_budget"]
        back = b.data_to_send(None, now=now + RTT / 2)
        for event in a.receive_data(back, now + RTT):
            assert not isinstance(event, ev.StreamReset | ev.SessionTerminated), event
        now += RTT
    return {flow.stream_id: flow.measured for flow in flows}


flow_specs = st.lists(
    st.tuples(st.sampled_from(list(TrafficClass)), st.sampled_from(list(Reader))),
    min_size=2,
    max_size=6,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=flow_specs,
    stop_after=st.integers(0, WARM_UP_ROUNDS),
    link=st.sampled_from([16 * 1024, 48 * 1024, 128 * 1024]),
)
# Found by this property in CI: a reliable stream cut short by session credit was rotated
# to the back of its class after its crumbs, every round (now it keeps its place).
@example(
    specs=[
        (TrafficClass.CONTROL, Reader.READS), (TrafficClass.CONTROL, Reader.STOPS),
        (TrafficClass.RELIABLE, Reader.READS), (TrafficClass.RELIABLE, Reader.READS),
        (TrafficClass.RELIABLE, Reader.READS),
    ],
    stop_after=0, link=16 * 1024,
)  # fmt: skip
@example(
    specs=[
        (TrafficClass.CONTROL, Reader.READS), (TrafficClass.CONTROL, Reader.READS),
        (TrafficClass.RELIABLE, Reader.READS), (TrafficClass.RELIABLE, Reader.READS),
        (TrafficClass.RELIABLE, Reader.READS), (TrafficClass.BULK, Reader.STOPS),
    ],
    stop_after=16, link=16 * 1024,
)  # fmt: skip
def test_streams_whose_readers_read_keep_their_share_beside_stopped_and_slow_readers(
    specs: list[tuple[TrafficClass, Reader]], stop_after: int, link: int
) -> None:
    assume(any(reader is Reader.READS for _, reader in specs))
    assume(any(reader is not Reader.READS for _, reader in specs))
    baseline = run([Flow(cls, Reader.READS) for cls, _ in specs], stop_after, link)
    flows = [Flow(cls, reader) for cls, reader in specs]
    measured = run(flows, stop_after, link)
    for flow in flows:
        if flow.reader is not Reader.READS:
            continue
        share = baseline[flow.stream_id]
        got = measured[flow.stream_id]
        assert got >= share // 2, (
            f"{flow.traffic_class.name} stream {flow.stream_id} got {got} bytes in "
            f"{MEASURED_ROUNDS} round trips beside stopped/slow readers, "
            f"{share} with every reader reading"
        )
        if flow.traffic_class in URGENT_CLASSES:
            # An urgent message arrives within two round trips of being written.
            assert flow.received >= flow.urgent_sent[-3], flow
