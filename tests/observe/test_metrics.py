"""The node's Prometheus metrics: counts survive sessions, labels stay bounded."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from accessfabric.errors import ErrorCode
from accessfabric.observe.metrics import FabricMetrics, new_registry
from accessfabric.session import SessionConfig
from accessfabric.session import events as ev
from accessfabric.wire import TrafficClass
from tests.session.bottleneck import BottleneckRun
from tests.session.pair import make_pair


def _samples(metrics: FabricMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(new_registry(metrics)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_bytes_by_class_survive_the_session_and_labels_are_bounded() -> None:
    metrics = FabricMetrics()
    for round_ in range(30):  # many sessions and streams: the series count must not grow
        pair = make_pair()
        metrics.track(pair.a, "memory")
        bulk = pair.a.open_stream("files", TrafficClass.BULK)
        rdp = pair.a.open_stream("rdp", TrafficClass.INTERACTIVE)
        pair.a.send_data(bulk, b"b" * 10_000)
        pair.a.send_data(rdp, b"i" * 100)
        pair.a.reset_stream(rdp, ErrorCode.CANCEL) if round_ % 2 else None
        pair.pump()
        if round_ == 0:
            live = _samples(metrics)
            series = len(live)
        pair.a.goaway(ErrorCode.PROTOCOL_ERROR, "test")
        metrics.finished(pair.a)
    samples = _samples(metrics)
    key = ("accessfabric_stream_bytes_total", (("direction", "out"), ("traffic_class", "bulk")))
    assert live[key] == 10_000
    assert samples[key] == 30 * 10_000
    interactive = (
        "accessfabric_stream_bytes_total",
        (("direction", "out"), ("traffic_class", "interactive")),
    )
    assert samples[interactive] >= 15 * 100
    assert samples[("accessfabric_stream_resets_total", (("code", "cancel"),))] == 15
    ended = (
        "accessfabric_session_terminations_total",
        (("code", "protocol_error"), ("side", "local")),
    )
    assert samples[ended] == 30
    assert samples[("accessfabric_sessions_opened_total", (("carrier", "memory"),))] == 30
    # No label carries a stream id, peer id or address: the series set does not grow.
    assert len(samples) <= series + 4
    assert not any("stream_id" in dict(labels) or "peer" in dict(labels) for _, labels in samples)


def test_live_sessions_rtt_and_queue_gauges() -> None:
    metrics = FabricMetrics()
    pair = make_pair()
    metrics.track(pair.a, "tcp_tls")
    pair.a.ping(pair.now)
    pair.now = 0.004
    pair.pump()
    assert any(isinstance(e, ev.PingAcknowledged) for e in pair.take("a"))
    stream = pair.a.open_stream("sync", TrafficClass.BULK)
    pair.a.send_data(stream, b"q" * 1_000_000)  # more than the window: some stays queued
    pair.pump()
    samples = _samples(metrics)
    assert samples[("accessfabric_sessions", (("carrier", "tcp_tls"), ("state", "ready")))] == 1
    assert samples[("accessfabric_queued_bytes", (("traffic_class", "bulk"),))] > 0
    assert samples[("accessfabric_session_srtt_seconds_gcount", ())] == 1


def test_peer_pressure_jitter_and_pacing_decisions_are_exported() -> None:
    metrics = FabricMetrics()
    pair = make_pair()
    metrics.track(pair.a, "tcp_tls")
    pair.b.send_pressure(queue=70, cpu=20, memory=5, network=0)
    for step in range(4):  # pings with different RTTs give a non-zero variation
        pair.a.ping(pair.now)
        pair.now += 0.002 * (step + 1)
        pair.pump()
    samples = _samples(metrics)
    assert samples[("accessfabric_peer_pressure_percent", (("kind", "queue"),))] == 70
    assert samples[("accessfabric_peer_pressure_percent", (("kind", "cpu"),))] == 20
    assert samples[("accessfabric_session_rtt_jitter_seconds_gcount", ())] == 1
    assert samples[("accessfabric_session_rtt_jitter_seconds_gsum", ())] > 0
    assert ("accessfabric_pacing_slowdowns_total", ()) in samples


def test_session_credit_stalls_and_unread_bytes_are_exported() -> None:
    """Issue 13: a stream waiting for session credit, and bytes nobody reads, show."""
    metrics = FabricMetrics()
    config = SessionConfig(initial_session_window=16384, keepalive_interval=None)
    pair = make_pair(config, config)
    metrics.track(pair.a, "memory")
    metrics.track(pair.b, "memory")
    bulk = pair.a.open_stream("files", TrafficClass.BULK)
    pair.pump()
    pair.a.send_data(bulk, b"b" * 65536)
    in_flight = pair.a.data_to_send(now=0.0)  # the session's credit, less the urgent reserve
    pair.now = 0.25
    assert pair.a.data_to_send(now=pair.now) == b""
    live = _samples(metrics)
    assert live[("accessfabric_session_credit_stalls_total", ())] == 1
    assert live[("accessfabric_session_credit_stall_seconds_total", ())] == 0.25
    assert live[("accessfabric_credit_stalls_total", ())] == 1
    pair.b.receive_data(in_flight, pair.now)  # arrives, nobody reads it
    assert _samples(metrics)[("accessfabric_unread_bytes", ())] == 16384 - 4096
    pair.a.goaway(ErrorCode.PROTOCOL_ERROR, "test")
    metrics.finished(pair.a)
    metrics.finished(pair.b)
    ended = _samples(metrics)
    assert ended[("accessfabric_session_credit_stalls_total", ())] == 1
    assert ended[("accessfabric_unread_bytes", ())] == 0  # a gauge of live sessions only


def test_pacer_state_and_probes_are_exported() -> None:
    """Issue 18: the pacer's rate, base RTT, probes and delay backoffs show in metrics, and
    its counters outlive the session."""
    metrics = FabricMetrics()
    config = SessionConfig(
        pacing_target_delay=0.00025,
        initial_stream_window=8 << 20,
        initial_session_window=16 << 20,
        keepalive_interval=None,
    )
    pair = make_pair(config, config, handshake=False)
    metrics.track(pair.a, "tcp_tls")
    rate, delay = 12_500_000.0, 0.005  # 100 Mbit/s, 10 ms RTT, a bloated buffer
    sim = BottleneckRun(rate=rate, delay=delay, buffer=1 << 20)
    sim.run(pair.a, pair.b, 0.1, ping_every=1.0)
    bulk = pair.a.open_stream("download", TrafficClass.BULK)
    chunk = b"x" * (1 << 20)
    for _ in range(15):
        while pair.a.send_buffer_available(bulk) >= len(chunk):
            pair.a.send_data(bulk, chunk)
        sim.run(pair.a, pair.b, 0.1, ping_every=1.0)
    live = _samples(metrics)
    assert live[("accessfabric_pacing_limiting_sessions", ())] == 1
    assert live[("accessfabric_pacing_delivery_rate_bytes_gcount", ())] == 1
    measured = live[("accessfabric_pacing_delivery_rate_bytes_gsum", ())]
    assert 0.8 * rate <= measured <= 1.1 * rate, measured
    assert live[("accessfabric_pacing_delivery_rate_bytes_bucket", (("le", "10000000.0"),))] == 0
    assert live[("accessfabric_pacing_delivery_rate_bytes_bucket", (("le", "30000000.0"),))] == 1
    base = live[("accessfabric_pacing_min_rtt_seconds_gsum", ())]
    assert 2 * delay <= base < 2 * delay + 0.002, base
    assert live[("accessfabric_pacing_queueing_delay_seconds_gcount", ())] == 1
    unproductive = live[("accessfabric_pacing_probes_total", (("outcome", "unproductive"),))]
    assert unproductive >= 1  # a full pipe: raising the window only queued
    assert live[("accessfabric_pacing_probes_total", (("outcome", "productive"),))] == 0
    backoffs = live[("accessfabric_pacing_slowdowns_total", ())]
    assert backoffs > 0
    pair.a.goaway(ErrorCode.PROTOCOL_ERROR, "test")
    metrics.finished(pair.a)
    ended = _samples(metrics)
    assert ended[("accessfabric_pacing_limiting_sessions", ())] == 0
    assert ended[("accessfabric_pacing_min_rtt_seconds_gcount", ())] == 0
    gone = ended[("accessfabric_pacing_probes_total", (("outcome", "unproductive"),))]
    assert gone >= unproductive
    assert ended[("accessfabric_pacing_slowdowns_total", ())] >= backoffs
