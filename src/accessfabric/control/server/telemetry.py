"""Telemetry sampling (issue 17): detailed reports at a flat rate whatever the fleet size.

Every heartbeat carries a node's liveness, load and placement facts; the *detailed*
telemetry (its busiest streams, leased routes with their bytes, endpoint health, relay
usage per tenant) is what costs the control plane most to parse and keep.  The control
plane tells each node, in every heartbeat reply, ``telemetry_every``: send the detail
with one heartbeat in that many.  It is chosen so the whole fleet's detailed reports
arrive at about ``telemetry_reports_per_second`` (:class:`ControlConfig`): with N nodes
heartbeating every T seconds, ``ceil(N / T / budget)``.  So the sampling rate falls as
the fleet grows and the telemetry cost per second stays flat; cumulative counters
(bytes per class) travel in every heartbeat, so totals stay exact, only the detail is
sampled.  While sampling, a heartbeat without detail keeps the detail of the node's
last one (:func:`carry_detail`), so the console shows it up to ``telemetry_every``
intervals old rather than empty.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accessfabric.control.client.facts import HeartbeatFacts
    from accessfabric.control.server.heartbeats import HeartbeatState

DEFAULT_REPORTS_PER_SECOND = 50.0
"""Detailed telemetry reports per second the control plane budgets for, fleet-wide."""
MAX_EVERY = 1000


def telemetry_every(nodes: int, interval: float, budget: float) -> int:
    """One heartbeat in this many carries the detail (1: all of them)."""
    if nodes <= 0 or interval <= 0 or budget <= 0:
        return 1
    return max(1, min(MAX_EVERY, math.ceil(nodes / interval / budget)))


DETAIL = ("stream_reports", "route_reports", "endpoint_health", "relay_usage")


def carry_detail(previous: HeartbeatState | None, facts: HeartbeatFacts) -> HeartbeatFacts:
    """``facts``, with the previous heartbeat's detail when it brings none."""
    if previous is None or any(getattr(facts, name) for name in DETAIL):
        return facts
    return dataclasses.replace(facts, **{name: getattr(previous.facts, name) for name in DETAIL})
