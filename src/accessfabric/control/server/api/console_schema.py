"""OpenAPI paths of the console's read endpoints (:mod:`.console_handlers`)."""

from __future__ import annotations

from typing import Any

from accessfabric.control.server.api.openapi_parts import ADMIN_SECURITY, errors, obj, ok, operation

_ANY_LIST = {"type": "array", "items": {"type": "object"}}


def _read(summary: str, key: str, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {key: _ANY_LIST, **(extra or {})}
    return {
        "get": operation(
            summary,
            {**ok(obj(props, [key])), **errors(401)},
            security=ADMIN_SECURITY,
        )
    }


CONSOLE_PATHS: dict[str, Any] = {
    "/v1/admin/fleet": _read("Every node's listing with its capability facts", "nodes"),
    "/v1/admin/routes": _read(
        "Routes sources hold: the planner's score reasons and alternates, the source's report",
        "routes",
    ),
    "/v1/admin/service-leases": _read(
        "Services with replicas, modes and lease expiries", "services"
    ),
    "/v1/admin/traffic": {
        "get": operation(
            "Per-class throughput per node and per route, from heartbeats",
            {
                **ok(obj({"nodes": {"type": "object"}, "routes": _ANY_LIST}, ["nodes", "routes"])),
                **errors(401),
            },
            security=ADMIN_SECURITY,
        )
    },
    "/v1/admin/relays": _read("Relay accounting per relay, tenant and class", "relays"),
    "/v1/admin/tenants": {
        "get": operation(
            "Per-tenant totals: nodes, sessions, stream bytes per class, relayed bytes",
            {**ok(obj({"tenants": {"type": "object"}}, ["tenants"])), **errors(401)},
            security=ADMIN_SECURITY,
        )
    },
    "/v1/admin/streams": _read(
        "Each node's busiest live streams: class, credit, bytes, RTT, blocked reason", "nodes"
    ),
    "/v1/admin/events": {
        "get": operation(
            "The fleet's event timeline (after: seconds since the epoch)",
            {
                **ok(obj({"events": _ANY_LIST, "now": {"type": "number"}}, ["events"])),
                **errors(400, 401),
            },
            security=ADMIN_SECURITY,
            parameters=[
                {"name": "after", "in": "query", "required": False, "schema": {"type": "number"}}
            ],
        )
    },
}
