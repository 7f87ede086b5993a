"""Handlers of the node-facing endpoints: enroll, heartbeat, directory, leases, services."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from accessfabric import __version__
from accessfabric.control.client.facts import FactsError, parse_facts
from accessfabric.control.kernel.vocabulary import Role, check_name
from accessfabric.control.server.api.auth import (
    authenticate_heartbeat,
    authenticate_node,
    signed_parts,
    verify_signed,
)
from accessfabric.control.server.api.body import parse_json_object, read_body, string_field
from accessfabric.control.server.api.context import context
from accessfabric.control.server.api.errors import ApiError, bad_request
from accessfabric.control.server.directory import directory_document
from accessfabric.control.server.leasing import LeaseGrant, LeaseRefused, SnapshotBehind
from accessfabric.control.server.registry import RegistryError, record_json
from accessfabric.control.server.services import MODE_NAMES, ServiceError, ServiceView, parse_mode
from accessfabric.control.server.tokens import BadTokenError, TokenExpiredError, TokenUsedUpError
from accessfabric.identity.node_id import node_id_from_public_key
from accessfabric.identity.signatures import load_public_key
from accessfabric.wire.registry import TrafficClass

if TYPE_CHECKING:
    from accessfabric.control.server.plane import ControlPlane

_STATUS_OF = {
    "unknown_service": 404,
    "unknown_node": 404,
    "role_required": 403,
    "tenant_conflict": 409,
    "mode_conflict": 409,
    "no_route": 409,
    "source_not_live": 409,
    "contended": 409,
    "role_not_held": 409,
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _key_field(document: dict[str, Any], name: str) -> bytes:
    text = string_field(document, name, max_length=64)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("bad_field", f"{name}: base64 of a 32-byte key required") from None
    if len(raw) != 32:
        raise bad_request("bad_field", f"{name}: base64 of a 32-byte key required")
    return raw


def _refused(exc: LeaseRefused | ServiceError | RegistryError) -> ApiError:
    return ApiError(_STATUS_OF.get(exc.code, 400), exc.code, str(exc))


async def status(request: web.Request) -> web.Response:
    plane = context(request).plane
    return web.json_response(
        {
            "service": "accessfabric control plane",
            "version": __version__,
            "authority": plane.authority.public_key_text,
            "nodes": len(plane.registry),
            "store": plane.store_status(),
        }
    )


async def enroll(request: web.Request) -> web.Response:
    ctx = context(request)
    plane = ctx.plane
    body = await read_body(request, plane.config.max_body_bytes)
    parts = signed_parts(request, body)
    document = parse_json_object(body)
    token = string_field(document, "token", max_length=256)
    public_key = _key_field(document, "public_key")
    sealing_key = _key_field(document, "sealing_public_key")
    try:
        load_public_key(public_key)
    except ValueError:
        raise bad_request("bad_field", "public_key: not an Ed25519 public key") from None
    node_id = node_id_from_public_key(public_key)
    if parts.node_id.strip().lower() != node_id:
        raise ApiError(401, "bad_node_id", "AF-Node is not the node id of public_key")
    await verify_signed(ctx, parts, public_key)  # proof of possession of the key
    try:
        node, retried = plane.registry.enroll_once(token, public_key, sealing_key)
    except BadTokenError as exc:
        raise ApiError(401, "bad_token", str(exc)) from None
    except TokenExpiredError as exc:
        raise ApiError(401, "token_expired", str(exc)) from None
    except TokenUsedUpError as exc:
        raise ApiError(401, "token_used_up", str(exc)) from None
    except RegistryError as exc:
        raise _refused(exc) from None
    if not retried:  # a retry (the answer was lost) changed nothing: one event per enrollment
        roles = ", ".join(sorted(role.value for role in node.record.roles))
        plane.events.add(plane.clock(), "node_enrolled", node_id, f"roles {roles}")
    return web.json_response(
        {
            "node_record": record_json(node),
            "authority": plane.authority.public_key_text,
            "policy": plane.config.policy_document(),
            "mac_key": plane.mac_keys.statement_json,
        }
    )


async def heartbeat(request: web.Request) -> web.Response:
    plane = context(request).plane
    node, body, by_mac = await authenticate_heartbeat(request)
    try:
        facts = parse_facts(parse_json_object(body))
    except FactsError as exc:
        raise bad_request("bad_facts", str(exc)) from None
    reply = plane.ingest_heartbeat(node, facts)
    if not by_mac:  # a node that MACs holds the control key already
        reply["mac_key"] = plane.mac_keys.statement_json
    return web.json_response(reply)


async def directory(request: web.Request) -> web.Response:
    plane = context(request).plane
    node, _ = await authenticate_node(request)
    since = request.query.get("since")
    if since is not None and len(since) > 64:
        raise bad_request("bad_query", "since: the cursor of a directory this node holds")
    return web.json_response(
        directory_document(
            node,
            plane.registry,
            plane.heartbeats,
            plane.clock(),
            plane.config.policy,
            since,
            plane.drains,
        )
    )


async def telemetry(request: web.Request) -> web.Response:
    """``GET /v1/telemetry``: the partition's heartbeat counters, for ``observer`` nodes
    (control/server/telemetry.py ``observer_view``; ADR 0038)."""
    plane = context(request).plane
    node, _ = await authenticate_node(request)
    if Role.OBSERVER not in node.record.roles:
        raise ApiError(403, "role_not_held", "telemetry is for nodes holding the observer role")
    body = plane.observer_views.body(node, plane.clock())  # one pass per partition a second
    return web.Response(body=body, content_type="application/json")


def _traffic_class(document: dict[str, Any]) -> TrafficClass:
    text = document.get("traffic_class", "interactive")
    names = [c.name.lower() for c in TrafficClass]
    if not isinstance(text, str) or text not in names:
        raise bad_request("bad_field", f"traffic_class: one of {', '.join(names)}")
    return TrafficClass[text.upper()]


def _service_name(value: object, field: str = "service") -> str:
    try:
        return check_name("service", value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise bad_request("bad_field", f"{field}: {exc}") from None


def grant_json(
    grant: LeaseGrant, record_of: Callable[[str], bytes | None] = lambda node_id: None
) -> dict[str, Any]:
    """The grant as JSON; ``record_of`` gives a node's signed record (the destination's is
    sent with each route, so the source can seal to it without seeing the directory)."""
    routes = []
    for index, issued in enumerate(grant.routes):
        lease = issued.lease
        destination = record_of(lease.hops[-1]) if lease.hops else None
        routes.append(
            {
                "rank": "primary" if index == 0 else "alternate",
                "lease": _b64(issued.blob),
                "lease_id": lease.lease_id.hex(),
                "route_id": lease.route_id,
                "epoch": lease.epoch,
                "fencing_token": lease.fencing_token,
                "hops": list(lease.hops),
                "issued_ms": lease.issued_ms,
                "expires_ms": lease.expires_ms,
                "score": round(issued.score, 3),
                "disjoint": issued.disjoint,
                "reasons": [
                    {
                        "factor": r.factor,
                        "contribution": round(r.contribution, 3),
                        "explanation": r.explanation,
                    }
                    for r in issued.reasons
                ],
                "destination_record": None if destination is None else _b64(destination),
            }
        )
    return {
        "service": grant.service,
        "traffic_class": grant.traffic_class.name.lower(),
        "routes": routes,
        "notes": list(grant.notes),
    }


async def route_leases(request: web.Request) -> web.Response:
    plane = context(request).plane
    # A device waits for this to open a stream: its signature may use the verifier's
    # reserve on the loop, not wait a loop turn for the batch (issue 17, ADR 0043, 0056).
    node, body = await authenticate_node(request, urgent=True)
    document = parse_json_object(body)
    service = _service_name(document.get("service"))
    traffic_class = _traffic_class(document)
    try:
        try:
            grant = plane.leasing.issue(node, service, traffic_class, may_wait=True)
        except SnapshotBehind as behind:  # it just joined: the next rebuild takes it in
            await asyncio.sleep(behind.wait)
            grant = plane.leasing.issue(node, service, traffic_class)
    except LeaseRefused as exc:
        raise _refused(exc) from None
    return web.json_response(grant_json(grant, lambda node_id: _record_blob(plane, node_id)))


def _record_blob(plane: ControlPlane, node_id: str) -> bytes | None:
    node = plane.registry.get(node_id)
    return None if node is None else bytes(node.blob)


def view_json(view: ServiceView, me: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "service": view.name,
        "mode": MODE_NAMES[view.mode],
        "tenant": view.tenant,
        "epoch": view.epoch,
        "leader": view.leader,
        "replicas": [
            {"node_id": r.node_id, "active": r.active, "registered_at": r.registered_at}
            for r in view.replicas
        ],
    }
    if me is not None:
        mine = next((r for r in view.replicas if r.node_id == me), None)
        if mine is None:
            out["me"] = "not_registered"
        elif view.leader is None:
            out["me"] = "active"
        else:
            out["me"] = "leader" if mine.active else "follower"
    return out


async def register_replica(request: web.Request) -> web.Response:
    plane = context(request).plane
    node, body = await authenticate_node(request)
    service = _service_name(request.match_info["service"], "path service")
    document = parse_json_object(body) if body else {}
    mode_text = document.get("mode", "active-active")
    try:
        mode = parse_mode(mode_text) if isinstance(mode_text, str) else parse_mode("")
        record = node.record
        view = plane.services.register(service, node.node_id, record.roles, record.tenant, mode)
    except ServiceError as exc:
        raise _refused(exc) from None
    return web.json_response(view_json(view, node.node_id))


async def deregister_replica(request: web.Request) -> web.Response:
    plane = context(request).plane
    node, _ = await authenticate_node(request)
    service = _service_name(request.match_info["service"], "path service")
    view = plane.services.view(service)
    if view is None or view.tenant != node.record.tenant:
        raise ApiError(404, "unknown_service", f"service {service!r} is not registered")
    try:
        plane.services.deregister(service, node.node_id)
        view = plane.services.reconcile(service)
    except ServiceError as exc:
        raise _refused(exc) from None
    return web.json_response(view_json(view, node.node_id))


async def service_leases(request: web.Request) -> web.Response:
    plane = context(request).plane
    node, _ = await authenticate_node(request)
    service = _service_name(request.match_info["service"], "path service")
    try:
        view = plane.services.reconcile(service)
    except ServiceError as exc:
        raise _refused(exc) from None
    if view.tenant != node.record.tenant:
        raise ApiError(404, "unknown_service", f"service {service!r} is not registered")
    blobs = plane.services.issue(view, plane.config.service_lease_ttl)
    out = view_json(view, node.node_id)
    out["leases"] = [_b64(blob) for blob in blobs]
    return web.json_response(out)
