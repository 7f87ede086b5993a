"""Operator read endpoints the admin console shows (``Authorization: Bearer afadm1_…``).

* ``GET /v1/admin/fleet``: every node's listing plus its capability facts;
* ``GET /v1/admin/routes``: the routes sources hold, with the planner's score reasons
  and alternates beside what the source reports (health, RTT, last switch);
* ``GET /v1/admin/service-leases``: services, replicas, modes and lease expiries;
* ``GET /v1/admin/traffic``: per-class throughput per node and per route (from heartbeats);
* ``GET /v1/admin/relays``: relay accounting per relay, tenant and class;
* ``GET /v1/admin/streams``: each node's busiest live streams and why they are blocked;
* ``GET /v1/admin/events?after=T``: the fleet's event timeline;
* ``GET /v1/admin/tenants``: per-tenant totals (issue 17): nodes heard, sessions their
  nodes accepted, stream bytes per class, bytes relayed for the tenant.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from accessfabric.control.client.facts import HeartbeatFacts
from accessfabric.control.server.api.admin_handlers import node_listing
from accessfabric.control.server.api.auth import require_admin
from accessfabric.control.server.api.context import context
from accessfabric.control.server.api.errors import bad_request
from accessfabric.control.server.api.node_handlers import view_json
from accessfabric.control.server.planner import NoRouteError, UnknownNodeError, UnknownServiceError
from accessfabric.control.server.store.base import StoreError

MAX_EVENTS_PER_REQUEST = 500


def capability_facts(facts: HeartbeatFacts | None) -> dict[str, Any]:
    if facts is None:
        return {}
    return {
        "transports": list(facts.transports),
        "endpoints": list(facts.endpoints),
        "nat": facts.nat_type,
        "reachable": facts.reachable,
        "pressure": {"cpu": facts.cpu, "memory": facts.memory, "queue": facts.queue_depth},
        "network_type": facts.network_type,
        "battery_percent": facts.battery_percent,
        "relay_opt_in": facts.relay_opt_in,
        "foreground": facts.foreground,
        "relay_classes": list(facts.relay_classes),
        "services": [s.name for s in facts.services],
        "region": facts.region,
        "failure_domain": facts.failure_domain,
        "peers": len(facts.peers),
    }


async def fleet(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    now = plane.clock()
    nodes = []
    for node in plane.registry.all():
        state = plane.heartbeats.get(node.node_id)
        listing = node_listing(plane, node, now)
        listing["facts"] = capability_facts(state.facts if state else None)
        nodes.append(listing)
    return web.json_response({"nodes": nodes})


def _reason_json(reason: Any) -> dict[str, Any]:
    return {
        "factor": reason.factor,
        "contribution": round(reason.contribution, 3),
        "explanation": reason.explanation,
    }


def _rank(row: dict[str, Any]) -> int:
    return int(row["rank"])


async def routes(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    now = plane.clock()
    planner = plane.leasing.planner(now)
    out: list[dict[str, Any]] = []
    for node in plane.registry.all():
        state = plane.heartbeats.get(node.node_id)
        if state is None or not state.facts.route_reports:
            continue
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for report in state.facts.route_reports:
            row: dict[str, Any] = {**report._asdict(), "hops": list(report.hops)}
            groups.setdefault((report.service, report.traffic_class), []).append(row)
        for service, traffic_class in sorted(groups):
            held = groups[(service, traffic_class)]
            planned: list[dict[str, Any]] = []
            note = ""
            try:
                plan = planner.plan(node.node_id, service, alternates=2)
            except (UnknownNodeError, UnknownServiceError, NoRouteError) as exc:
                note = str(exc) or type(exc).__name__
            else:
                note = "; ".join(plan.notes)
                planned = [
                    {
                        "rank": rank,
                        "hops": list(route.hops),
                        "score": round(route.score, 3),
                        "disjoint": route.disjoint,
                        "reasons": [_reason_json(r) for r in route.reasons],
                    }
                    for rank, route in enumerate(plan.routes)
                ]
            out.append(
                {
                    "source": node.node_id,
                    "service": service,
                    "class": traffic_class,
                    "held": sorted(held, key=_rank),
                    "planned": planned,
                    "note": note,
                }
            )
    return web.json_response({"routes": out})


async def service_leases(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    out = []
    for name in plane.services.names():
        view = plane.services.view(name)
        if view is None:
            continue
        document: dict[str, Any] = view_json(view)
        rows: list[dict[str, Any]] = document["replicas"]
        for replica, row in zip(view.replicas, rows, strict=True):
            expires: float | None = None
            with contextlib.suppress(StoreError):
                expires = round(plane.store.time_to_live(replica.lease_id), 1)
            row["lease_expires_in_s"] = expires
        document["replica_ttl_s"] = plane.config.replica_ttl
        out.append(document)
    return web.json_response({"services": out})


async def traffic(request: web.Request) -> web.Response:
    require_admin(request)
    history = context(request).plane.traffic
    return web.json_response({"nodes": history.node_rates(), "routes": history.route_rates()})


async def relays(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    out = []
    for node in plane.registry.all():
        state = plane.heartbeats.get(node.node_id)
        if state is None or not state.facts.relay_usage:
            continue
        out.append(
            {"node_id": node.node_id, "usage": [u._asdict() for u in state.facts.relay_usage]}
        )
    return web.json_response({"relays": out})


async def streams(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    out = []
    for node in plane.registry.all():
        state = plane.heartbeats.get(node.node_id)
        if state is None or not state.facts.stream_reports:
            continue
        rows = [r._asdict() for r in state.facts.stream_reports]
        out.append({"node_id": node.node_id, "streams": rows})
    return web.json_response({"nodes": out})


async def tenants(request: web.Request) -> web.Response:
    """Per-tenant totals from the latest heartbeats: a node's ``traffic.classes`` count
    since it started and travel in every heartbeat (not sampled, control/server/telemetry.py),
    relay usage is the tenant's as the relays report it (sampled, last report kept)."""
    require_admin(request)
    plane = context(request).plane
    out: dict[str, dict[str, Any]] = {}

    def row(tenant: str) -> dict[str, Any]:
        return out.setdefault(tenant, {"nodes": 0, "sessions": 0, "bytes": {}, "relayed_bytes": 0})

    for node in plane.registry.all():
        state = plane.heartbeats.get(node.node_id)
        if state is None:
            continue
        totals = row(node.record.tenant)
        totals["nodes"] += 1
        totals["sessions"] += state.facts.sessions
        for c in state.facts.class_bytes:
            pair = totals["bytes"].setdefault(c.traffic_class, {"in": 0, "out": 0})
            pair["in"] += c.bytes_in
            pair["out"] += c.bytes_out
        for usage in state.facts.relay_usage:
            relayed = usage.bytes_from_source + usage.bytes_to_source
            row(usage.tenant)["relayed_bytes"] += relayed
    return web.json_response({"tenants": out})


async def events(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    try:
        after = float(request.query.get("after", "0"))
    except ValueError:
        raise bad_request("bad_query", "after: a number of seconds since the epoch") from None
    chosen = plane.events.since(after, MAX_EVENTS_PER_REQUEST)
    return web.json_response({"events": [e.to_json() for e in chosen], "now": plane.clock()})


def add_console_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/admin/fleet", fleet)
    router.add_get("/v1/admin/routes", routes)
    router.add_get("/v1/admin/service-leases", service_leases)
    router.add_get("/v1/admin/traffic", traffic)
    router.add_get("/v1/admin/relays", relays)
    router.add_get("/v1/admin/streams", streams)
    router.add_get("/v1/admin/events", events)
    router.add_get("/v1/admin/tenants", tenants)
