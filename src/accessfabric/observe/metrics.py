"""Prometheus metrics of a node's fabric sessions, with bounded label cardinality.

Sessions come and go; their counters must not.  :class:`FabricMetrics` keeps
totals of sessions that ended and adds the live ones at scrape time, so a
scrape costs O(live sessions) and nothing is counted on the data path.
Labels are only ever drawn from fixed sets — direction, traffic class, error
code name, carrier kind, reason — never a stream id, peer id or address.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from accessfabric.errors import ErrorCode
from accessfabric.session import Session, SessionMetrics
from accessfabric.wire.registry import TrafficClass

RTT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
QUEUEING_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
RATE_BUCKETS = (1e5, 1e6, 1e7, 3e7, 1e8, 3e8, 1e9, 3e9)
"""Bytes/s: 800 kbit/s to 24 Gbit/s."""
_CLASSES = [c.name.lower() for c in TrafficClass]


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name.lower()
    except ValueError:
        return "unknown"


class FabricMetrics(Collector):
    """Collects every tracked session of one node (register it on a registry once)."""

    def __init__(self) -> None:
        self._live: dict[int, tuple[Session, str]] = {}
        self._bytes: Counter[tuple[str, str]] = Counter()  # (direction, class)
        self._frames: Counter[tuple[str, str]] = Counter()
        self._resets: Counter[str] = Counter()
        self._terminations: Counter[tuple[str, str]] = Counter()  # (code, side)
        self._credit_stalls = 0
        self._session_credit_stalls = 0
        self._session_stall_seconds = 0.0
        self._dropped = 0
        self._slowdowns = 0
        self._probes: Counter[str] = Counter()  # outcome
        self._opened: Counter[str] = Counter()  # carrier kind
        self.auth_failures: Counter[str] = Counter()  # reason

    # Data the node feeds in.
    def track(self, session: Session, carrier: str) -> None:
        """Count a new session (call once, when it is created)."""
        self._live[id(session)] = (session, carrier)
        self._opened[carrier] += 1

    def finished(self, session: Session) -> None:
        """Fold a session that ended into the totals."""
        entry = self._live.pop(id(session), None)
        if entry is None:
            return
        self._fold(session.metrics())
        ended = session.terminated
        if ended is not None:
            side = "remote" if ended.remote else "local"
            self._terminations[(_code_name(int(ended.error_code)), side)] += 1

    def _fold(self, snapshot: SessionMetrics) -> None:
        for cls, value in snapshot.bytes_in_by_class.items():
            self._bytes[("in", cls)] += value
        for cls, value in snapshot.bytes_out_by_class.items():
            self._bytes[("out", cls)] += value
        for cls, value in snapshot.frames_in_by_class.items():
            self._frames[("in", cls)] += value
        for cls, value in snapshot.frames_out_by_class.items():
            self._frames[("out", cls)] += value
        for code, count in snapshot.resets_by_code.items():
            self._resets[_code_name(code)] += count
        self._credit_stalls += snapshot.credit_stalls
        self._session_credit_stalls += snapshot.session_credit_stalls
        self._session_stall_seconds += snapshot.session_credit_stall_seconds
        self._dropped += snapshot.dropped_bytes
        self._slowdowns += snapshot.pacing_slowdowns
        if snapshot.pacer is not None:
            self._probes["productive"] += snapshot.pacer.productive_probes
            self._probes["unproductive"] += snapshot.pacer.unproductive_probes

    def bytes_by_class(self) -> dict[str, tuple[int, int]]:
        """Stream bytes (in, out) per traffic class since the node started, live included."""
        totals = Counter(self._bytes)
        for session, _ in list(self._live.values()):
            snapshot = session.metrics()
            for cls, value in snapshot.bytes_in_by_class.items():
                totals[("in", cls)] += value
            for cls, value in snapshot.bytes_out_by_class.items():
                totals[("out", cls)] += value
        classes = sorted({cls for _, cls in totals})
        return {cls: (totals[("in", cls)], totals[("out", cls)]) for cls in classes}

    # Scrape.
    def collect(self) -> Iterator[Metric]:
        snapshots = [(session.metrics(), carrier) for session, carrier in self._live.values()]
        bytes_total = Counter(self._bytes)
        frames_total = Counter(self._frames)
        resets = Counter(self._resets)
        stalls, dropped, slowdowns = self._credit_stalls, self._dropped, self._slowdowns
        session_stalls = self._session_credit_stalls
        session_stall_seconds = self._session_stall_seconds
        unread = 0
        pressure = dict.fromkeys(("queue", "cpu", "memory", "network"), 0)
        queued: Counter[str] = Counter()
        probes = Counter(self._probes)
        pacers = [snap.pacer for snap, _ in snapshots if snap.pacer is not None]
        for pacer in pacers:
            probes["productive"] += pacer.productive_probes
            probes["unproductive"] += pacer.unproductive_probes
        for snapshot, _ in snapshots:
            for direction, table in (
                ("in", snapshot.bytes_in_by_class),
                ("out", snapshot.bytes_out_by_class),
            ):
                for cls, value in table.items():
                    bytes_total[(direction, cls)] += value
            for direction, table in (
                ("in", snapshot.frames_in_by_class),
                ("out", snapshot.frames_out_by_class),
            ):
                for cls, value in table.items():
                    frames_total[(direction, cls)] += value
            for code, count in snapshot.resets_by_code.items():
                resets[_code_name(code)] += count
            stalls += snapshot.credit_stalls
            session_stalls += snapshot.session_credit_stalls
            session_stall_seconds += snapshot.session_credit_stall_seconds
            unread += snapshot.unread_bytes
            dropped += snapshot.dropped_bytes
            slowdowns += snapshot.pacing_slowdowns
            if snapshot.peer_pressure is not None:
                for kind, level in zip(pressure, snapshot.peer_pressure, strict=True):
                    pressure[kind] = max(pressure[kind], level)
            for stream in snapshot.streams:
                queued[stream.traffic_class] += stream.queued_bytes

        yield from self._counter(
            "accessfabric_stream_bytes",
            "Stream payload bytes by direction and traffic class.",
            ["direction", "traffic_class"],
            bytes_total.items(),
            zero_keys=[(d, c) for d in ("in", "out") for c in _CLASSES],
        )
        yield from self._counter(
            "accessfabric_stream_frames",
            "DATA frames by direction and traffic class.",
            ["direction", "traffic_class"],
            frames_total.items(),
            zero_keys=[(d, c) for d in ("in", "out") for c in _CLASSES],
        )
        yield from self._counter(
            "accessfabric_stream_resets",
            "Streams reset, by error code.",
            ["code"],
            [((k,), v) for k, v in resets.items()],
        )
        yield from self._counter(
            "accessfabric_session_terminations",
            "Sessions ended, by error code and which side ended them.",
            ["code", "side"],
            self._terminations.items(),
        )
        yield from self._counter(
            "accessfabric_sessions_opened",
            "Sessions created, by carrier.",
            ["carrier"],
            [((k,), v) for k, v in self._opened.items()],
        )
        yield from self._counter(
            "accessfabric_auth_failures",
            "Failed session authentications, by reason.",
            ["reason"],
            [((k,), v) for k, v in self.auth_failures.items()],
        )
        yield CounterMetricFamily(
            "accessfabric_credit_stalls",
            "Times a stream waited for credit (its own or its session's).",
            value=stalls,
        )
        yield CounterMetricFamily(
            "accessfabric_session_credit_stalls",
            "Times a stream with data and stream credit waited for its session's credit.",
            value=session_stalls,
        )
        yield CounterMetricFamily(
            "accessfabric_session_credit_stall_seconds",
            "Time sessions' stream data waited for session credit.",
            value=session_stall_seconds,
        )
        yield GaugeMetricFamily(
            "accessfabric_unread_bytes",
            "Bytes received on live sessions that their readers have not consumed yet.",
            value=unread,
        )
        yield CounterMetricFamily(
            "accessfabric_dropped_bytes",
            "Droppable-class bytes dropped at full queues.",
            value=dropped,
        )
        sessions = GaugeMetricFamily(
            "accessfabric_sessions",
            "Live sessions by carrier and state.",
            labels=["carrier", "state"],
        )
        by_state = Counter((carrier, snap.state) for snap, carrier in snapshots)
        for (carrier, state), count in sorted(by_state.items()):
            sessions.add_metric([carrier, state], count)
        yield sessions
        queue = GaugeMetricFamily(
            "accessfabric_queued_bytes",
            "Bytes queued in sessions, not yet sent, by traffic class.",
            labels=["traffic_class"],
        )
        for cls in _CLASSES:
            queue.add_metric([cls], queued.get(cls, 0))
        yield queue
        yield CounterMetricFamily(
            "accessfabric_pacing_slowdowns",
            "Delay-triggered backoffs: RTT samples on which a session's delay-based pacer saw "
            "queueing above its target and shrank its window.",
            value=slowdowns,
        )
        yield from self._counter(
            "accessfabric_pacing_probes",
            "Pacer probes (window raised for one period), by outcome: productive (the "
            "delivery rate followed: the delay was not a queue) or unproductive (a full pipe).",
            ["outcome"],
            [((k,), v) for k, v in probes.items()],
            zero_keys=[("productive",), ("unproductive",)],
        )
        yield GaugeMetricFamily(
            "accessfabric_pacing_limiting_sessions",
            "Live sessions whose pacer limits the shared classes' bytes in flight.",
            value=sum(1 for pacer in pacers if pacer.limiting),
        )
        yield self._histogram(
            "accessfabric_pacing_delivery_rate_bytes",
            "Delivery rate (bytes/s) the pacers of live sessions measured in their last "
            "period, sessions per bucket.",
            [p.delivery_rate for p in pacers if p.delivery_rate is not None],
            RATE_BUCKETS,
        )
        yield self._histogram(
            "accessfabric_pacing_min_rtt_seconds",
            "The pacers' base RTT (lowest filtered data-path RTT of the last 10 s) of live "
            "sessions, sessions per bucket.",
            [p.min_rtt for p in pacers if p.min_rtt is not None],
        )
        yield self._histogram(
            "accessfabric_pacing_queueing_delay_seconds",
            "Queueing delay (filtered RTT above the base) the pacers of live sessions last "
            "saw, sessions per bucket.",
            [p.queueing_delay for p in pacers if p.queueing_delay is not None],
            QUEUEING_BUCKETS,
        )
        peer_pressure = GaugeMetricFamily(
            "accessfabric_peer_pressure_percent",
            "Highest NODE_PRESSURE level peers last reported, by kind.",
            labels=["kind"],
        )
        for kind, level in pressure.items():
            peer_pressure.add_metric([kind], level)
        yield peer_pressure
        yield self._rtt_histogram(snapshots)
        yield self._histogram(
            "accessfabric_session_rtt_jitter_seconds",
            "RTT variation (RFC 6298 rttvar) of live sessions, sessions per bucket.",
            [snap.rttvar for snap, _ in snapshots if snap.rttvar is not None],
        )

    @staticmethod
    def _counter(
        name: str,
        documentation: str,
        labels: list[str],
        values: Iterable[tuple[tuple[str, ...], int]],
        zero_keys: Iterable[tuple[str, ...]] = (),
    ) -> Iterator[Metric]:
        family = CounterMetricFamily(name, documentation, labels=labels)
        merged = dict.fromkeys(zero_keys, 0) | dict(values)
        for key, value in sorted(merged.items()):
            family.add_metric(list(key), value)
        yield family

    @classmethod
    def _rtt_histogram(cls, snapshots: list[tuple[SessionMetrics, str]]) -> Metric:
        return cls._histogram(
            "accessfabric_session_srtt_seconds",
            "Smoothed RTT of live sessions (how many sessions fall in each bucket).",
            [snap.srtt for snap, _ in snapshots if snap.srtt is not None],
        )

    @staticmethod
    def _histogram(
        name: str,
        documentation: str,
        values: list[float],
        bounds: tuple[float, ...] = RTT_BUCKETS,
    ) -> Metric:
        buckets = [(str(b), float(sum(1 for v in values if v <= b))) for b in bounds]
        buckets.append(("+Inf", float(len(values))))
        return GaugeHistogramMetricFamily(
            name, documentation, buckets=buckets, gsum_value=sum(values)
        )


def new_registry(metrics: FabricMetrics) -> CollectorRegistry:
    """A registry of this node's fabric metrics plus the process, GC and build-info ones."""
    from accessfabric.observe.process_metrics import register_process_collectors

    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    register_process_collectors(registry)
    return registry
