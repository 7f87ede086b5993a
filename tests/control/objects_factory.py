"""Fixed keys and objects for the signed-object tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from accessfabric.control.kernel.objects import NodeRecord, RouteLease, ServiceLease
from accessfabric.control.kernel.vocabulary import Role, ServiceMode
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass

AUTHORITY = NodeKey.from_seed(bytes(range(32)))
NODES = [NodeKey.from_seed(bytes([n]) * 32) for n in (1, 2, 3, 4)]
ISSUED_MS = 1_767_225_600_000
EXPIRES_MS = ISSUED_MS + 3_600_000
NOW = ISSUED_MS / 1000 + 60  # a minute into the validity window


def node_record(**changes: Any) -> NodeRecord:
    record = NodeRecord(
        node_id=NODES[0].node_id,
        public_key=NODES[0].public_key_bytes,
        sealing_public_key=NODES[0].sealing_public_key_bytes,
        roles=frozenset({Role.RELAY, Role.EXIT}),
        tenant="acme",
        organisation_scopes=frozenset({"acme/eng"}),
        trust_tier=2,
        issued_ms=ISSUED_MS,
        expires_ms=EXPIRES_MS,
        revision=42,
    )
    return replace(record, **changes)


def route_lease(**changes: Any) -> RouteLease:
    lease = RouteLease(
        lease_id=bytes(16),
        route_id=7,
        epoch=3,
        hops=(NODES[0].node_id, NODES[1].node_id, NODES[2].node_id),
        tenant="acme",
        allowed_services=frozenset({"rdp"}),
        allowed_classes=frozenset({TrafficClass.INTERACTIVE, TrafficClass.BULK}),
        issued_ms=ISSUED_MS,
        expires_ms=EXPIRES_MS,
        fencing_token=1000,
    )
    return replace(lease, **changes)


def service_lease(**changes: Any) -> ServiceLease:
    lease = ServiceLease(
        service="admin-console",
        replica=NODES[2].node_id,
        mode=ServiceMode.LEADER_FOLLOWER,
        epoch=5,
        issued_ms=ISSUED_MS,
        expires_ms=EXPIRES_MS,
        fencing_token=77,
    )
    return replace(lease, **changes)
