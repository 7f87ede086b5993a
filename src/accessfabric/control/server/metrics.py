"""``GET /metrics`` on every control replica: requests, nodes by health, services, elections.

Labels are bounded: the route label is the route's path template (a fixed set, or
``unmatched``), the status label a class (``2xx``, ``4xx``, ``5xx``), health one of three.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from accessfabric.control.server.heartbeats import Health
from accessfabric.control.server.plane import ControlPlane

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlMetrics(Collector):
    """Scraped from the plane's live state; request counts come from the middleware."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.requests: Counter[tuple[str, str, str]] = Counter()  # (method, route, class)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        from accessfabric.observe.process_metrics import register_process_collectors

        register_process_collectors(self.registry)  # process, platform, GC, build info

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            self.requests[(request.method, route, f"{status // 100}xx")] += 1

    async def handle(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def collect(self) -> Iterator[Metric]:
        plane = self.plane
        requests = CounterMetricFamily(
            "accessfabric_control_requests",
            "API requests by method, route template and status class.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in sorted(self.requests.items()):
            requests.add_metric([method, route, status], count)
        yield requests
        now = plane.clock()
        by_health = Counter(
            plane.heartbeats.health(node.node_id, now, node.record.revision).health
            for node in plane.registry.all()
        )
        nodes = GaugeMetricFamily(
            "accessfabric_control_nodes", "Enrolled nodes by health.", labels=["health"]
        )
        for health in Health:
            nodes.add_metric([health.value], by_health.get(health, 0))
        yield nodes
        yield GaugeMetricFamily(
            "accessfabric_control_services",
            "Registered services.",
            value=len(plane.services.names()),
        )
        yield CounterMetricFamily(
            "accessfabric_control_service_leader_elections",
            "Leader elections (a follower taking over included).",
            value=plane.services.elections,
        )
        coordinators = plane.coordinators  # route coordinators per partition (ADR 0038)
        yield GaugeMetricFamily(
            "accessfabric_control_route_coordinators",
            "Route coordinators (one per tenant whose routes were asked for) held now.",
            value=len(coordinators),
        )
        yield CounterMetricFamily(
            "accessfabric_control_route_plans",
            "Route requests planned, each by its source's partition's coordinator.",
            value=coordinators.total_plans,
        )
        yield CounterMetricFamily(
            "accessfabric_control_route_snapshots",
            "Coordinator snapshots built (each over one partition).",
            value=coordinators.total_builds,
        )
        reads = plane.node_reads  # replicas: nodes not learned yet (ADR 0042)
        if reads is not None:
            outcomes = CounterMetricFamily(
                "accessfabric_control_node_read_through",
                "Requests naming a node this replica had not learned: read from the store "
                "and admitted, read and not found, read and failed (store error), answered "
                "from the negative cache, or refused without a read at a bound.",
                labels=["outcome"],
            )
            outcomes.add_metric(["admitted"], reads.admitted)
            outcomes.add_metric(["not_found"], reads.not_found)
            outcomes.add_metric(["failed"], reads.failed)
            outcomes.add_metric(["cached"], reads.cached)
            outcomes.add_metric(["refused"], reads.refused)
            yield outcomes
