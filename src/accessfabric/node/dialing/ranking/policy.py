"""The knobs of endpoint ranking, frozen, with defaults measured on this project's machines.

Defaults and the figures they rest on (2 vCPU AMD EPYC, CPython 3.11.2, uvloop, loopback,
2026-11-27; details in ``docs/endpoint-ranking.md``):

* bulk over the fabric on TCP+TLS moved 27-36 MB/s (loaded machine) while one aioquic
  stream across processes moved 2.1-2.9 MB/s in the same runs (about 12x slower); in one process qh3
  moved 25.1 MB/s against aioquic's 6.7 MB/s, so even the faster QUIC library stays
  several times behind TCP+TLS for bulk.  Hence ``bulk`` puts ``tcp_tls`` (50) 18 points
  above ``direct_quic`` (32): one failure of TCP+TLS costs 13.3 points (10 reliability,
  3.3 latency) and does not flip the order once its backoff ended; two fresh failures
  cost 20 and do.  A label alone never puts bulk on QUIC.
* small-message echo RTT: asyncio TLS 81 us, qh3 152 us, aioquic 594 us; handshake TLS
  3.5 ms, qh3 4.7 ms.  QUIC's real gains (no head-of-line blocking under loss,
  connection migration on mobile networks) do not show on loopback, so ``interactive``
  keeps ``tcp_tls`` first but only 4 points above ``direct_quic``: a measured dial
  latency difference or one failure reorders them.
* ``websocket`` is TCP+TLS plus HTTP upgrade and WebSocket framing (the ``websockets``
  library alone moved 156 MB/s where raw TLS moved 283 MB/s): a compatibility path
  16 points below ``tcp_tls`` (more than one failure costs, so TCP+TLS is first again
  after one blip's backoff), just above QUIC for bulk.
* ``https_fallback`` weighs 0 and, on top, pays ``emergency_penalty`` while any other
  candidate is out of backoff: it is dialed last, first only when everything else is
  failing.

Scores are points; every factor's range is bounded so that the ordering guarantees
(backoff below any candidate not in backoff, the fallback below every other candidate,
capacity pressure softer than one failure) hold for any policy that passes validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from accessfabric.node.dialing.ranking.candidates import Transport
from accessfabric.wire.registry import TrafficClass


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportWeights:
    """Preference points per transport for one group of traffic classes."""

    direct_quic: float
    tcp_tls: float
    websocket: float
    https_fallback: float

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not math.isfinite(value) or not 0.0 <= value <= 100.0:
                raise ValueError(f"transport weight {item.name} must be within 0..100")

    def weight(self, transport: Transport) -> float:
        value: float = getattr(self, transport.value)
        return value

    def spread(self) -> float:
        values = [getattr(self, item.name) for item in fields(self)]
        return float(max(values) - min(values))


BULK_WEIGHTS = TransportWeights(tcp_tls=50.0, websocket=34.0, direct_quic=32.0, https_fallback=0.0)
INTERACTIVE_WEIGHTS = TransportWeights(
    tcp_tls=50.0, direct_quic=46.0, websocket=40.0, https_fallback=0.0
)
LATENCY_CLASSES = frozenset({TrafficClass.CONTROL, TrafficClass.DNS, TrafficClass.INTERACTIVE})


@dataclass(frozen=True, slots=True, kw_only=True)
class RankingPolicy:
    """How candidates are scored.  Times are seconds, scores are points."""

    bulk: TransportWeights = BULK_WEIGHTS
    """Preference for RELIABLE, BULK, DROPPABLE and a whole session (no class given)."""
    interactive: TransportWeights = INTERACTIVE_WEIGHTS
    """Preference for the classes in ``latency_classes``."""
    latency_classes: frozenset[TrafficClass] = field(default=LATENCY_CLASSES)

    half_life: float = 300.0
    """An observation this old counts half as much as a fresh one."""
    reliability_weight: float = 40.0
    """Points lost by a candidate that always fails."""
    reliability_prior: float = 3.0
    """Pseudo-successes every candidate starts with: one failure costs 10 points, two
    cost 16, so one blip does not outweigh a transport preference but a pattern does."""
    latency_weight: float = 5.0
    """Points lost at ``latency_ceiling``; scaled on a log axis from ``latency_floor``."""
    latency_floor: float = 0.005
    latency_ceiling: float = 5.0
    """The latency every failure (and every sample without a latency) is scored at."""
    latency_prior: float = 0.5
    """Weight of the neutral "not measured" latency every candidate starts with, so the
    latency penalty fades with its evidence: a fresh failure alone costs 3.3 points, two
    cost 4."""
    capacity_penalty_max: float = 8.0
    """Bound of the capacity-pressure penalty: half of it per fresh capacity_limited
    observation, never more than it, and never more than one failure costs."""
    remote_hint_weight: float = 0.5
    """A remote hint counts this much as a local observation of the same age."""
    throughput_weight: float = 20.0
    """Points a transport loses for classes outside ``latency_classes`` when its measured
    carrier throughput is a tenth (or less) of the best measured transport's; scaled on
    a log axis (half of it at a third).  Nothing is lost without measurements of both."""

    backoff_base: float = 5.0
    backoff_factor: float = 2.0
    backoff_max: float = 300.0
    """After n consecutive failures a candidate is in backoff for
    ``min(backoff_base * backoff_factor ** (n - 1), backoff_max)`` seconds."""
    backoff_penalty: float = 200.0
    emergency_penalty: float = 1000.0

    max_observations_per_candidate: int = 32
    max_hints_per_candidate: int = 8
    max_observation_age: float = 3600.0
    max_tracked_candidates: int = 256
    max_reason_length: int = 120
    max_report_entries: int = 64

    def __post_init__(self) -> None:
        positive = (
            "half_life", "latency_floor", "latency_ceiling", "backoff_base",
            "backoff_max", "max_observation_age",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0")
        if self.latency_ceiling <= self.latency_floor:
            raise ValueError("latency_ceiling must be above latency_floor")
        if self.backoff_factor < 1.0:
            raise ValueError("backoff_factor must be >= 1")
        for name in (
            "reliability_weight", "latency_weight", "capacity_penalty_max", "throughput_weight",
        ):  # fmt: skip
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a finite number >= 0")
        if (
            self.reliability_prior <= 0
            or self.latency_prior <= 0
            or not 0.0 <= self.remote_hint_weight <= 1.0
        ):
            raise ValueError("priors must be > 0, remote_hint_weight within 0..1")
        if self.capacity_penalty_max > self.one_failure_cost():
            raise ValueError(
                "capacity_penalty_max must not exceed what one failure costs "
                f"({self.one_failure_cost():.2f} points): pressure is not a failure"
            )
        if self.backoff_penalty <= self.spread():
            raise ValueError(f"backoff_penalty must exceed {self.spread():.1f} points")
        if self.emergency_penalty <= self.backoff_penalty + self.spread():
            raise ValueError("emergency_penalty must exceed backoff_penalty + the score spread")
        for name in (
            "max_observations_per_candidate", "max_hints_per_candidate",
            "max_tracked_candidates", "max_reason_length", "max_report_entries",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    def weights_for(self, traffic_class: TrafficClass | None) -> tuple[str, TransportWeights]:
        """(name of the weight group, its weights) for ``traffic_class``."""
        if traffic_class is not None and traffic_class in self.latency_classes:
            return "interactive", self.interactive
        return "bulk", self.bulk

    def one_failure_cost(self) -> float:
        """Reliability points one fresh failure costs a candidate with no other history."""
        prior = self.reliability_prior
        return self.reliability_weight * (1.0 - prior / (prior + 1.0))

    def spread(self) -> float:
        """The widest gap health and preference can open between two candidates."""
        preference = max(self.bulk.spread(), self.interactive.spread())
        return (
            preference
            + self.reliability_weight
            + self.latency_weight
            + self.capacity_penalty_max
            + self.throughput_weight
        )

    def backoff_for(self, consecutive_failures: int) -> float:
        """Seconds of backoff after ``consecutive_failures`` failures in a row."""
        if consecutive_failures <= 0:
            return 0.0
        exponent = min(consecutive_failures - 1, 64)
        return float(min(self.backoff_base * self.backoff_factor**exponent, self.backoff_max))

    def decay(self, age: float) -> float:
        """Weight of an observation ``age`` seconds old (future ones count as fresh)."""
        return float(0.5 ** (max(age, 0.0) / self.half_life))
