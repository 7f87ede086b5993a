"""Order endpoint candidates by transport preference and measured health.

The ranker is pure: it keeps bounded per-candidate history and is told the time.  Feed
it local dials (:meth:`EndpointRanker.record`) and control-plane hints
(:meth:`EndpointRanker.add_remote_hint`); ask it to :meth:`~EndpointRanker.rank` a
peer's candidates and for a bounded :meth:`~EndpointRanker.health_report` to put in
heartbeats.  See ``policy.py`` for the defaults and ``docs/endpoint-ranking.md``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from accessfabric.node.dialing.ranking import scoring
from accessfabric.node.dialing.ranking.candidates import CandidateKey, EndpointCandidate, Transport
from accessfabric.node.dialing.ranking.health import EndpointHealth, HealthEstimate
from accessfabric.node.dialing.ranking.observations import DialObservation, RemoteHint
from accessfabric.node.dialing.ranking.policy import RankingPolicy
from accessfabric.node.dialing.ranking.scoring import RankedCandidate, ScoreReason
from accessfabric.wire.registry import TrafficClass

_NOTHING = HealthEstimate(0.0, 0.0, 0.0, None, 0.0, 0.0, 0.0)
REPORT_TEXT_LIMIT = 256


class EndpointRanker:
    """Health per endpoint, bounded: ``max_tracked_candidates`` endpoints, each with at
    most ``max_observations_per_candidate`` dials and ``max_hints_per_candidate`` hints
    younger than ``max_observation_age``."""

    def __init__(self, policy: RankingPolicy | None = None) -> None:
        self.policy = policy if policy is not None else RankingPolicy()
        self._health: dict[CandidateKey, EndpointHealth] = {}
        self._latest = float("-inf")
        self._throughput: dict[Transport, deque[tuple[float, float]]] = {}

    def __len__(self) -> int:
        return len(self._health)

    def health(self, candidate: EndpointCandidate) -> EndpointHealth | None:
        return self._health.get(candidate.key)

    def record(self, observation: DialObservation) -> None:
        """Learn from one local dial."""
        health = self._entry(observation.candidate)
        health.record(observation, self.policy)
        self._settle(health, observation.at)

    def record_throughput(self, transport: Transport, bytes_per_second: float, at: float) -> None:
        """Learn what a session on ``transport`` moved at its busiest (bytes/s).

        Carrier speed is a property of the transport's implementation on this node (a
        QUIC library, the TLS stack), so it is kept per transport, the last
        ``max_hints_per_candidate`` samples, decayed like dials.
        """
        if not bytes_per_second > 0 or bytes_per_second == float("inf"):
            raise ValueError("bytes_per_second must be a finite number > 0")
        samples = self._throughput.get(transport)
        if samples is None:
            samples = self._throughput[transport] = deque(
                maxlen=self.policy.max_hints_per_candidate
            )
        samples.append((at, bytes_per_second))

    def throughput(self, now: float) -> dict[Transport, float]:
        """Decayed mean measured throughput per transport (bytes/s)."""
        rates: dict[Transport, float] = {}
        policy = self.policy
        for transport, samples in self._throughput.items():
            total = weighted = 0.0
            for at, rate in samples:
                if now - at > policy.max_observation_age:
                    continue
                weight = policy.decay(now - at)
                total += weight
                weighted += weight * rate
            if total > 0:
                rates[transport] = weighted / total
        return rates

    def add_remote_hint(self, hint: RemoteHint) -> None:
        """Learn from another node's view of an endpoint (newest per reporter kept)."""
        health = self._entry(hint.candidate)
        health.add_hint(hint, self.policy)
        self._settle(health, hint.observed_at)

    def add_remote_hints(self, hints: Iterable[RemoteHint]) -> None:
        for hint in hints:
            self.add_remote_hint(hint)

    def prune(self, now: float) -> None:
        """Forget history older than the age limit, and endpoints with nothing left."""
        for key, health in list(self._health.items()):
            health.prune(now, self.policy)
            if health.forgotten(now):
                del self._health[key]

    def rank(
        self,
        candidates: Iterable[EndpointCandidate],
        now: float,
        traffic_class: TrafficClass | None = None,
    ) -> list[RankedCandidate]:
        """Every candidate (duplicates once), best first; ties keep the given order."""
        self.prune(now)
        unique = list({c.key: c for c in reversed(list(candidates))}.values())[::-1]
        in_backoff = {c.key: self._in_backoff(c, now) for c in unique}
        others_usable = sum(
            1
            for c in unique
            if c.transport is not Transport.HTTPS_FALLBACK and not in_backoff[c.key]
        )
        rates = self.throughput(now)
        ranked = [self._score(c, now, traffic_class, others_usable, rates) for c in unique]
        order = sorted(range(len(ranked)), key=lambda i: (-ranked[i].score, i))
        return [ranked[i] for i in order]

    def health_report(self, now: float, limit: int | None = None) -> list[dict[str, object]]:
        """Local dial health of the most recently seen endpoints, JSON-able and bounded.

        At most ``min(limit, max_report_entries)`` entries, text fields cut to 256
        characters; remote hints are left out so reports never echo the control plane.
        """
        self.prune(now)
        bound = self.policy.max_report_entries
        bound = bound if limit is None else max(0, min(limit, bound))
        seen = [h for h in self._health.values() if h.observations]
        seen.sort(key=lambda h: h.last_seen, reverse=True)
        return [self._report_entry(h, now) for h in seen[:bound]]

    # ------------------------------------------------------------------------ internals

    def _entry(self, candidate: EndpointCandidate) -> EndpointHealth:
        health = self._health.get(candidate.key)
        if health is None:
            health = self._health[candidate.key] = EndpointHealth(candidate, self.policy)
        return health

    def _settle(self, health: EndpointHealth, at: float) -> None:
        """Prune the touched endpoint and evict the least recently seen beyond the bound."""
        self._latest = max(self._latest, at)
        health.prune(self._latest, self.policy)
        if health.forgotten(self._latest):
            self._health.pop(health.candidate.key, None)
        while len(self._health) > self.policy.max_tracked_candidates:
            stalest = min(self._health.values(), key=lambda h: h.last_seen)
            del self._health[stalest.candidate.key]

    def _in_backoff(self, candidate: EndpointCandidate, now: float) -> bool:
        health = self._health.get(candidate.key)
        return health is not None and health.in_backoff(now)

    def _score(
        self,
        candidate: EndpointCandidate,
        now: float,
        traffic_class: TrafficClass | None,
        others_usable: int,
        rates: dict[Transport, float] | None = None,
    ) -> RankedCandidate:
        policy = self.policy
        health = self._health.get(candidate.key)
        estimate = health.estimate(now, policy) if health is not None else _NOTHING
        reasons: list[ScoreReason | None] = [
            scoring.transport_reason(candidate, policy, traffic_class),
            scoring.reliability_reason(estimate, policy),
            scoring.latency_reason(estimate, policy),
            scoring.capacity_reason(estimate, policy),
            scoring.throughput_reason(candidate, rates or {}, policy, traffic_class),
        ]
        backing_off = health is not None and health.in_backoff(now)
        if health is not None and backing_off:
            reasons.append(scoring.backoff_reason(health, now, policy))
        if estimate.remote_weight > 0.0 and health is not None:
            reporters = ", ".join(sorted(health.hints))[:REPORT_TEXT_LIMIT]
            why = f"remote hints weigh {estimate.remote_weight:.2f} vs local "
            why += f"{estimate.local_weight:.2f} (reporters: {reporters})"
            reasons.append(ScoreReason("remote hints", 0.0, why))
        reasons.append(scoring.emergency_reason(candidate, others_usable, policy))
        kept = tuple(r for r in reasons if r is not None)
        return RankedCandidate(
            candidate=candidate,
            score=sum(r.contribution for r in kept),
            reasons=kept,
            in_backoff=backing_off,
            backoff_remaining=health.backoff_remaining(now) if health is not None else 0.0,
        )

    def _report_entry(self, health: EndpointHealth, now: float) -> dict[str, object]:
        estimate = health.estimate(now, self.policy, include_remote=False)
        dials = estimate.successes + estimate.failures
        candidate = health.candidate
        return {
            "transport": candidate.transport.value,
            "address": candidate.address[:REPORT_TEXT_LIMIT],
            "node_id": None if candidate.node_id is None else candidate.node_id[:REPORT_TEXT_LIMIT],
            "fingerprint": (
                None if candidate.fingerprint is None else candidate.fingerprint[:REPORT_TEXT_LIMIT]
            ),
            "success_rate": None if dials == 0 else round(estimate.successes / dials, 3),
            "latency_ms": None if estimate.latency is None else round(estimate.latency * 1000, 1),
            "dials": round(dials, 3),
            "capacity_limited": round(estimate.capacity_limited, 3),
            "consecutive_failures": health.consecutive_failures,
            "backoff_remaining_s": round(health.backoff_remaining(now), 1),
            "age_s": round(max(0.0, now - health.last_seen), 1),
            "last_reason": health.last_reason[:REPORT_TEXT_LIMIT],
        }
