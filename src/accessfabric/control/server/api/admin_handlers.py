"""Handlers of the operator endpoints (``Authorization: Bearer afadm1_…``)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from accessfabric.control.kernel.codec import canonical_node_id
from accessfabric.control.kernel.objects import MAX_GRANT_NODES
from accessfabric.control.kernel.vocabulary import Role, check_name
from accessfabric.control.server.api.auth import require_admin
from accessfabric.control.server.api.body import (
    int_field,
    number_field,
    parse_json_object,
    read_body,
    string_field,
    string_list,
)
from accessfabric.control.server.api.context import context
from accessfabric.control.server.api.errors import ApiError, bad_request
from accessfabric.control.server.api.node_handlers import view_json
from accessfabric.control.server.grants import MAX_GRANT_TTL, GrantError, grant_json
from accessfabric.control.server.plane import ControlPlane
from accessfabric.control.server.registry import RegisteredNode, RegistryError
from accessfabric.control.server.tokens import TokenInfo
from accessfabric.wire.registry import TrafficClass

MAX_TOKEN_TTL = 366 * 24 * 3600.0
MAX_TOKEN_USES = 1_000_000
TOKEN_ID = re.compile(r"[0-9a-f]{16}")


def node_listing(plane: ControlPlane, node: RegisteredNode, now: float) -> dict[str, Any]:
    record = node.record
    state = plane.heartbeats.get(record.node_id)
    report = plane.heartbeats.health(record.node_id, now, record.revision)
    facts = state.facts if state else None
    return {
        "node_id": record.node_id,
        "roles": sorted(role.value for role in record.roles),
        "tenant": record.tenant,
        "trust_tier": record.trust_tier,
        "revision": record.revision,
        "health": report.health.value,
        "health_reasons": list(report.reasons),
        "last_heartbeat_age_s": None if report.age is None else round(report.age, 3),
        "heartbeats": state.count if state else 0,
        "versions": {
            "protocol": list(facts.protocol_versions) if facts else [],
            "software": facts.software_version if facts else "",
        },
        "region": (facts.region if facts else "") or None,
        "enrolled_at": node.enrolled_at,
        "draining": plane.drains.is_draining(record.node_id),
        "drained_at": plane.drains.since(record.node_id),
    }


async def list_nodes(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    now = plane.clock()
    nodes = [node_listing(plane, node, now) for node in plane.registry.all()]
    return web.json_response({"nodes": nodes})


async def create_token(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    document = parse_json_object(await read_body(request, plane.config.max_body_bytes))
    tenant = string_field(document, "tenant", max_length=64)
    try:
        check_name("tenant", tenant)
        roles = [Role.parse(text) for text in string_list(document, "roles", 16)]
    except ValueError as exc:
        raise bad_request("bad_field", str(exc)) from None
    ttl = number_field(document, "ttl_s", 3600.0, 1.0, MAX_TOKEN_TTL)
    uses = int_field(document, "uses", 1, 1, MAX_TOKEN_USES)
    created = plane.registry.tokens.create(tenant, roles, ttl, uses)
    info = created.info
    plane.events.add(
        plane.clock(), "token_created", info.token_id,
        f"tenant {info.tenant}, roles {', '.join(sorted(r.value for r in info.roles))}",
    )  # fmt: skip
    return web.json_response(
        {
            "token": created.token,
            "token_id": info.token_id,
            "tenant": info.tenant,
            "roles": sorted(role.value for role in info.roles),
            "expires_at": info.expires_at,
            "uses": info.uses_left,
        },
        status=201,
    )


async def revoke_role(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    node_id = path_node_id(request)
    document = parse_json_object(await read_body(request, plane.config.max_body_bytes))
    try:
        role = Role.parse(string_field(document, "role", max_length=64))
    except ValueError as exc:
        raise bad_request("bad_field", str(exc)) from None
    try:
        node = plane.revoke_role(node_id, role)  # hosts refuse its older records (floor)
    except (RegistryError, GrantError) as exc:
        status = 404 if exc.code == "unknown_node" else 409
        raise ApiError(status, exc.code, str(exc)) from None
    plane.events.add(plane.clock(), "role_revoked", node_id, f"role {role.value} revoked")
    return web.json_response(node_listing(plane, node, plane.clock()))


def path_node_id(request: web.Request) -> str:
    """The node id the request's path names (400 ``bad_node_id`` when it names none)."""
    try:
        return canonical_node_id(request.match_info["node_id"])
    except (TypeError, ValueError):
        raise bad_request("bad_node_id", "the path does not name a node id") from None


def path_node(plane: ControlPlane, request: web.Request) -> RegisteredNode:
    """The enrolled node the request's path names (404 ``unknown_node`` when none is)."""
    node_id = path_node_id(request)
    node = plane.registry.get(node_id)
    if node is None:
        raise ApiError(404, "unknown_node", f"no enrolled node {node_id}")
    return node


async def drain_node(request: web.Request) -> web.Response:
    """Drain a node (:mod:`accessfabric.control.server.drains`); draining it again changes
    nothing."""
    require_admin(request)
    plane = context(request).plane
    node = path_node(plane, request)
    if not plane.drains.is_draining(node.node_id):
        plane.drains.drain(node.node_id)
        plane.events.add(
            plane.clock(), "node_drained", node.node_id,
            "no placement or new route through it; sessions GOAWAY once their streams end",
        )  # fmt: skip
    return web.json_response(node_listing(plane, node, plane.clock()))


async def undrain_node(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    node = path_node(plane, request)
    if plane.drains.undrain(node.node_id):
        plane.events.add(plane.clock(), "node_undrained", node.node_id, "placed and routed again")
    return web.json_response(node_listing(plane, node, plane.clock()))


def _token_listing(info: TokenInfo) -> dict[str, Any]:
    return {
        "token_id": info.token_id,
        "tenant": info.tenant,
        "roles": sorted(role.value for role in info.roles),
        "created_at": info.created_at,
        "expires_at": info.expires_at,
        "uses": info.uses_left,
    }


async def list_tokens(request: web.Request) -> web.Response:
    """Every stored enrollment token (without its secret)."""
    require_admin(request)
    tokens = context(request).plane.registry.tokens.list()
    listing = sorted((_token_listing(t) for t in tokens), key=lambda t: t["created_at"])
    return web.json_response({"tokens": listing})


async def revoke_token(request: web.Request) -> web.Response:
    require_admin(request)
    token_id = request.match_info["token_id"]
    if not TOKEN_ID.fullmatch(token_id):
        raise bad_request("bad_token_id", "a token id is 16 hex digits (control token list)")
    if not context(request).plane.registry.tokens.revoke(token_id):
        raise ApiError(404, "unknown_token", f"no token {token_id}")
    return web.json_response({"token_id": token_id, "revoked": True})


async def remove_node(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    node_id = path_node_id(request)
    try:
        node = plane.registry.remove(node_id)
    except RegistryError as exc:
        raise ApiError(404, exc.code, str(exc)) from None
    plane.heartbeats.remove(node_id)
    plane.drains.undrain(node_id)
    listing = node_listing(plane, node, plane.clock())
    return web.json_response({**listing, "removed": True})


async def list_services(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    views = [plane.services.view(name) for name in plane.services.names()]
    return web.json_response({"services": [view_json(v) for v in views if v is not None]})


async def list_grants(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    return web.json_response({"grants": [grant_json(g) for g in plane.grants.all()]})


async def create_grant(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    document = parse_json_object(await read_body(request, plane.config.max_body_bytes))
    tenant = string_field(document, "tenant", max_length=64)
    try:
        services = string_list(document, "services", 16)
        roles = [Role.parse(text) for text in _optional_list(document, "roles", 16)]
        class_names = _optional_list(document, "classes", 8)
        classes = [TrafficClass.from_name(name) for name in class_names] or list(TrafficClass)
        nodes = _optional_list(document, "nodes", MAX_GRANT_NODES)
        hosts = _optional_list(document, "hosts", MAX_GRANT_NODES)
    except ValueError as exc:
        raise bad_request("bad_field", str(exc)) from None
    tier = int_field(document, "min_trust_tier", 0, 0, 3)
    ttl = number_field(document, "ttl_s", MAX_GRANT_TTL, 1.0, MAX_GRANT_TTL)
    try:
        stored = plane.grants.create(
            tenant, services, roles=roles, classes=classes, min_trust_tier=tier, ttl=ttl,
            nodes=nodes, hosts=hosts,
        )  # fmt: skip
    except GrantError as exc:
        status = 400 if exc.code == "bad_grant" else 409
        raise ApiError(status, exc.code, str(exc)) from None
    return web.json_response(grant_json(stored), status=201)


async def revoke_grant(request: web.Request) -> web.Response:
    require_admin(request)
    plane = context(request).plane
    try:
        stored = plane.grants.revoke(request.match_info["grant_id"])
    except GrantError as exc:
        raise ApiError(404, exc.code, str(exc)) from None
    return web.json_response(grant_json(stored))


def _optional_list(document: dict[str, Any], name: str, limit: int) -> list[str]:
    if document.get(name) in (None, []):
        return []
    return string_list(document, name, limit)
