"""Prometheus metrics of the carriers' own loss and RTT figures (TCP_INFO, QUIC recovery).

Each carrier connection has a :class:`~accessfabric.carriers.base.CarrierStatsProbe`;
:class:`CarrierLossMetrics` reads the probes of the live sessions when scraped (one read
per connection, never per packet) and labels everything by carrier kind only.

Counters must not go backwards when a session ends, so when the last live session of
a connection ends its figures are folded into a running total.  A probe folded once
remembers what was folded (its baseline): a QUIC connection whose streams come and go
is then never counted twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from weakref import WeakKeyDictionary

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from accessfabric.carriers.base import CarrierStats, CarrierStatsProbe

RTT_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

LiveProbes = Callable[[], Iterable[tuple[CarrierStatsProbe, str]]]
"""The probes of the live sessions, each with its carrier kind (may repeat a probe)."""

COUNTERS = {
    "segments_sent": (
        "accessfabric_carrier_segments_sent",
        "TCP segments sent by the carriers' connections (tcpi_segs_out).",
    ),
    "segments_retransmitted": (
        "accessfabric_carrier_retransmitted_segments",
        "TCP segments retransmitted (tcpi_total_retrans).",
    ),
    "packets_lost": (
        "accessfabric_carrier_lost_packets",
        "QUIC packets declared lost by loss recovery (their frames are sent again).",
    ),
    "bytes_sent": (
        "accessfabric_carrier_sent_bytes",
        "TCP payload bytes sent, retransmissions included (tcpi_bytes_sent, Linux 4.19+).",
    ),
    "bytes_retransmitted": (
        "accessfabric_carrier_retransmitted_bytes",
        "TCP payload bytes retransmitted (tcpi_bytes_retrans, Linux 4.19+).",
    ),
    "timeouts": (
        "accessfabric_carrier_timeouts",
        "Retransmission timeouts: TCP RTOs (tcpi_total_rto, Linux 6.7+), QUIC PTOs.",
    ),
}


def _counts(stats: CarrierStats, baseline: CarrierStats | None) -> Iterator[tuple[str, int]]:
    for field in COUNTERS:
        value = getattr(stats, field)
        if value is None:
            continue
        before = getattr(baseline, field) if baseline is not None else None
        yield field, max(0, value - (before or 0))


class CarrierLossMetrics(Collector):
    """Carrier loss, retransmit and RTT metrics of one node (see the module doc)."""

    def __init__(self, live: LiveProbes) -> None:
        self._live = live
        self._closed: Counter[tuple[str, str]] = Counter()  # (field, carrier)
        self._baseline: WeakKeyDictionary[CarrierStatsProbe, CarrierStats] = WeakKeyDictionary()

    def finished(self, probe: CarrierStatsProbe, carrier: str) -> None:
        """A session on ``probe`` ended: fold its connection in if no live session shares it."""
        if any(live is probe for live, _ in self._live()):
            return
        stats = probe.sample()
        if stats is None:
            return
        for field, value in _counts(stats, self._baseline.get(probe)):
            self._closed[(field, carrier)] += value
        self._baseline[probe] = stats

    def collect(self) -> Iterator[Metric]:
        sampled: dict[int, tuple[CarrierStatsProbe, str, CarrierStats]] = {}
        for probe, carrier in self._live():
            if id(probe) not in sampled:
                stats = probe.sample()
                if stats is not None:
                    sampled[id(probe)] = (probe, carrier, stats)
        totals = Counter(self._closed)
        lost_now: Counter[str] = Counter()
        rtts: dict[str, list[float]] = {}
        jitters: dict[str, list[float]] = {}
        for probe, carrier, stats in sampled.values():
            for field, value in _counts(stats, self._baseline.get(probe)):
                totals[(field, carrier)] += value
            if stats.lost_now is not None:
                lost_now[carrier] += stats.lost_now
            if stats.rtt is not None:
                rtts.setdefault(carrier, []).append(stats.rtt)
            if stats.rtt_var is not None:
                jitters.setdefault(carrier, []).append(stats.rtt_var)

        for field, (name, documentation) in COUNTERS.items():
            family = CounterMetricFamily(name, documentation, labels=["carrier"])
            for (counted, carrier), value in sorted(totals.items()):
                if counted == field:
                    family.add_metric([carrier], value)
            yield family
        lost = GaugeMetricFamily(
            "accessfabric_carrier_lost_segments",
            "TCP segments live connections consider lost and not yet repaired (tcpi_lost).",
            labels=["carrier"],
        )
        for carrier, value in sorted(lost_now.items()):
            lost.add_metric([carrier], value)
        yield lost
        ratio = GaugeMetricFamily(
            "accessfabric_carrier_retransmit_ratio",
            "Retransmitted / sent TCP segments since the node started "
            "(for a window, divide the rates of the two counters).",
            labels=["carrier"],
        )
        for (field, carrier), sent in sorted(totals.items()):
            if field == "segments_sent" and sent > 0:
                ratio.add_metric([carrier], totals[("segments_retransmitted", carrier)] / sent)
        yield ratio
        yield _histogram(
            "accessfabric_carrier_rtt_seconds",
            "Smoothed RTT the carriers' transports measure (TCP, QUIC): connections per bucket.",
            rtts,
        )
        yield _histogram(
            "accessfabric_carrier_rtt_jitter_seconds",
            "RTT variation the kernel measures (tcpi_rttvar), connections per bucket.",
            jitters,
        )


def _histogram(name: str, documentation: str, by_carrier: dict[str, list[float]]) -> Metric:
    family = GaugeHistogramMetricFamily(name, documentation, labels=["carrier"])
    for carrier, values in sorted(by_carrier.items()):
        buckets = [(str(b), float(sum(1 for v in values if v <= b))) for b in RTT_BUCKETS]
        buckets.append(("+Inf", float(len(values))))
        family.add_metric([carrier], buckets, gsum_value=sum(values))
    return family
