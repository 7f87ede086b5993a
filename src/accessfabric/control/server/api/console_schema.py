"""OpenAPI paths of the console's read endpoints (:mod:`.console_handlers`)."""

from __future__ import annotations

from typing import Any

from accessfabric.control.server.api.schema import ADMIN_SECURITY, _errors, _obj, _ok, _op

_ANY_LIST = {"type": "array", "items": {"type": "object"}}


def _read(summary: str, key: str, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {key: _ANY_LIST, **(extra or {})}
    return {
        "get": _op(
            summary,
            {**_ok(_obj(props, [key])), **_errors(401)},
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
        "get": _op(
            "Per-class throughput per node and per route, from heartbeats",
            {
                **_ok(
                    _obj({"nodes": {"type": "object"}, "routes": _ANY_LIST}, ["nodes", "routes"])
                ),
                **_errors(401),
            },
            security=ADMIN_SECURITY,
        )
    },
    "/v1/admin/relays": _read("Relay accounting per relay, tenant and class", "relays"),
    "/v1/admin/tenants": {
        "get": _op(
            "Per-tenant totals: nodes, sessions, stream bytes per class, relayed bytes",
            {**_ok(_obj({"tenants": {"type": "object"}}, ["tenants"])), **_errors(401)},
            security=ADMIN_SECURITY,
        )
    },
    "/v1/admin/streams": _read(
        "Each node's busiest live streams: class, credit, bytes, RTT, blocked reason", "nodes"
    ),
    "/v1/admin/events": {
        "get": _op(
            "The fleet's event timeline (after: seconds since the epoch)",
            {
                **_ok(_obj({"events": _ANY_LIST, "now": {"type": "number"}}, ["events"])),
                **_errors(400, 401),
            },
            security=ADMIN_SECURITY,
            parameters=[
                {"name": "after", "in": "query", "required": False, "schema": {"type": "number"}}
            ],
        )
    },
}
