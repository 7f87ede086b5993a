"""What one endpoint's recent history says: :class:`EndpointHealth` and its estimate.

Statistics are recomputed from the bounded history each time they are asked for, each
observation weighted ``0.5 ** (age / half_life)``: no running sums to drift, and a clock
that is only passed in (``now``) never has to move forward.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

from accessfabric.node.dialing.ranking.candidates import EndpointCandidate
from accessfabric.node.dialing.ranking.observations import DialObservation, DialOutcome, RemoteHint
from accessfabric.node.dialing.ranking.policy import RankingPolicy


@dataclass(frozen=True, slots=True)
class HealthEstimate:
    """Decayed sums at one instant; ``latency`` is ``None`` when nothing was timed."""

    successes: float
    failures: float
    capacity_limited: float
    latency: float | None
    latency_weight: float
    """Decayed weight behind ``latency`` (failures included)."""
    local_weight: float
    remote_weight: float

    @property
    def empty(self) -> bool:
        return self.successes + self.failures + self.capacity_limited == 0.0


class _Sums:
    __slots__ = ("capacity", "failures", "latency_sum", "latency_weight", "successes")

    def __init__(self) -> None:
        self.successes = self.failures = self.capacity = 0.0
        self.latency_sum = self.latency_weight = 0.0

    def add(self, weight: float, success_share: float, latency: float | None, worst: float) -> None:
        """``weight`` of dials of which ``success_share`` succeeded in ``latency``."""
        self.successes += weight * success_share
        self.failures += weight * (1.0 - success_share)
        timed = worst if latency is None else min(latency, worst)
        self.latency_sum += weight * (success_share * timed + (1.0 - success_share) * worst)
        self.latency_weight += weight


class EndpointHealth:
    """Bounded local observations, newest remote hint per reporter, and backoff state."""

    __slots__ = (
        "backoff_until",
        "candidate",
        "consecutive_failures",
        "hints",
        "last_reason",
        "last_seen",
        "observations",
    )

    def __init__(self, candidate: EndpointCandidate, policy: RankingPolicy) -> None:
        self.candidate = candidate
        self.observations: deque[DialObservation] = deque(
            maxlen=policy.max_observations_per_candidate
        )
        self.hints: dict[str, RemoteHint] = {}
        self.consecutive_failures = 0
        self.backoff_until = -math.inf
        self.last_seen = -math.inf
        self.last_reason = ""

    def record(self, observation: DialObservation, policy: RankingPolicy) -> None:
        """Add a local dial; a failure extends the backoff, a success ends it."""
        reason = observation.reason[: policy.max_reason_length]
        if reason != observation.reason or observation.candidate is not self.candidate:
            observation = replace(observation, reason=reason, candidate=self.candidate)
        self.observations.append(observation)
        self.last_seen = max(self.last_seen, observation.at)
        if observation.outcome is DialOutcome.SUCCESS:
            self.consecutive_failures = 0
            self.backoff_until = -math.inf
        elif observation.outcome is DialOutcome.FAILURE:
            self.consecutive_failures += 1
            until = observation.at + policy.backoff_for(self.consecutive_failures)
            self.backoff_until = max(self.backoff_until, until)
            self.last_reason = reason
        else:
            self.last_reason = reason

    def add_hint(self, hint: RemoteHint, policy: RankingPolicy) -> None:
        """Keep the newest hint per reporter, at most ``max_hints_per_candidate``."""
        previous = self.hints.get(hint.reporter)
        if previous is not None and previous.observed_at > hint.observed_at:
            return
        reporter = hint.reporter[: policy.max_reason_length]
        self.hints[reporter] = replace(hint, candidate=self.candidate, reporter=reporter)
        while len(self.hints) > policy.max_hints_per_candidate:
            oldest = min(self.hints.values(), key=lambda h: h.observed_at)
            del self.hints[oldest.reporter]
        self.last_seen = max(self.last_seen, hint.observed_at)

    def prune(self, now: float, policy: RankingPolicy) -> None:
        """Forget observations and hints older than ``max_observation_age``."""
        horizon = now - policy.max_observation_age
        while self.observations and self.observations[0].at < horizon:
            self.observations.popleft()
        if any(o.at < horizon for o in self.observations):  # recorded out of order
            kept = [o for o in self.observations if o.at >= horizon]
            self.observations.clear()
            self.observations.extend(kept)
        for reporter in [r for r, h in self.hints.items() if h.observed_at < horizon]:
            del self.hints[reporter]

    def forgotten(self, now: float) -> bool:
        """Nothing left to remember: no history and no backoff running."""
        return not self.observations and not self.hints and not self.in_backoff(now)

    def in_backoff(self, now: float) -> bool:
        return now < self.backoff_until

    def backoff_remaining(self, now: float) -> float:
        return max(0.0, self.backoff_until - now)

    def estimate(
        self, now: float, policy: RankingPolicy, *, include_remote: bool = True
    ) -> HealthEstimate:
        """Decayed successes, failures, capacity pressure and mean latency at ``now``.

        Failures, and successes without a latency, count at ``latency_ceiling``.
        """
        worst = policy.latency_ceiling
        sums = _Sums()
        capacity = local = remote = 0.0
        for observation in self.observations:
            weight = policy.decay(now - observation.at)
            local += weight
            if observation.outcome is DialOutcome.CAPACITY_LIMITED:
                capacity += weight
            elif observation.outcome is DialOutcome.SUCCESS:
                sums.add(weight, 1.0, observation.latency, worst)
            else:
                sums.add(weight, 0.0, None, worst)
        if include_remote:
            for hint in self.hints.values():
                weight = policy.remote_hint_weight * policy.decay(now - hint.observed_at)
                remote += weight
                sums.add(weight, hint.success_rate, hint.latency, worst)
        latency = sums.latency_sum / sums.latency_weight if sums.latency_weight > 0 else None
        return HealthEstimate(
            successes=sums.successes,
            failures=sums.failures,
            capacity_limited=capacity,
            latency=latency,
            latency_weight=sums.latency_weight,
            local_weight=local,
            remote_weight=remote,
        )
