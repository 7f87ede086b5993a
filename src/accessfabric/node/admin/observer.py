"""The ``observer`` role: per-node, per-class throughput and health of a partition, and
per-tenant totals (issue 17, ADR 0038).

An observer node asks the control plane for its partition's heartbeat counters
(``GET /v1/telemetry``, control/server/telemetry.py ``observer_view``) once per
heartbeat cycle (``ControlLink.cycle``) and folds them here.  It adds no telemetry
traffic of its own to the fleet: the counters are the ones every node already sends —
cumulative stream bytes per class in every heartbeat, relay usage per tenant in the
sampled detail (``telemetry_every``) — so the cost per node stays flat as the fleet
grows, and one observer's poll costs the control plane one pass over the partition.

Throughput is the change of a node's cumulative counter between two heartbeats divided
by the time between them (the control plane's receive times, ``heard_at``); a node
whose counter went down restarted, and its rate is left out until the next pair.  A node
the control plane no longer lists is dropped, so what is kept is bounded by the
partition.  ``accessfabric status`` shows the ``observer`` section: per tenant nodes by
health, sessions, bytes and throughput per class, bytes relayed for the tenant; and the
busiest nodes with their per-class throughput.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

BUSIEST = 10
"""Nodes listed in the status section (the busiest by throughput)."""


@dataclass(slots=True)
class NodeView:
    """One node as the observer last saw it."""

    tenant: str
    health: str = "unknown"
    region: str = ""
    sessions: int = 0
    received_at: float | None = None
    bytes: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Cumulative (in, out) stream bytes per traffic class."""
    rates: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Throughput (in, out) in bytes per second per traffic class, over the last pair of
    heartbeats whose counters moved forward."""
    relayed: dict[str, int] = field(default_factory=dict)
    """Bytes this node relayed per tenant (both directions, since it started)."""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class Observer:
    """Folds ``/v1/telemetry`` documents into per-node rates and per-tenant totals."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeView] = {}
        self.tenant = ""
        self.polls = 0
        self.updated_at: float | None = None
        self.error: str | None = None
        """The control plane's refusal of the last poll, if it refused (logged once)."""

    def ingest(self, document: dict[str, Any], now: float) -> None:
        """Take one ``/v1/telemetry`` reply received at ``now`` (this node's clock)."""
        self.tenant = str(document.get("tenant", ""))
        rows = document.get("nodes")
        seen: dict[str, NodeView] = {}
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict) or not isinstance(row.get("node_id"), str):
                continue
            node_id = row["node_id"]
            view = self.nodes.get(node_id) or NodeView(tenant=str(row.get("tenant", "")))
            seen[node_id] = view
            relay = row.get("relay")
            view.relayed = {}
            for usage in relay if isinstance(relay, list) else []:
                if isinstance(usage, dict):
                    tenant = str(usage.get("tenant", ""))
                    view.relayed[tenant] = view.relayed.get(tenant, 0) + _int(usage.get("bytes"))
            if "classes" in row:
                self._fold(view, row)
        self.nodes = seen
        self.polls += 1
        self.updated_at = now
        self.error = None

    @staticmethod
    def _fold(view: NodeView, row: dict[str, Any]) -> None:
        view.health = str(row.get("health", "unknown"))
        view.region = str(row.get("region", ""))
        view.sessions = _int(row.get("sessions"))
        heard = row.get("heard_at")  # the control plane's receive time of the heartbeat
        received = float(heard) if isinstance(heard, int | float) and heard > 0 else None
        classes = row.get("classes")
        counters: dict[str, tuple[int, int]] = {}
        if isinstance(classes, dict):
            for name, pair in classes.items():
                if isinstance(pair, dict):
                    counters[str(name)] = (_int(pair.get("in")), _int(pair.get("out")))
        before, then = view.bytes, view.received_at
        if received is not None and then is not None and received > then:
            span = received - then
            rates: dict[str, tuple[float, float]] = {}
            for name, (now_in, now_out) in counters.items():
                old_in, old_out = before.get(name, (0, 0))
                if now_in >= old_in and now_out >= old_out:  # else the node restarted
                    rates[name] = ((now_in - old_in) / span, (now_out - old_out) / span)
            view.rates = rates
        if received is None or then is None or received > then:
            view.bytes, view.received_at = counters, received

    def tenants(self) -> dict[str, dict[str, Any]]:
        """Per-tenant totals: nodes by health, sessions, bytes and throughput per class
        (the tenant's own nodes), bytes relayed for the tenant (by any node seen)."""
        out: dict[str, dict[str, Any]] = {}

        def totals(tenant: str) -> dict[str, Any]:
            return out.setdefault(
                tenant,
                {"nodes": 0, "health": {}, "sessions": 0, "bytes": {}, "throughput_bps": {},
                 "relayed_bytes": 0},
            )  # fmt: skip

        for view in self.nodes.values():
            for tenant, relayed in view.relayed.items():
                totals(tenant)["relayed_bytes"] += relayed
            if view.received_at is None and not view.bytes and view.health == "unknown":
                continue  # shared infrastructure shown only for its relay usage
            row = totals(view.tenant)
            row["nodes"] += 1
            row["health"][view.health] = row["health"].get(view.health, 0) + 1
            row["sessions"] += view.sessions
            for name, (bytes_in, bytes_out) in view.bytes.items():
                pair = row["bytes"].setdefault(name, {"in": 0, "out": 0})
                pair["in"] += bytes_in
                pair["out"] += bytes_out
            for name, (rate_in, rate_out) in view.rates.items():
                pair = row["throughput_bps"].setdefault(name, {"in": 0.0, "out": 0.0})
                pair["in"] = round(pair["in"] + rate_in, 1)
                pair["out"] = round(pair["out"] + rate_out, 1)
        return dict(sorted(out.items()))

    def status(self, now: float) -> dict[str, Any] | None:
        """The ``observer`` section of ``accessfabric status`` (None before the first poll)."""
        if self.updated_at is None:
            return None if self.error is None else {"error": self.error}

        def total(view: NodeView) -> float:
            return sum(a + b for a, b in view.rates.values())

        busiest = sorted(self.nodes.items(), key=lambda item: (-total(item[1]), item[0]))
        return {
            "tenant": self.tenant,
            "polls": self.polls,
            "updated_s_ago": round(now - self.updated_at, 1),
            "error": self.error,
            "nodes": len(self.nodes),
            "tenants": [{"tenant": t, **row} for t, row in self.tenants().items()],
            "busiest": [
                {
                    "node_id": node_id,
                    "tenant": view.tenant,
                    "health": view.health,
                    "throughput_bps": {
                        name: {"in": round(a, 1), "out": round(b, 1)}
                        for name, (a, b) in sorted(view.rates.items())
                    },
                }
                for node_id, view in busiest[:BUSIEST]
                if view.rates
            ],
        }


class ObserverMetrics(Collector):
    """The observer's per-tenant totals on its ``/metrics`` (labels: tenants the control
    plane showed it, classes and health states: bounded by the partition)."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def collect(self) -> Iterator[Metric]:
        nodes = GaugeMetricFamily(
            "accessfabric_observer_nodes", "Nodes of the partition by tenant and health.",
            labels=["tenant", "health"],
        )  # fmt: skip
        sessions = GaugeMetricFamily(
            "accessfabric_observer_sessions", "Sessions the tenant's nodes accepted.",
            labels=["tenant"],
        )  # fmt: skip
        throughput = GaugeMetricFamily(
            "accessfabric_observer_throughput_bytes_per_second",
            "Stream throughput of the tenant's nodes by class and direction.",
            labels=["tenant", "class", "direction"],
        )
        relayed = GaugeMetricFamily(
            "accessfabric_observer_relayed_bytes", "Bytes relayed for the tenant (cumulative).",
            labels=["tenant"],
        )  # fmt: skip
        for tenant, row in self.observer.tenants().items():
            for health, count in sorted(row["health"].items()):
                nodes.add_metric([tenant, health], count)
            sessions.add_metric([tenant], row["sessions"])
            for name, pair in sorted(row["throughput_bps"].items()):
                throughput.add_metric([tenant, name, "in"], pair["in"])
                throughput.add_metric([tenant, name, "out"], pair["out"])
            relayed.add_metric([tenant], row["relayed_bytes"])
        yield from (nodes, sessions, throughput, relayed)
