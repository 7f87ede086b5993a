"""The node and operator paths of the control API's OpenAPI 3.0 document, and its schemas.

The document itself (these paths, the console's and the security schemes) is
:func:`accessfabric.control.server.api.openapi.openapi_document`.  Hand-written beside
the handlers (a test checks every route of the app is here and every path here is
routed; Schemathesis checks responses against it).
"""

from __future__ import annotations

from typing import Any

from accessfabric.control.client.facts import (
    CLASS_NAMES,
    MAX_ENDPOINT_HEALTH,
    MAX_PEERS,
    MAX_SERVICES,
    MAX_TRANSPORTS,
    NAT_TYPES,
    NETWORK_TYPES,
    TRANSPORTS,
)
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.control.server.api.openapi_parts import (
    ADMIN_SECURITY,
    NODE_SECURITY,
    errors,
    obj,
    ok,
    operation,
    ref,
)

NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9._:/-]{0,62}$"}
NODE_ID = {"type": "string", "minLength": 40, "maxLength": 40}
FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
ROLE = {"type": "string", "enum": [role.value for role in Role]}
NONNEG = {"type": "number", "minimum": 0}
INT = {"type": "integer", "minimum": 0}
SHORT_TEXT = {"type": "string", "maxLength": 256}
CLASS = {"type": "string", "enum": list(CLASS_NAMES)}


SCHEMAS: dict[str, Any] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "status": {"type": "integer"},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                },
                ["status", "code", "message"],
            )
        },
        ["error"],
    ),
    "NodeRecord": obj(
        {
            "node_id": NODE_ID,
            "revision": INT,
            "roles": {"type": "array", "items": ROLE},
            "tenant": {"type": "string"},
            "trust_tier": {"type": "integer", "minimum": 0, "maximum": 3},
            "expires_ms": INT,
            "record": {"type": "string", "description": "signed node record, base64"},
        },
        ["node_id", "revision", "roles", "tenant", "trust_tier", "expires_ms"],
    ),
    "Policy": obj({"version": INT, "heartbeat_interval_s": NONNEG}, ["version"]),
    "HeartbeatFacts": obj(
        {
            "versions": obj(
                {
                    "protocol": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "minItems": 1,
                        "maxItems": 8,
                    },
                    "software": {"type": "string", "maxLength": 256},
                }
            ),
            "transports": {
                "type": "array",
                "items": {"type": "string", "enum": list(TRANSPORTS)},
                "maxItems": MAX_TRANSPORTS,
            },
            "nat": obj(
                {
                    "type": {"type": "string", "enum": list(NAT_TYPES)},
                    "reachable": {"type": "boolean"},
                    "endpoints": {"type": "array", "items": {"type": "string"}, "maxItems": 16},
                }
            ),
            "peers": {
                "type": "array",
                "maxItems": MAX_PEERS,
                "items": obj(
                    {
                        "node_id": NODE_ID,
                        "rtt_ms": {"type": "number", "minimum": 0, "maximum": 600000},
                        "jitter_ms": NONNEG,
                        "loss": FRACTION,
                        "bandwidth_mbps": NONNEG,
                        "queue_depth": NONNEG,
                        "retransmit_rate": FRACTION,
                    },
                    ["node_id", "rtt_ms"],
                ),
            },
            "pressure": obj(
                {"cpu": FRACTION, "memory": FRACTION, "queue_depth": INT, "sockets": FRACTION}
            ),
            "device": obj(
                {
                    "battery_percent": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": 100,
                        "nullable": True,
                    },
                    "charging": {"type": "boolean"},
                    "network_type": {"type": "string", "enum": list(NETWORK_TYPES)},
                    "metered": {"type": "boolean"},
                    "relay_opt_in": {"type": "boolean"},
                    "foreground": {"type": "boolean", "nullable": True},
                }
            ),
            "relay": obj(
                {
                    "max_bandwidth_mbps": NONNEG,
                    "allowed_classes": {
                        "type": "array",
                        "items": {"type": "string", "enum": list(CLASS_NAMES)},
                    },
                }
            ),
            "services": {
                "type": "array",
                "maxItems": MAX_SERVICES,
                "items": obj({"name": NAME, "capacity": INT, "load": FRACTION}, ["name"]),
            },
            "endpoint_health": {
                "type": "array",
                "maxItems": MAX_ENDPOINT_HEALTH,
                "items": obj(
                    {
                        "transport": SHORT_TEXT,
                        "address": SHORT_TEXT,
                        "node_id": {**SHORT_TEXT, "nullable": True},
                        "success_rate": {**FRACTION, "nullable": True},
                        "latency_ms": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": 600000,
                            "nullable": True,
                        },
                        "dials": {"type": "number", "minimum": 0, "maximum": 1_000_000_000},
                        "consecutive_failures": {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": 1_000_000_000,
                        },
                        "backoff_remaining_s": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": 600000,
                        },
                        "age_s": {"type": "number", "minimum": 0, "maximum": 1_000_000_000},
                        "last_reason": SHORT_TEXT,
                    }
                ),
            },
            "trust_tier": {"type": "integer", "minimum": 0, "maximum": 3, "nullable": True},
            "placement": obj({"region": NAME, "failure_domain": NAME}),
            "cache_versions": obj(
                {
                    "policy": INT,
                    "directory": INT,
                    "route_cache": INT,
                    "node_record": INT,
                    "access_policy": INT,
                }
            ),
            "traffic": obj(
                {
                    "classes": {
                        "type": "array",
                        "maxItems": len(CLASS_NAMES),
                        "items": obj({"class": CLASS, "in": INT, "out": INT}, ["class"]),
                    },
                    "routes": {
                        "type": "array",
                        "maxItems": 64,
                        "items": obj(
                            {
                                "route_id": INT,
                                "service": SHORT_TEXT,
                                "traffic_class": CLASS,
                                "rank": {"type": "integer", "minimum": 0, "maximum": 255},
                                "hops": {"type": "array", "maxItems": 16, "items": NODE_ID},
                                "healthy": {"type": "boolean"},
                                "srtt_ms": {"type": "number", "minimum": 0, "nullable": True},
                                "bytes": INT,
                                "last_switch": SHORT_TEXT,
                                "recovery_ms": {"type": "number", "minimum": 0, "nullable": True},
                            }
                        ),
                    },
                    "streams": {
                        "type": "array",
                        "maxItems": 32,
                        "items": obj(
                            {
                                "peer": SHORT_TEXT,
                                "service": SHORT_TEXT,
                                "traffic_class": CLASS,
                                "state": SHORT_TEXT,
                                "credit": INT,
                                "bytes_in": INT,
                                "bytes_out": INT,
                                "queued": INT,
                                "unacked": INT,
                                "rtt_ms": {"type": "number", "minimum": 0, "nullable": True},
                                "blocked": {
                                    "type": "string",
                                    "enum": ["-", "credit", "carrier", "pacing", "scheduler"],
                                },
                            }
                        ),
                    },
                    "relay": {
                        "type": "array",
                        "maxItems": 64,
                        "items": obj(
                            {
                                "tenant": NAME,
                                "traffic_class": CLASS,
                                "streams": INT,
                                "active": INT,
                                "bytes_from_source": INT,
                                "bytes_to_source": INT,
                            },
                            ["tenant"],
                        ),
                    },
                }
            ),
        }
    ),
    "HeartbeatReply": obj(
        {
            "health": {"type": "string", "enum": ["healthy", "degraded", "unreachable"]},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "node_record": ref("NodeRecord"),
            "directory_version": INT,
            "policy": ref("Policy"),
            "access_policy": {
                "type": "string",
                "description": "the node's signed access policy (its tenant's grants), base64; "
                "only when its version differs from cache_versions.access_policy",
            },
            "access_policy_version": {
                "type": "integer",
                "description": "the version (issued_ms) of the node's current access policy",
            },
            "draining": {
                "type": "boolean",
                "description": "the operator drains this node (control drain): refuse new "
                "sessions, GOAWAY each session once its streams finished",
            },
            "route_tests": {
                "type": "array",
                "description": "route tests the console queued: run diag route, post the "
                "result to /v1/route-tests/{test_id}",
                "items": obj(
                    {"test_id": {"type": "string"}, "service": NAME, "traffic_class": CLASS},
                    ["test_id", "service", "traffic_class"],
                ),
            },
        },
        [
            "health",
            "reasons",
            "node_record",
            "directory_version",
            "policy",
            "access_policy_version",
        ],
    ),
    "Grant": obj(
        {
            "grant_id": {"type": "string", "minLength": 32, "maxLength": 32},
            "tenant": {"type": "string"},
            "roles": {"type": "array", "items": ROLE},
            "services": {"type": "array", "items": {"type": "string"}},
            "classes": {"type": "array", "items": {"type": "string", "enum": list(CLASS_NAMES)}},
            "min_trust_tier": {"type": "integer", "minimum": 0, "maximum": 3},
            "nodes": {"type": "array", "items": NODE_ID, "maxItems": 16},
            "hosts": {"type": "array", "items": NODE_ID, "maxItems": 16},
            "created_ms": INT,
            "expires_ms": INT,
        },
        ["grant_id", "tenant", "roles", "services", "classes", "min_trust_tier", "expires_ms"],
    ),
    "Directory": obj(
        {
            "version": INT,
            "scope": {"type": "string", "enum": ["mobile", "neighbours", "tenant"]},
            "node_record": ref("NodeRecord"),
            "entries": {
                "type": "array",
                "items": obj(
                    {
                        "node_id": NODE_ID,
                        "roles": {"type": "array", "items": ROLE},
                        "tenant": {"type": "string"},
                        "revision": INT,
                        "record": {"type": "string"},
                        "health": {"type": "string"},
                        "region": {"type": "string"},
                        "endpoints": {"type": "array", "items": {"type": "string"}},
                        "transports": {"type": "array", "items": {"type": "string"}},
                        "rtt_ms": {"type": "number", "nullable": True},
                        "draining": {"type": "boolean"},
                    },
                    ["node_id", "roles", "record", "health"],
                ),
            },
            "placement": {"type": "array", "items": NODE_ID},
            "cursor": {"type": "string", "description": "send as ?since= for a delta"},
            "delta": {"type": "boolean", "description": "entries are only those changed"},
            "since": {"type": "string"},
            "removed": {"type": "array", "items": NODE_ID},
            "ids": {"type": "array", "items": NODE_ID, "description": "mobile: the members"},
        },
        ["version", "scope", "entries"],
    ),
    "RouteGrant": obj(
        {
            "service": {"type": "string"},
            "traffic_class": {"type": "string"},
            "routes": {
                "type": "array",
                "minItems": 1,
                "items": obj(
                    {
                        "rank": {"type": "string", "enum": ["primary", "alternate"]},
                        "lease": {"type": "string", "description": "signed route lease, base64"},
                        "lease_id": {"type": "string"},
                        "route_id": INT,
                        "epoch": INT,
                        "fencing_token": INT,
                        "hops": {"type": "array", "items": NODE_ID},
                        "issued_ms": INT,
                        "expires_ms": INT,
                        "score": {"type": "number"},
                        "disjoint": {"type": "boolean"},
                        "reasons": {
                            "type": "array",
                            "items": obj(
                                {
                                    "factor": {"type": "string"},
                                    "contribution": {"type": "number"},
                                    "explanation": {"type": "string"},
                                },
                                ["factor", "contribution", "explanation"],
                            ),
                        },
                        "destination_record": {
                            "type": ["string", "null"],
                            "description": "the destination's signed node record, base64: "
                            "its sealing key, for end-to-end sealing (docs/sealing.md)",
                        },
                    },
                    ["rank", "lease", "route_id", "epoch", "fencing_token", "hops", "expires_ms"],
                ),
            },
            "notes": {"type": "array", "items": {"type": "string"}},
        },
        ["service", "traffic_class", "routes", "notes"],
    ),
    "Service": obj(
        {
            "service": {"type": "string"},
            "mode": {"type": "string", "enum": ["active-active", "leader-follower"]},
            "tenant": {"type": "string"},
            "epoch": INT,
            "leader": {"type": "string", "nullable": True},
            "me": {"type": "string", "enum": ["leader", "follower", "active", "not_registered"]},
            "replicas": {
                "type": "array",
                "items": obj({"node_id": NODE_ID, "active": {"type": "boolean"}}),
            },
            "leases": {"type": "array", "items": {"type": "string"}},
        },
        ["service", "mode", "epoch", "replicas"],
    ),
    "TokenListing": obj(
        {
            "token_id": {"type": "string"},
            "tenant": {"type": "string"},
            "roles": {"type": "array", "items": ROLE},
            "created_at": {"type": "number"},
            "expires_at": {"type": "number"},
            "uses": INT,
        },
        ["token_id", "tenant", "roles", "expires_at", "uses"],
    ),
    "RouteTest": obj(
        {
            "test_id": {"type": "string"},
            "node_id": NODE_ID,
            "service": {"type": "string"},
            "traffic_class": CLASS,
            "state": {"type": "string", "enum": ["queued", "running", "done", "expired"]},
            "created_at": {"type": "number"},
            "delivered_at": {"type": "number", "nullable": True},
            "finished_at": {"type": "number", "nullable": True},
            "result": {"type": "object", "nullable": True},
        },
        ["test_id", "node_id", "service", "traffic_class", "state"],
    ),
    "NodeListing": obj(
        {
            "node_id": NODE_ID,
            "roles": {"type": "array", "items": ROLE},
            "tenant": {"type": "string"},
            "trust_tier": {"type": "integer"},
            "revision": INT,
            "health": {"type": "string", "enum": ["healthy", "degraded", "unreachable"]},
            "health_reasons": {"type": "array", "items": {"type": "string"}},
            "last_heartbeat_age_s": {"type": "number", "nullable": True},
            "versions": obj({"protocol": {"type": "array"}, "software": {"type": "string"}}),
            "draining": {"type": "boolean"},
            "drained_at": {"type": "number", "nullable": True},
        },
        ["node_id", "roles", "tenant", "health"],
    ),
}

SERVICE_PARAM = {"name": "service", "in": "path", "required": True, "schema": NAME}


PATHS: dict[str, Any] = {
    "/v1/status": {
        "get": operation(
            "Control plane status and authority key (no authentication)",
            ok(
                obj(
                    {
                        "authority": {"type": "string"},
                        "nodes": INT,
                        "version": {"type": "string"},
                        "store": obj(
                            {
                                "backend": {"type": "string", "enum": ["sqlite", "etcd"]},
                                "available": {"type": "boolean"},
                                "reason": {"type": ["string", "null"]},
                            }
                        ),
                    }
                )
            ),
        )
    },
    "/v1/enroll": {
        "post": operation(
            "Enroll a node: token + public keys, signed with the enrolling key",
            {
                **ok(
                    obj(
                        {
                            "node_record": ref("NodeRecord"),
                            "authority": {"type": "string"},
                            "policy": ref("Policy"),
                        },
                        ["node_record", "authority"],
                    )
                ),
                **errors(400, 401, 409, 413),
            },
            security=NODE_SECURITY,
            body=obj(
                {
                    "token": {"type": "string", "maxLength": 256},
                    "public_key": {"type": "string", "description": "Ed25519, base64"},
                    "sealing_public_key": {"type": "string", "description": "X25519, base64"},
                },
                ["token", "public_key", "sealing_public_key"],
            ),
        )
    },
    "/v1/heartbeat": {
        "post": operation(
            "Report capability facts; learn health, current node record and policy",
            {**ok(ref("HeartbeatReply")), **errors(400, 401, 413)},
            security=NODE_SECURITY,
            body=ref("HeartbeatFacts"),
        )
    },
    "/v1/directory": {
        "get": operation(
            "The peers this node may know (least knowledge, by role); with since, what changed",
            {**ok(ref("Directory")), **errors(400, 401)},
            security=NODE_SECURITY,
            parameters=[
                {
                    "name": "since",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 64},
                }
            ],
        )
    },
    "/v1/telemetry": {
        "get": operation(
            "For observer nodes: health, sessions and byte counters of the partition's nodes",
            {
                **ok(
                    obj(
                        {
                            "tenant": {"type": "string"},
                            "at": {"type": "number"},
                            "nodes": {"type": "array", "items": {"type": "object"}},
                        },
                        ["tenant", "at", "nodes"],
                    )
                ),
                **errors(401, 403),
            },
            security=NODE_SECURITY,
        )
    },
    "/v1/leases/route": {
        "post": operation(
            "Signed route leases (primary and alternates) from the caller to a service",
            {**ok(ref("RouteGrant")), **errors(400, 401, 404, 409, 413)},
            security=NODE_SECURITY,
            body=obj(
                {
                    "service": NAME,
                    "traffic_class": {"type": "string", "enum": list(CLASS_NAMES)},
                },
                ["service"],
            ),
        )
    },
    "/v1/services/{service}/replicas": {
        "post": operation(
            "Register (or renew) the caller as a replica of a service",
            {**ok(ref("Service")), **errors(400, 401, 403, 409, 413)},
            security=NODE_SECURITY,
            parameters=[SERVICE_PARAM],
            body=obj({"mode": {"type": "string", "enum": ["active-active", "leader-follower"]}}),
        ),
        "delete": operation(
            "Stop serving: remove the caller's replica",
            {**ok(ref("Service")), **errors(400, 401, 404)},
            security=NODE_SECURITY,
            parameters=[SERVICE_PARAM],
        ),
    },
    "/v1/services/{service}/leases": {
        "get": operation(
            "Signed service leases of the serving replicas",
            {**ok(ref("Service")), **errors(400, 401, 404, 409)},
            security=NODE_SECURITY,
            parameters=[SERVICE_PARAM],
        )
    },
    "/v1/admin/nodes": {
        "get": operation(
            "Every enrolled node with roles, health and versions",
            {
                **ok(obj({"nodes": {"type": "array", "items": ref("NodeListing")}}, ["nodes"])),
                **errors(401),
            },
            security=ADMIN_SECURITY,
        )
    },
    "/v1/admin/tokens": {
        "get": operation(
            "Every stored enrollment token, without its secret",
            {
                **ok(obj({"tokens": {"type": "array", "items": ref("TokenListing")}}, ["tokens"])),
                **errors(401),
            },
            security=ADMIN_SECURITY,
        ),
        "post": operation(
            "Create an enrollment token (shown once)",
            {
                **ok(
                    obj(
                        {
                            "token": {"type": "string"},
                            "token_id": {"type": "string"},
                            "tenant": {"type": "string"},
                            "roles": {"type": "array", "items": ROLE},
                            "expires_at": {"type": "number"},
                            "uses": INT,
                        },
                        ["token", "token_id", "expires_at"],
                    ),
                    201,
                ),
                **errors(400, 401, 413),
            },
            security=ADMIN_SECURITY,
            body=obj(
                {
                    "tenant": NAME,
                    "roles": {"type": "array", "items": ROLE, "minItems": 1, "maxItems": 16},
                    "ttl_s": {"type": "number", "minimum": 1, "maximum": 366 * 24 * 3600},
                    "uses": {"type": "integer", "minimum": 1, "maximum": 1000000},
                },
                ["tenant", "roles"],
            ),
        ),
    },
    "/v1/admin/tokens/{token_id}": {
        "delete": operation(
            "Revoke an enrollment token: it cannot enroll anyone any more",
            {
                **ok(
                    obj(
                        {"token_id": {"type": "string"}, "revoked": {"type": "boolean"}},
                        ["token_id", "revoked"],
                    )
                ),
                **errors(400, 401, 404),
            },
            security=ADMIN_SECURITY,
            parameters=[
                {
                    "name": "token_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                }
            ],
        )
    },
    "/v1/admin/nodes/{node_id}": {
        "delete": operation(
            "Remove a node: out of the registry and the directory; its requests fail",
            {**ok(ref("NodeListing")), **errors(400, 401, 404)},
            security=ADMIN_SECURITY,
            parameters=[{"name": "node_id", "in": "path", "required": True, "schema": NODE_ID}],
        )
    },
    "/v1/admin/nodes/{node_id}/revoke-role": {
        "post": operation(
            "Take a role from a node (its record is re-signed with the next revision)",
            {**ok(ref("NodeListing")), **errors(400, 401, 404, 409, 413)},
            security=ADMIN_SECURITY,
            parameters=[{"name": "node_id", "in": "path", "required": True, "schema": NODE_ID}],
            body=obj({"role": ROLE}, ["role"]),
        )
    },
    "/v1/admin/nodes/{node_id}/drain": {
        "post": operation(
            "Drain a node: no placement or new route through it; it GOAWAYs its sessions "
            "once their streams finished (idempotent)",
            {**ok(ref("NodeListing")), **errors(400, 401, 404)},
            security=ADMIN_SECURITY,
            parameters=[{"name": "node_id", "in": "path", "required": True, "schema": NODE_ID}],
        ),
        "delete": operation(
            "End a node's drain (devices are placed on it again; none moves back)",
            {**ok(ref("NodeListing")), **errors(400, 401, 404)},
            security=ADMIN_SECURITY,
            parameters=[{"name": "node_id", "in": "path", "required": True, "schema": NODE_ID}],
        ),
    },
    "/v1/admin/nodes/{node_id}/route-tests": {
        "post": operation(
            "Queue diag route on a node (it runs it after its next heartbeat)",
            {**ok(ref("RouteTest"), 201), **errors(400, 401, 404, 409, 413)},
            security=ADMIN_SECURITY,
            parameters=[{"name": "node_id", "in": "path", "required": True, "schema": NODE_ID}],
            body=obj({"service": NAME, "traffic_class": CLASS}, ["service"]),
        )
    },
    "/v1/admin/route-tests/{test_id}": {
        "get": operation(
            "A route test's state and, when done, the node's diag route result",
            {**ok(ref("RouteTest")), **errors(400, 401, 404)},
            security=ADMIN_SECURITY,
            parameters=[
                {
                    "name": "test_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                }
            ],
        )
    },
    "/v1/route-tests/{test_id}": {
        "post": operation(
            "A node posts the result of a route test it was handed",
            {
                **ok(obj({"test_id": {"type": "string"}, "state": {"type": "string"}})),
                **errors(400, 401, 404, 409, 413),
            },
            security=NODE_SECURITY,
            parameters=[
                {
                    "name": "test_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                }
            ],
            body=obj(
                {
                    "routes": {"type": "array", "items": {"type": "object"}},
                    "error": {"type": "string"},
                }
            ),
        )
    },
    "/v1/leases/route/hops": {
        "post": operation(
            "Per-hop RTTs of a route lease the caller is the source of (each hop's own "
            "session RTT to the next, from its last heartbeat)",
            {
                **ok(
                    obj(
                        {
                            "hops": {"type": "array", "items": NODE_ID},
                            "links": {"type": "array", "items": {"type": "object"}},
                        },
                        ["hops", "links"],
                    )
                ),
                **errors(400, 401, 403, 413),
            },
            security=NODE_SECURITY,
            body=obj({"lease": {"type": "string"}}, ["lease"]),
        )
    },
    "/v1/admin/grants": {
        "get": operation(
            "Every access grant",
            {
                **ok(obj({"grants": {"type": "array", "items": ref("Grant")}}, ["grants"])),
                **errors(401),
            },
            security=ADMIN_SECURITY,
        ),
        "post": operation(
            "Grant a tenant's nodes (optionally only some roles) access to services",
            {**ok(ref("Grant"), 201), **errors(400, 401, 409, 413)},
            security=ADMIN_SECURITY,
            body=obj(
                {
                    "tenant": NAME,
                    "services": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 16},
                    "roles": {"type": "array", "items": ROLE, "maxItems": 16},
                    "classes": {
                        "type": "array",
                        "items": {"type": "string", "enum": list(CLASS_NAMES)},
                        "maxItems": 8,
                    },
                    "min_trust_tier": {"type": "integer", "minimum": 0, "maximum": 3},
                    "ttl_s": {"type": "number", "minimum": 1, "maximum": 366 * 24 * 3600},
                },
                ["tenant", "services"],
            ),
        ),
    },
    "/v1/admin/grants/{grant_id}": {
        "delete": operation(
            "Revoke an access grant (hosts stop honouring it at their next heartbeat)",
            {**ok(ref("Grant")), **errors(401, 404)},
            security=ADMIN_SECURITY,
            parameters=[
                {
                    "name": "grant_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "maxLength": 64},
                }
            ],
        )
    },
    "/v1/admin/services": {
        "get": operation(
            "Every registered service and its replicas",
            {
                **ok(obj({"services": {"type": "array", "items": ref("Service")}}, ["services"])),
                **errors(401),
            },
            security=ADMIN_SECURITY,
        )
    },
}
