"""Route switches at the source, by reason, and how long streams took to recover.

:class:`~accessfabric.node.routing.routes.RouteManager` abandons a route for a stream when
its first hop's session ends or it sends GOAWAY, reports pressure, a ROUTE_UPDATE
fences the route, a relay resets the stream with ``ROUTE_REJECTED`` or the stream
stalls; the stream then resumes on an alternate route.  :class:`RouteSwitches` counts
every stream moved, under the reason the route was abandoned for
(``accessfabric_route_switches_total{reason}``), and the recovery time
(``accessfabric_route_recovery_seconds{reason}``): from the moment the failure was
noticed (the stream marked broken) to the first ACK the far end sent on the new
route.  Reasons are a fixed set (:class:`SwitchReason`): never a stream, peer or route.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from accessfabric.errors import ErrorCode
from accessfabric.node.streams.connection import StreamResetError
from accessfabric.session import events as ev


class SwitchReason(enum.StrEnum):
    """Why a route was abandoned for a stream (the ``reason`` label)."""

    SESSION_LOST = "session_lost"
    """The first hop's session ended: carrier lost or closed, or the peer ended it."""
    PING_TIMEOUT = "ping_timeout"
    """This node ended the first hop's session: a keepalive PING went unanswered."""
    GOAWAY = "goaway"
    """The first hop sent GOAWAY (draining or closing the session)."""
    PRESSURE = "pressure"
    """The first hop reported NODE_PRESSURE at or above ``pressure_threshold``."""
    FENCED = "fenced"
    """A ROUTE_UPDATE carried a newer epoch of the route (the lease was replaced)."""
    ROUTE_REJECTED = "route_rejected"
    """A relay reset the stream with ``ROUTE_REJECTED`` (lease refused, downstream lost)."""
    STALLED = "stalled"
    """Unacknowledged bytes and no ACK progress for ``stall_timeout``."""
    OTHER = "other"
    """Any other error of the stream's hop (kept so that every switch is counted)."""


RECOVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of ``accessfabric_route_recovery_seconds``; +Inf follows."""


class RouteFailure(ConnectionError):
    """The route executor abandoned a stream's route; ``reason`` says why."""

    def __init__(self, reason: SwitchReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def session_end_reason(ended: ev.SessionTerminated) -> SwitchReason:
    """The reason for a switch caused by the end of the first hop's session."""
    if ended.error_code == ErrorCode.TIMEOUT and not ended.remote:
        return SwitchReason.PING_TIMEOUT
    return SwitchReason.SESSION_LOST


def failure_reason(error: BaseException, ended: ev.SessionTerminated | None) -> SwitchReason:
    """The reason for ``error``, the hop stream's failure (``ended``: its session's end)."""
    if isinstance(error, RouteFailure):
        return error.reason
    if isinstance(error, StreamResetError) and error.code == ErrorCode.ROUTE_REJECTED:
        return SwitchReason.ROUTE_REJECTED
    if ended is not None:  # a read or write saw the session end before the watcher did
        return session_end_reason(ended)
    return SwitchReason.OTHER


class RouteSwitches(Collector):
    """Switch counts and the recovery-time histogram, both by :class:`SwitchReason`."""

    def __init__(self) -> None:
        self.counts: Counter[SwitchReason] = Counter()
        self._buckets: dict[SwitchReason, list[int]] = {}
        self._sums: dict[SwitchReason, float] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def switched(self, reason: SwitchReason) -> None:
        """A stream now runs on another route, having left its route for ``reason``."""
        self.counts[reason] += 1

    def recovered(self, reason: SwitchReason, seconds: float) -> None:
        """The far end acknowledged on the new route ``seconds`` after the failure."""
        buckets = self._buckets.setdefault(reason, [0] * (len(RECOVERY_BUCKETS) + 1))
        buckets[bisect_left(RECOVERY_BUCKETS, seconds)] += 1
        self._sums[reason] = self._sums.get(reason, 0.0) + seconds

    def collect(self) -> Iterator[Metric]:
        switches = CounterMetricFamily(
            "accessfabric_route_switches",
            "Streams moved to an alternate route (resumed from the last end-to-end ACK), "
            "by why the route was left: " + ", ".join(r.value for r in SwitchReason) + ".",
            labels=["reason"],
        )
        for reason in SwitchReason:
            if reason in self.counts:
                switches.add_metric([reason.value], self.counts[reason])
        yield switches
        recovery = HistogramMetricFamily(
            "accessfabric_route_recovery_seconds",
            "Seconds from a route failure being noticed (the stream marked broken) to the "
            "first ACK the far end sent on the new route, by switch reason.",
            labels=["reason"],
        )
        for reason in SwitchReason:
            counts = self._buckets.get(reason)
            if counts is None:
                continue
            cumulative, running = [], 0
            for bound, count in zip((*RECOVERY_BUCKETS, float("inf")), counts, strict=True):
                running += count
                cumulative.append((_bound(bound), running))
            recovery.add_metric([reason.value], cumulative, self._sums[reason])
        yield recovery


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)
