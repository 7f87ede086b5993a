"""Receive windows grow toward bandwidth x RTT; the scheduler's shares hold under load."""

from __future__ import annotations

from accessfabric.session import SessionConfig
from accessfabric.session import events as ev
from accessfabric.session.flow import ReceiveWindow
from accessfabric.session.scheduler import ClassScheduler
from accessfabric.wire import TrafficClass
from tests.session.bottleneck import BottleneckRun
from tests.session.pair import make_pair

WINDOW = 64 * 1024


def _transfer(max_window: int, seconds: float) -> tuple[int, int]:
    config = SessionConfig(
        initial_stream_window=WINDOW,
        max_stream_window=max_window,
        initial_session_window=WINDOW,
        max_session_window=max_window,
        pacing_target_delay=None,
        keepalive_interval=None,
    )
    pair = make_pair(config, config, handshake=False)
    link = BottleneckRun(rate=1e9, delay=0.02, buffer=64 << 20)  # 40 ms RTT, no bottleneck
    link.run(pair.a, pair.b, 0.2, ping_every=10.0)
    stream = pair.a.open_stream("download", TrafficClass.BULK)
    chunk = b"z" * (1 << 20)
    elapsed = 0.0
    while elapsed < seconds:
        while pair.a.send_buffer_available(stream) >= len(chunk):
            pair.a.send_data(stream, chunk)
        link.run(pair.a, pair.b, 0.1, ping_every=10.0)
        elapsed += 0.1
    window = pair.a.stream_metrics(stream).credit + pair.a.stream_metrics(stream).unacked_bytes
    return link.delivered, window


def test_windows_grow_toward_bandwidth_times_rtt() -> None:
    fixed, _ = _transfer(max_window=WINDOW, seconds=2.0)
    tuned, credit_seen = _transfer(max_window=16 << 20, seconds=2.0)
    # A fixed 64 KiB window caps the stream at about 64 KiB per 40 ms RTT.
    assert fixed < 1.2 * (WINDOW / 0.04) * 2.0
    # Auto-tuning lets the same stream move many times more.
    assert tuned > 8 * fixed, (tuned, fixed)
    assert credit_seen > 4 * WINDOW


def test_receive_window_doubles_only_when_consumed_within_two_rtts() -> None:
    window = ReceiveWindow(1000, 8000)
    grant = None
    for step in range(10):  # half a window per 10 ms, RTT 50 ms: fast
        grant = window.consume(500, now=step * 0.01, rtt=0.05) or grant
    assert window.window > 1000 and grant is not None
    slow = ReceiveWindow(1000, 8000)
    for step in range(10):  # half a window per second, RTT 10 ms: slow reader
        slow.consume(500, now=float(step), rtt=0.01)
    assert slow.window == 1000


def _shares(weights: dict[TrafficClass, int], rounds: int = 3000) -> dict[TrafficClass, int]:
    scheduler = ClassScheduler(quantum=1000, weights=weights)
    sent = dict.fromkeys(TrafficClass, 0)
    for stream_id, cls in enumerate(
        (TrafficClass.RELIABLE, TrafficClass.BULK, TrafficClass.DROPPABLE), start=1
    ):
        scheduler.mark_ready(stream_id, cls)
    for _ in range(rounds):
        pick = scheduler.next_shared()
        assert pick is not None
        stream_id, cls = pick
        scheduler.charge(stream_id, cls, 1000, ready=True)
        sent[cls] += 1000
    return sent


def test_shared_classes_split_by_weight_and_bulk_never_starves() -> None:
    sent = _shares({TrafficClass.RELIABLE: 4, TrafficClass.BULK: 2, TrafficClass.DROPPABLE: 1})
    total = sum(sent.values())
    assert abs(sent[TrafficClass.RELIABLE] / total - 4 / 7) < 0.02
    assert abs(sent[TrafficClass.BULK] / total - 2 / 7) < 0.02
    assert sent[TrafficClass.DROPPABLE] > 0


def test_peer_pressure_lowers_bulk_share() -> None:
    config = SessionConfig(
        pacing_target_delay=None,
        initial_stream_window=16 << 20,
        initial_session_window=64 << 20,
        max_stream_send_buffer=16 << 20,
    )
    pair = make_pair(config, config)
    reliable = pair.a.open_stream("api", TrafficClass.RELIABLE)
    bulk = pair.a.open_stream("sync", TrafficClass.BULK)
    pair.pump()

    def share_of_bulk() -> float:
        """Bulk's part of the first 6 MiB sent while both classes have plenty queued."""
        before = pair.a.metrics().bytes_out_by_class
        for stream_id in (reliable, bulk):
            pair.a.send_data(stream_id, b"p" * (8 << 20))
        pair.b.receive_data(pair.a.data_to_send(max_bytes=6 << 20, now=pair.now), pair.now)
        after = pair.a.metrics().bytes_out_by_class
        sent_bulk = after["bulk"] - before["bulk"]
        sent_reliable = after["reliable"] - before["reliable"]
        while True:  # drain everything before the next measurement
            pair.pump()
            events = pair.take("b")
            if not events:
                break
            for event in events:
                if isinstance(event, ev.DataReceived):
                    pair.b.acknowledge_received(event.stream_id, len(event.data))
        return sent_bulk / (sent_bulk + sent_reliable)

    normal = share_of_bulk()
    pair.b.send_pressure(queue=90)
    pair.pump()
    assert any(isinstance(e, ev.PeerPressure) for e in pair.take("a"))
    pressured = share_of_bulk()
    assert abs(normal - 2 / 6) < 0.05  # weights reliable 4 : bulk 2
    assert abs(pressured - 1 / 5) < 0.05, (normal, pressured)  # bulk weight 1 under pressure
