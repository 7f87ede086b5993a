"""The fleet's event timeline: what the API handlers did, and what changed over time.

Enrollments, role revocations and tokens are recorded by the API handlers that make them
(:meth:`FleetEvents.add`), so none is missed between two observations.
:meth:`FleetEvents.observe` (called from the control plane's tick) compares what it sees
now with what it saw last time: a node whose health changed; a service replica that left
or joined, a leader that changed (service failover).  :meth:`FleetEvents.route_reports`
reads the route reports of a heartbeat: a route whose streams left it (``last_switch``)
and recovered (``recovery_ms``) is a route failover.  The log is a bounded ring
(:data:`MAX_EVENTS`); a control replica only sees what it was told (soft state, like
heartbeats).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from accessfabric.control.client.facts import RouteReport
from accessfabric.control.server.heartbeats import HeartbeatTable
from accessfabric.control.server.registry import NodeRegistry
from accessfabric.control.server.services import ServiceDirectory

MAX_EVENTS = 500
OBSERVE_INTERVAL = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetEvent:
    at: float
    kind: str
    """``node_enrolled``, ``role_revoked``, ``health_changed``, ``replica_joined``,
    ``replica_lost``, ``leader_changed``, ``route_failover``, ``token_created``."""
    subject: str
    """The node id, service name or ``source/service/class`` the event is about."""
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ObservedFleet(Protocol):
    """What :meth:`FleetEvents.observe` reads (the control plane's tables)."""

    @property
    def registry(self) -> NodeRegistry: ...

    @property
    def heartbeats(self) -> HeartbeatTable: ...

    @property
    def services(self) -> ServiceDirectory: ...


class FleetEvents:
    def __init__(self) -> None:
        self.events: deque[FleetEvent] = deque(maxlen=MAX_EVENTS)
        self._observed_at = -1e18
        self._nodes: dict[str, str] | None = None
        self._services: dict[str, tuple[frozenset[str], str | None]] = {}
        self._switches: dict[tuple[str, int], tuple[str, float | None]] = {}

    def add(self, at: float, kind: str, subject: str, detail: str) -> None:
        self.events.append(FleetEvent(at=at, kind=kind, subject=subject, detail=detail))

    def since(self, after: float = 0.0, limit: int = MAX_EVENTS) -> list[FleetEvent]:
        chosen = [event for event in self.events if event.at > after]
        return chosen[-limit:]

    def observe(self, plane: ObservedFleet, now: float) -> None:
        if now - self._observed_at < OBSERVE_INTERVAL:
            return
        self._observed_at = now
        nodes: dict[str, str] = {}
        for node in plane.registry.all():
            record = node.record
            report = plane.heartbeats.health(record.node_id, now, record.revision)
            nodes[record.node_id] = report.health.value
            before = None if self._nodes is None else self._nodes.get(record.node_id)
            if before is not None and before != report.health.value:
                why = "; ".join(report.reasons)
                self.add(
                    now, "health_changed", record.node_id,
                    f"{before} -> {report.health.value}" + (f" ({why})" if why else ""),
                )  # fmt: skip
        self._nodes = nodes
        for name in plane.services.names():
            view = plane.services.view(name)
            if view is None:
                continue
            active = frozenset(r.node_id for r in view.active)
            before_service = self._services.get(name)
            self._services[name] = (active, view.leader)
            if before_service is None:
                continue
            for node_id in sorted(before_service[0] - active):
                self.add(now, "replica_lost", name, f"replica {node_id} no longer serves")
            for node_id in sorted(active - before_service[0]):
                self.add(now, "replica_joined", name, f"replica {node_id} serves")
            if view.leader is not None and before_service[1] not in (None, view.leader):
                self.add(now, "leader_changed", name, f"{before_service[1]} -> {view.leader}")

    def route_reports(self, source: str, reports: tuple[RouteReport, ...], now: float) -> None:
        for report in reports:
            key = (source, report.route_id)
            seen = (report.last_switch, report.recovery_ms)
            before = self._switches.get(key)
            if before is None and len(self._switches) >= 16 * MAX_EVENTS:
                continue
            self._switches[key] = seen
            if not report.last_switch or before == seen or report.recovery_ms is None:
                continue
            self.add(
                now, "route_failover",
                f"{source}/{report.service}/{report.traffic_class}",
                f"streams left route rank {report.rank} ({report.last_switch}); "
                f"recovered in {report.recovery_ms:.1f} ms",
            )  # fmt: skip
