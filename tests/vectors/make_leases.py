"""Generate ``leases.json``: golden vectors of the signed control-plane objects.

    python tests/vectors/make_leases.py           # rewrite leases.json
    python tests/vectors/make_leases.py --check   # exit 1 if leases.json is stale

Bodies are assembled here from the layouts in ``docs/control.md`` with plain
``int.to_bytes`` -- not with the codec -- and the script checks that the codec produces
exactly these bytes.  Keys come from fixed seeds and Ed25519 signatures are deterministic,
so the output never changes unless the format does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from accessfabric.control.kernel.objects import (
    AccessGrant,
    AccessPolicy,
    NodeRecord,
    RouteLease,
    ServiceLease,
)
from accessfabric.control.kernel.signed import SIGNING_CONTEXT, encode_signed
from accessfabric.control.kernel.vocabulary import Role, ServiceMode
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass

OUTPUT = Path(__file__).with_name("leases.json")
AUTHORITY_SEED = bytes(range(32))
NODE_SEEDS = [bytes([n]) * 32 for n in (1, 2, 3)]
ROLE_BITS = {role.value: 1 << i for i, role in enumerate(Role)}


def u(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


def name(text: str) -> bytes:
    return u(len(text), 1) + text.encode("ascii")


def names(texts: list[str]) -> bytes:
    return u(len(texts), 1) + b"".join(name(t) for t in sorted(texts))


def envelope(tag: int, body: bytes, authority: NodeKey) -> bytes:
    signed = b"AFSO" + u(1, 1) + u(tag, 1) + u(len(body), 4) + body
    return signed + authority.sign(SIGNING_CONTEXT + signed)


def build() -> dict[str, Any]:
    authority = NodeKey.from_seed(AUTHORITY_SEED)
    nodes = [NodeKey.from_seed(seed) for seed in NODE_SEEDS]
    issued, expires = 1_767_225_600_000, 1_767_229_200_000  # 2026-01-01T00:00Z + 1 h

    record_fields: dict[str, Any] = {
        "node_id": nodes[0].node_id,
        "public_key": nodes[0].public_key_bytes.hex(),
        "sealing_public_key": nodes[0].sealing_public_key_bytes.hex(),
        "roles": ["exit", "relay"],
        "tenant": "acme",
        "organisation_scopes": ["acme/eng", "acme/ops"],
        "trust_tier": 2,
        "issued_ms": issued,
        "expires_ms": expires,
        "revision": 42,
    }
    record_body = (
        nodes[0].node_id.encode("ascii")
        + nodes[0].public_key_bytes
        + nodes[0].sealing_public_key_bytes
        + u(ROLE_BITS["relay"] | ROLE_BITS["exit"], 2)
        + name("acme")
        + names(["acme/ops", "acme/eng"])
        + u(2, 1)
        + u(issued, 8)
        + u(expires, 8)
        + u(42, 8)
    )
    record = NodeRecord(
        node_id=nodes[0].node_id,
        public_key=nodes[0].public_key_bytes,
        sealing_public_key=nodes[0].sealing_public_key_bytes,
        roles=frozenset({Role.RELAY, Role.EXIT}),
        tenant="acme",
        organisation_scopes=frozenset({"acme/ops", "acme/eng"}),
        trust_tier=2,
        issued_ms=issued,
        expires_ms=expires,
        revision=42,
    )

    hops = [n.node_id for n in nodes]
    lease_id = bytes(range(0xA0, 0xB0))
    route_fields: dict[str, Any] = {
        "lease_id": lease_id.hex(),
        "route_id": 0x0123_4567_89AB_CDEF,
        "epoch": 7,
        "hops": hops,
        "tenant": "acme",
        "allowed_services": ["rdp", "ssh"],
        "allowed_classes": ["interactive", "reliable"],
        "issued_ms": issued,
        "expires_ms": expires,
        "fencing_token": 1234,
    }
    route_body = (
        lease_id
        + u(0x0123_4567_89AB_CDEF, 8)
        + u(7, 8)
        + u(3, 1)
        + b"".join(h.encode("ascii") for h in hops)
        + name("acme")
        + names(["ssh", "rdp"])
        + u((1 << TrafficClass.INTERACTIVE) | (1 << TrafficClass.RELIABLE), 1)
        + u(issued, 8)
        + u(expires, 8)
        + u(1234, 8)
    )
    route = RouteLease(
        lease_id=lease_id,
        route_id=0x0123_4567_89AB_CDEF,
        epoch=7,
        hops=tuple(hops),
        tenant="acme",
        allowed_services=frozenset({"rdp", "ssh"}),
        allowed_classes=frozenset({TrafficClass.INTERACTIVE, TrafficClass.RELIABLE}),
        issued_ms=issued,
        expires_ms=expires,
        fencing_token=1234,
    )

    service_fields: dict[str, Any] = {
        "service": "admin-console",
        "replica": nodes[2].node_id,
        "mode": "leader-follower",
        "epoch": 3,
        "issued_ms": issued,
        "expires_ms": expires,
        "fencing_token": 99,
    }
    service_body = (
        name("admin-console")
        + nodes[2].node_id.encode("ascii")
        + u(2, 1)
        + u(3, 8)
        + u(issued, 8)
        + u(expires, 8)
        + u(99, 8)
    )
    service = ServiceLease(
        service="admin-console",
        replica=nodes[2].node_id,
        mode=ServiceMode.LEADER_FOLLOWER,
        epoch=3,
        issued_ms=issued,
        expires_ms=expires,
        fencing_token=99,
    )

    grant_id = bytes(range(0x40, 0x50))
    grant_fields: dict[str, Any] = {
        "grant_id": grant_id.hex(),
        "tenant": "acme",
        "roles": ["mobile-edge"],
        "services": ["rdp", "ssh"],
        "classes": ["interactive", "reliable"],
        "min_trust_tier": 1,
        "expires_ms": expires,
        "nodes": [nodes[0].node_id],
        "hosts": [nodes[2].node_id],
    }
    access_fields: dict[str, Any] = {
        "host": nodes[2].node_id,
        "revision": 42,
        "issued_ms": issued,
        "expires_ms": expires,
        "grants": [grant_fields],
        "record_floors": [[nodes[1].node_id, 7]],
        "tenant_floor_ms": issued - 86_400_000,
    }
    access_body = (
        nodes[2].node_id.encode("ascii")
        + u(42, 8)
        + u(issued, 8)
        + u(expires, 8)
        + u(1, 1)  # one grant:
        + grant_id
        + name("acme")
        + u(ROLE_BITS["mobile-edge"], 2)
        + names(["rdp", "ssh"])
        + u((1 << TrafficClass.INTERACTIVE) | (1 << TrafficClass.RELIABLE), 1)
        + u(1, 1)
        + u(expires, 8)
        + u(1, 1)  # nodes: one node id
        + nodes[0].node_id.encode("ascii")
        + u(1, 1)  # hosts: one node id
        + nodes[2].node_id.encode("ascii")
        + u(1, 1)  # record floors: one (node id, revision)
        + nodes[1].node_id.encode("ascii")
        + u(7, 8)
        + u(issued - 86_400_000, 8)  # tenant floor (optional, last; absent when 0)
    )
    access = AccessPolicy(
        host=nodes[2].node_id,
        revision=42,
        issued_ms=issued,
        expires_ms=expires,
        grants=(
            AccessGrant(
                grant_id=grant_id,
                tenant="acme",
                roles=frozenset({Role.MOBILE_EDGE}),
                services=frozenset({"rdp", "ssh"}),
                classes=frozenset({TrafficClass.INTERACTIVE, TrafficClass.RELIABLE}),
                min_trust_tier=1,
                expires_ms=expires,
                nodes=frozenset({nodes[0].node_id}),
                hosts=frozenset({nodes[2].node_id}),
            ),
        ),
        record_floors=((nodes[1].node_id, 7),),
        tenant_floor_ms=issued - 86_400_000,
    )

    vectors = []
    Signed = NodeRecord | RouteLease | ServiceLease | AccessPolicy
    cases: list[tuple[str, int, dict[str, Any], bytes, Signed]]
    cases = [
        ("node_record", 1, record_fields, record_body, record),
        ("route_lease", 2, route_fields, route_body, route),
        ("service_lease", 3, service_fields, service_body, service),
        ("access_policy", 4, access_fields, access_body, access),
    ]
    for type_name, tag, fields, body, obj in cases:
        blob = envelope(tag, body, authority)
        if obj.encode_body() != body or encode_signed(obj, authority) != blob:
            raise SystemExit(f"codec disagrees with the documented layout of {type_name}")
        vectors.append(
            {
                "type": type_name,
                "type_tag": tag,
                "fields": fields,
                "body_hex": body.hex(),
                "hex": blob.hex(),
            }
        )
    return {
        "description": {
            "title": "accessfabric signed control-plane object vectors",
            "generator": "tests/vectors/make_leases.py (deterministic; do not edit by hand)",
            "spec": "docs/control.md",
            "envelope": (
                "hex = 'AFSO' | version u8 (1) | type tag u8 | body length u32 | body | "
                "Ed25519 signature (64) over SIGNING_CONTEXT || everything before the "
                "signature; SIGNING_CONTEXT is the ASCII 'accessfabric signed object v1' "
                "followed by one zero byte. Integers big-endian."
            ),
            "fields": (
                "Integers as JSON numbers (u64: parse as unsigned 64-bit), byte strings as "
                "lower-case hex, node ids and names as strings, roles/classes/mode by name. "
                "Times are Unix milliseconds."
            ),
        },
        "authority_seed": AUTHORITY_SEED.hex(),
        "authority_public_key": authority.public_key_bytes.hex(),
        "node_seeds": [seed.hex() for seed in NODE_SEEDS],
        "vectors": vectors,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv[1:]:
        sys.exit(0 if OUTPUT.read_text(encoding="utf-8") == text else 1)
    OUTPUT.write_text(text, encoding="utf-8")
