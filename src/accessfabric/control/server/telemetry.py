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
import json
import math
from typing import TYPE_CHECKING, Any

from accessfabric.control.server.leasing import SHARED_TENANT

if TYPE_CHECKING:
    from accessfabric.control.client.facts import HeartbeatFacts
    from accessfabric.control.server.heartbeats import HeartbeatState, HeartbeatTable
    from accessfabric.control.server.registry import NodeRegistry, RegisteredNode

DEFAULT_REPORTS_PER_SECOND = 50.0
"""Detailed telemetry reports per second the control plane budgets for, fleet-wide."""
MAX_EVERY = 1000
OBSERVER_VIEW_TTL = 1.0
"""Seconds one partition's ``GET /v1/telemetry`` answer is served again (ObserverViews)."""


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


def observer_view(
    asking: RegisteredNode, registry: NodeRegistry, heartbeats: HeartbeatTable, now: float
) -> dict[str, Any]:
    """``GET /v1/telemetry`` for a node holding the ``observer`` role (ADR 0038): each node
    of its partition with health, heartbeat age, sessions, cumulative bytes per class and
    the relay usage it reports — the counters of the heartbeats as the table holds them
    (cumulative bytes exact in every heartbeat, relay usage sampled, the last kept).

    Least knowledge: an observer of a tenant sees that tenant's nodes, and of the shared
    infrastructure only their relay usage *for that tenant*; an observer of the shared
    tenant (the operator's) sees every node."""
    tenant = asking.record.tenant
    if tenant == SHARED_TENANT:
        nodes = registry.all()
    else:
        nodes = registry.of_tenant(tenant) + registry.of_tenant(SHARED_TENANT)
    rows = []
    for node in sorted(nodes, key=lambda n: n.node_id):
        state = heartbeats.get(node.node_id)
        if state is None:
            continue
        facts, record = state.facts, node.record
        mine = tenant in (SHARED_TENANT, record.tenant)
        relay = [
            {"tenant": u.tenant, "traffic_class": u.traffic_class,
             "bytes": u.bytes_from_source + u.bytes_to_source}
            for u in facts.relay_usage
            if tenant in (SHARED_TENANT, u.tenant)
        ]  # fmt: skip
        if not mine and not relay:
            continue
        row: dict[str, Any] = {
            "node_id": node.node_id,
            "tenant": record.tenant,
            "relay": relay,
        }
        if mine:
            health = heartbeats.health(node.node_id, now, record.revision)
            row |= {
                "roles": sorted(r.value for r in record.roles),
                "region": facts.region or "default",
                "health": health.health.value,
                "age_s": None if health.age is None else round(health.age, 3),
                "heard_at": state.received_at,
                "sessions": facts.sessions,
                "classes": {
                    c.traffic_class: {"in": c.bytes_in, "out": c.bytes_out}
                    for c in facts.class_bytes
                },
            }
        rows.append(row)
    return {"tenant": tenant, "at": now, "nodes": rows}


class ObserverViews:
    """:func:`observer_view` per partition, encoded once and served again for ``ttl``
    seconds: an observer (or several, or one in a loop) costs the control plane one
    pass over its partition per second, not one per request (reviewer, ADR 0038).  The
    answer's ``at`` says when it was taken.  One entry per tenant asked in the last
    ``ttl`` (older ones are dropped on the next build)."""

    def __init__(
        self, registry: NodeRegistry, heartbeats: HeartbeatTable, ttl: float = OBSERVER_VIEW_TTL
    ) -> None:
        self._registry, self._heartbeats, self.ttl = registry, heartbeats, ttl
        self._views: dict[str, tuple[float, bytes]] = {}
        self.builds = 0

    def body(self, asking: RegisteredNode, now: float) -> bytes:
        """The JSON answer for ``asking``'s partition."""
        tenant = asking.record.tenant
        found = self._views.get(tenant)
        if found is not None and 0 <= now - found[0] < self.ttl:
            return found[1]
        self._views = {t: v for t, v in self._views.items() if 0 <= now - v[0] < self.ttl}
        body = json.dumps(observer_view(asking, self._registry, self._heartbeats, now)).encode()
        self._views[tenant] = (now, body)
        self.builds += 1
        return body
