"""Recent per-class and per-route byte counts from heartbeats, for live throughput charts.

Every heartbeat may carry ``traffic`` (:class:`~accessfabric.control.client.facts.ClassBytes` per
class, :class:`~accessfabric.control.client.facts.RouteReport` per leased route).  This keeps the
last :data:`MAX_SAMPLES` samples per node and per route in memory (soft state: a control
replica only knows the heartbeats it received) and turns consecutive samples into rates.
Everything is bounded: nodes by the registry, routes by :data:`MAX_ROUTES` per node.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from accessfabric.control.client.facts import HeartbeatFacts

MAX_SAMPLES = 60
MAX_ROUTES = 64


def _rates(samples: deque[tuple[float, dict[str, int]]]) -> list[dict[str, Any]]:
    """``[{"t": when, "bps": {key: bytes per second}}]`` between consecutive samples.

    A counter that went down (a live stream ended, a node restarted) gives 0, not a
    negative rate.
    """
    out: list[dict[str, Any]] = []
    previous: tuple[float, dict[str, int]] | None = None
    for when, values in samples:
        if previous is not None and when > previous[0]:
            dt = when - previous[0]
            out.append(
                {
                    "t": round(when, 3),
                    "bps": {
                        key: round(max(0, value - previous[1].get(key, 0)) / dt, 1)
                        for key, value in values.items()
                    },
                }
            )
        previous = (when, values)
    return out


class TrafficHistory:
    def __init__(self) -> None:
        self._nodes: dict[str, deque[tuple[float, dict[str, int]]]] = {}
        self._routes: dict[str, dict[int, deque[tuple[float, dict[str, int]]]]] = {}
        self._route_info: dict[tuple[str, int], dict[str, Any]] = {}

    def record(self, node_id: str, facts: HeartbeatFacts, now: float) -> None:
        if facts.class_bytes:
            per_class = {c.traffic_class: c.bytes_in + c.bytes_out for c in facts.class_bytes}
            self._nodes.setdefault(node_id, deque(maxlen=MAX_SAMPLES)).append((now, per_class))
        if not facts.route_reports:
            return
        routes = self._routes.setdefault(node_id, {})
        for report in facts.route_reports:
            if report.route_id not in routes and len(routes) >= MAX_ROUTES:
                continue
            samples = routes.setdefault(report.route_id, deque(maxlen=MAX_SAMPLES))
            samples.append((now, {report.traffic_class: report.bytes}))
            self._route_info[(node_id, report.route_id)] = {
                "service": report.service,
                "class": report.traffic_class,
                "rank": report.rank,
                "hops": list(report.hops),
            }

    def forget(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)
        for route_id in self._routes.pop(node_id, {}):
            self._route_info.pop((node_id, route_id), None)

    def node_rates(self) -> dict[str, list[dict[str, Any]]]:
        return {node_id: _rates(samples) for node_id, samples in self._nodes.items()}

    def route_rates(self) -> list[dict[str, Any]]:
        out = []
        for node_id, routes in self._routes.items():
            for route_id, samples in routes.items():
                info = self._route_info.get((node_id, route_id), {})
                out.append(
                    {"source": node_id, "route_id": route_id, **info, "samples": _rates(samples)}
                )
        return out
