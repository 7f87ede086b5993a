"""What the ranker learns from: local :class:`DialObservation` and remote :class:`RemoteHint`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from accessfabric.node.dialing.ranking.candidates import EndpointCandidate


class DialOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    CAPACITY_LIMITED = "capacity_limited"
    """The endpoint answered but refused more work (e.g. a QUIC stream limit): load
    pressure, not a broken path."""


def _check_time(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value!r}")


def _check_latency(latency: float | None) -> None:
    if latency is not None and (not math.isfinite(latency) or latency < 0):
        raise ValueError(f"latency must be a finite number of seconds >= 0, not {latency!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DialObservation:
    """One local dial of ``candidate`` at ``at`` (seconds on the node's monotonic clock).

    ``latency`` is seconds from dial start to a ready session, ``None`` when the dial
    failed before that.  A failure is always scored at the worst latency, whatever
    ``latency`` says: time-to-fail is not speed.
    """

    candidate: EndpointCandidate
    outcome: DialOutcome
    at: float
    latency: float | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        _check_time("at", self.at)
        _check_latency(self.latency)


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteHint:
    """Health of ``candidate`` as another node saw it (``peer_endpoint_observations``).

    ``observed_at`` must already be on this node's clock (the caller converts the
    control plane's age, e.g. ``now - reported_age``).  ``latency`` is ``None`` when the
    reporter had no successful dial to time; it then counts as the worst latency.
    """

    candidate: EndpointCandidate
    success_rate: float
    observed_at: float
    reporter: str
    latency: float | None = None

    def __post_init__(self) -> None:
        _check_time("observed_at", self.observed_at)
        _check_latency(self.latency)
        if not 0.0 <= self.success_rate <= 1.0:
            raise ValueError(f"success_rate must be within 0..1, not {self.success_rate!r}")
