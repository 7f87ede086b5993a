"""One candidate's score as a list of :class:`ScoreReason` that add up to it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from accessfabric.node.dialing.ranking.candidates import EndpointCandidate, Transport
from accessfabric.node.dialing.ranking.health import EndpointHealth, HealthEstimate
from accessfabric.node.dialing.ranking.policy import RankingPolicy
from accessfabric.wire.registry import TrafficClass


@dataclass(frozen=True, slots=True)
class ScoreReason:
    """One factor of a score: ``contribution`` points, and why."""

    factor: str
    contribution: float
    explanation: str

    def __str__(self) -> str:
        return f"{self.factor} {self.contribution:+.1f}: {self.explanation}"


@dataclass(frozen=True, slots=True)
class RankedCandidate:
    """A candidate, its place-deciding score and the reasons that sum to it."""

    candidate: EndpointCandidate
    score: float
    reasons: tuple[ScoreReason, ...]
    in_backoff: bool
    backoff_remaining: float

    def to_dict(self) -> dict[str, object]:
        """JSON-able form for status output."""
        return {
            "transport": self.candidate.transport.value,
            "address": self.candidate.address,
            "score": round(self.score, 2),
            "in_backoff": self.in_backoff,
            "backoff_remaining_s": round(self.backoff_remaining, 1),
            "reasons": [
                {"factor": r.factor, "contribution": round(r.contribution, 2), "why": r.explanation}
                for r in self.reasons
            ],
        }


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def transport_reason(
    candidate: EndpointCandidate, policy: RankingPolicy, traffic_class: TrafficClass | None
) -> ScoreReason:
    group, weights = policy.weights_for(traffic_class)
    target = "a whole session" if traffic_class is None else f"class {traffic_class.name.lower()}"
    return ScoreReason(
        "transport",
        weights.weight(candidate.transport),
        f"{candidate.transport.value} preference for {target} ({group} weights)",
    )


def reliability_reason(estimate: HealthEstimate, policy: RankingPolicy) -> ScoreReason:
    prior = policy.reliability_prior
    rate = (estimate.successes + prior) / (estimate.successes + estimate.failures + prior)
    if estimate.successes + estimate.failures == 0.0:
        why = "no dials observed yet"
    else:
        why = (
            f"decayed {estimate.successes:.2f} successes / {estimate.failures:.2f} failures "
            f"(+{prior:g} assumed successes): {rate:.0%}"
        )
    return ScoreReason("reliability", policy.reliability_weight * (rate - 1.0), why)


def latency_reason(estimate: HealthEstimate, policy: RankingPolicy) -> ScoreReason:
    latency = estimate.latency
    if latency is None:
        return ScoreReason("latency", 0.0, "not measured yet")
    floor, ceiling = policy.latency_floor, policy.latency_ceiling
    share = math.log(max(latency, floor) / floor) / math.log(ceiling / floor)
    share = min(max(share, 0.0), 1.0)
    confidence = estimate.latency_weight / (estimate.latency_weight + policy.latency_prior)
    why = (
        f"decayed mean dial latency {_ms(latency)} (failures count as {_ms(ceiling)}), "
        f"confidence {confidence:.0%}"
    )
    return ScoreReason("latency", -policy.latency_weight * share * confidence, why)


def capacity_reason(estimate: HealthEstimate, policy: RankingPolicy) -> ScoreReason | None:
    pressure = estimate.capacity_limited
    if pressure <= 0.0:
        return None
    penalty = policy.capacity_penalty_max * (1.0 - 0.5**pressure)
    why = f"capacity pressure {pressure:.2f} (decayed), bounded at {policy.capacity_penalty_max:g}"
    return ScoreReason("capacity", -penalty, why)


def backoff_reason(health: EndpointHealth, now: float, policy: RankingPolicy) -> ScoreReason:
    remaining = health.backoff_remaining(now)
    why = (
        f"{health.consecutive_failures} failure(s) in a row, retried first again in "
        f"{remaining:.1f} s; kept as a later fallback"
    )
    if health.last_reason:
        why += f" (last: {health.last_reason})"
    return ScoreReason("backoff", -policy.backoff_penalty, why)


def throughput_reason(
    candidate: EndpointCandidate,
    rates: dict[Transport, float],
    policy: RankingPolicy,
    traffic_class: TrafficClass | None,
) -> ScoreReason | None:
    """Measured carrier throughput against the best measured transport (bulk classes)."""
    if traffic_class is not None and traffic_class in policy.latency_classes:
        return None
    rate = rates.get(candidate.transport)
    if rate is None or not rates:
        return None
    best_transport = max(rates, key=lambda t: rates[t])
    best = rates[best_transport]
    share = min(1.0, max(0.0, math.log10(best / rate))) if rate > 0 else 1.0
    why = (
        f"measured {rate / 1e6:.1f} MB/s on {candidate.transport.value}, "
        f"best {best / 1e6:.1f} MB/s on {best_transport.value}"
    )
    return ScoreReason("throughput", -policy.throughput_weight * share, why)


def emergency_reason(
    candidate: EndpointCandidate, others_usable: int, policy: RankingPolicy
) -> ScoreReason | None:
    if candidate.transport is not Transport.HTTPS_FALLBACK:
        return None
    if others_usable:
        why = f"emergency only: {others_usable} other candidate(s) not in backoff"
        return ScoreReason("emergency", -policy.emergency_penalty, why)
    return ScoreReason("emergency", 0.0, "every other candidate is failing (in backoff)")
