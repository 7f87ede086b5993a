"""Dial ranked candidates in order until one works: :func:`dial_ranked`.

No sockets here: ``dial_one(candidate)`` does the dialing and raises on failure.  Every
attempt becomes a :class:`DialObservation` in the ranker, a :class:`DialAttempt` in the
result, and a tick in :class:`DialCounters`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from accessfabric.node.dialing.ranking.candidates import EndpointCandidate
from accessfabric.node.dialing.ranking.observations import DialObservation, DialOutcome
from accessfabric.node.dialing.ranking.ranker import EndpointRanker
from accessfabric.node.dialing.ranking.scoring import RankedCandidate

T = TypeVar("T")
MAX_REASON_KINDS = 32
OTHER_KIND = "other"


class CapacityLimitedError(Exception):
    """Raised by a dialer when the endpoint refused for load (e.g. QUIC stream limit)."""


@dataclass(frozen=True, slots=True)
class DialAttempt:
    """One candidate tried: what happened, why, and how long it took."""

    candidate: EndpointCandidate
    outcome: DialOutcome
    kind: str
    """Short failure class (the exception type name), '' on success."""
    reason: str
    latency: float


class AllCandidatesFailed(Exception):
    """No candidate could be dialed; ``attempts`` holds every one's reason, in order."""

    def __init__(self, attempts: Sequence[DialAttempt]) -> None:
        self.attempts = tuple(attempts)
        if attempts:
            detail = "; ".join(f"{a.candidate.label()}: {a.reason}" for a in attempts)
        else:
            detail = "no endpoint candidates"
        super().__init__(f"all {len(self.attempts)} endpoint candidate(s) failed: {detail}")


@dataclass
class DialCounters:
    """Counters for the metrics layer; the reason-kind map holds at most 32 keys."""

    attempts: int = 0
    successes: int = 0
    capacity_limited: int = 0
    exhausted: int = 0
    """Dials where every candidate failed."""
    pinned_selections: int = 0
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    selected_by_transport: dict[str, int] = field(default_factory=dict)
    last_failure_reason: str = ""
    last_selected: str = ""

    def count_failure(self, kind: str, reason: str) -> None:
        if kind not in self.failures_by_kind and len(self.failures_by_kind) >= MAX_REASON_KINDS:
            kind = OTHER_KIND
        self.failures_by_kind[kind] = self.failures_by_kind.get(kind, 0) + 1
        self.last_failure_reason = reason


def classify(error: Exception) -> tuple[DialOutcome, str, str]:
    """(outcome, kind, reason) of a dial that raised ``error``."""
    kind = type(error).__name__
    outcome = (
        DialOutcome.CAPACITY_LIMITED
        if isinstance(error, CapacityLimitedError)
        else DialOutcome.FAILURE
    )
    text = str(error)
    return outcome, kind, f"{kind}: {text}" if text else kind


async def dial_ranked(
    ranked: Sequence[RankedCandidate],
    dial_one: Callable[[EndpointCandidate], Awaitable[T]],
    *,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ranker: EndpointRanker | None = None,
    counters: DialCounters | None = None,
    clock: Callable[[], float] | None = None,
) -> tuple[T, list[DialAttempt]]:
    """Try ``ranked`` in order; return the first success and every attempt made.

    ``clock`` defaults to the running loop's time (the ranker's ``now``).  Raises
    :class:`AllCandidatesFailed` after the last candidate failed; cancellation passes
    through untouched (the interrupted attempt is not recorded).
    """
    now = clock if clock is not None else asyncio.get_running_loop().time
    counters = counters if counters is not None else DialCounters()
    attempts: list[DialAttempt] = []
    for index, entry in enumerate(ranked):
        candidate = entry.candidate
        counters.attempts += 1
        started = now()
        try:
            result = await dial_one(candidate)
        except Exception as error:
            outcome, kind, reason = classify(error)
            attempt = DialAttempt(candidate, outcome, kind, reason, now() - started)
            attempts.append(attempt)
            _observe(ranker, attempt, started)
            if outcome is DialOutcome.CAPACITY_LIMITED:
                counters.capacity_limited += 1
            counters.count_failure(kind, f"{candidate.label()}: {reason}")
            left = len(ranked) - index - 1
            log.info("dial %s failed (%s); %d fallback(s) left", candidate.label(), reason, left)
            continue
        attempt = DialAttempt(candidate, DialOutcome.SUCCESS, "", "", now() - started)
        attempts.append(attempt)
        _observe(ranker, attempt, started)
        _count_selection(counters, candidate)
        log.info(
            "dial selected %s transport=%s pinned=%s score=%.1f attempts=%d fallbacks_left=%d",
            candidate.address,
            candidate.transport.value,
            candidate.pinned,
            entry.score,
            len(attempts),
            len(ranked) - index - 1,
        )
        return result, attempts
    counters.exhausted += 1
    failure = AllCandidatesFailed(attempts)
    log.warning("%s", failure)
    raise failure


def _observe(ranker: EndpointRanker | None, attempt: DialAttempt, started: float) -> None:
    if ranker is None:
        return
    success = attempt.outcome is DialOutcome.SUCCESS
    ranker.record(
        DialObservation(
            candidate=attempt.candidate,
            outcome=attempt.outcome,
            at=started + attempt.latency,
            latency=attempt.latency if success else None,
            reason=attempt.reason,
        )
    )


def _count_selection(counters: DialCounters, candidate: EndpointCandidate) -> None:
    counters.successes += 1
    transport = candidate.transport.value
    counters.selected_by_transport[transport] = counters.selected_by_transport.get(transport, 0) + 1
    counters.pinned_selections += int(candidate.pinned)
    counters.last_selected = candidate.label()
