"""``ServiceAccess.refusal``: what a grant admits (tenant, role, tier, service, class, time)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from accessfabric.control.kernel.objects import AccessGrant, AccessPolicy
from accessfabric.control.kernel.rejections import RejectReason, SignedObjectRejected
from accessfabric.control.kernel.signed import encode_signed
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.json_output import rfc3339
from accessfabric.node.serving.access import ServiceAccess
from accessfabric.wire.registry import TrafficClass
from tests.control.objects_factory import (
    AUTHORITY,
    EXPIRES_MS,
    ISSUED_MS,
    NODES,
    NOW,
    node_record,
)

HOST = NODES[3].node_id
MEMBER = NODES[0].node_id  # node_record(): tenant acme, relay + exit, tier 2
GRANT = AccessGrant(
    grant_id=bytes(16),
    tenant="acme",
    roles=frozenset({Role.EXIT}),
    services=frozenset({"rdp"}),
    classes=frozenset({TrafficClass.INTERACTIVE}),
    min_trust_tier=2,
    expires_ms=EXPIRES_MS,
)


def _policy(*grants: AccessGrant, revision: int = 5, host: str = HOST) -> bytes:
    policy = AccessPolicy(
        host=host, revision=revision, issued_ms=ISSUED_MS, expires_ms=EXPIRES_MS,
        grants=grants,
    )  # fmt: skip
    return encode_signed(policy, AUTHORITY)


def _access(*grants: AccessGrant, **record: object) -> ServiceAccess:
    access = ServiceAccess(HOST, {}, AUTHORITY.public_key_bytes, clock=lambda: NOW)
    access.take_policy(_policy(*grants))
    assert access.learn_record(encode_signed(node_record(**record), AUTHORITY), MEMBER)
    return access


def test_a_matching_grant_admits_and_anything_less_is_refused() -> None:
    assert _access(GRANT).refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE) is None
    any_role = _access(replace(GRANT, roles=frozenset()))  # no roles named: any role
    assert any_role.refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE) is None
    cases = [
        (_access(GRANT), "rdp", TrafficClass.BULK),  # another class
        (_access(GRANT), "ssh", TrafficClass.INTERACTIVE),  # another service
        (_access(GRANT, tenant="globex"), "rdp", TrafficClass.INTERACTIVE),
        (_access(GRANT, roles=frozenset({Role.RELAY})), "rdp", TrafficClass.INTERACTIVE),
        (_access(GRANT, trust_tier=1), "rdp", TrafficClass.INTERACTIVE),
        (_access(replace(GRANT, expires_ms=ISSUED_MS)), "rdp", TrafficClass.INTERACTIVE),
    ]
    for access, service, traffic_class in cases:
        why = access.refusal(MEMBER, service, traffic_class)
        assert why is not None and why.startswith("no grant admits tenant"), why


def test_no_record_no_policy_or_an_expired_policy_is_refused() -> None:
    access = _access(GRANT)
    assert "no valid node record" in str(
        access.refusal(NODES[1].node_id, "rdp", TrafficClass.INTERACTIVE)
    )
    access.clock = lambda: EXPIRES_MS / 1000 + 1
    assert "expired" in str(access.refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE))
    fresh = ServiceAccess(HOST, {}, AUTHORITY.public_key_bytes, clock=lambda: NOW)
    assert "no access policy" in str(fresh.refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE))
    static = ServiceAccess(HOST, {"rdp": (MEMBER,)}, None)
    assert static.refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE) is None
    assert "no allow list" in str(static.refusal(NODES[1].node_id, "rdp", TrafficClass.INTERACTIVE))


def test_records_must_name_the_node_and_policies_must_be_newer_and_ours() -> None:
    access = ServiceAccess(HOST, {}, AUTHORITY.public_key_bytes, clock=lambda: NOW)
    blob = encode_signed(node_record(), AUTHORITY)
    assert access.learn_record(blob, NODES[1].node_id) is None  # someone else's record
    assert access.learn_record(b"junk", MEMBER) is None
    forged = encode_signed(node_record(), NODES[2])
    assert access.learn_record(forged, MEMBER) is None
    access.take_policy(_policy(GRANT, revision=9))
    with pytest.raises(SignedObjectRejected) as older:
        access.take_policy(_policy(revision=8))  # a replayed older policy (with no grants)
    assert older.value.reason is RejectReason.STALE_EPOCH
    with pytest.raises(SignedObjectRejected) as foreign:
        access.take_policy(_policy(revision=10, host=NODES[2].node_id))
    assert foreign.value.reason is RejectReason.HOP_NOT_ON_ROUTE
    assert access.policy is not None and access.policy.revision == 9
    assert access.take_policy(_policy(revision=10)).grants == ()  # a revocation


def test_a_grant_naming_nodes_admits_only_those_and_one_naming_hosts_only_there() -> None:
    other = NODES[1].node_id  # same tenant, same roles: only the node list tells them apart
    only_member = replace(GRANT, nodes=frozenset({MEMBER}))
    assert _access(only_member).refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE) is None
    access = _access(replace(GRANT, nodes=frozenset({other})))
    assert str(access.refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE)).startswith("no grant")
    here = _access(replace(GRANT, hosts=frozenset({HOST})))
    assert here.refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE) is None
    elsewhere = _access(replace(GRANT, hosts=frozenset({NODES[2].node_id})))
    assert str(elsewhere.refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE)).startswith("no grant")
    # a node of another tenant named in a grant is still of another tenant
    foreign = _access(replace(GRANT, nodes=frozenset({MEMBER})), tenant="globex")
    assert str(foreign.refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE)).startswith("no grant")


def test_a_record_below_the_policys_floor_is_not_believed() -> None:
    access = _access(GRANT)  # the member's record is revision 42
    assert access.refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE) is None
    floored = AccessPolicy(
        host=HOST, revision=6, issued_ms=ISSUED_MS, expires_ms=EXPIRES_MS, grants=(GRANT,),
        record_floors=((MEMBER, 43),),
    )  # fmt: skip
    access.take_policy(encode_signed(floored, AUTHORITY))
    why = access.refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE)
    assert why is not None and "superseded" in why, why
    # the re-signed record (revision 43, still holding the role) is believed again
    assert access.learn_record(encode_signed(node_record(revision=43), AUTHORITY), MEMBER)
    assert access.refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE) is None


def test_the_tenant_floor_refuses_older_records_and_status_reports_it() -> None:
    access = _access(GRANT)  # the member's record was issued at ISSUED_MS
    assert access.status()["tenant_floor"] is None  # the policy has none
    floored = AccessPolicy(
        host=HOST, revision=6, issued_ms=ISSUED_MS, expires_ms=EXPIRES_MS, grants=(GRANT,),
        tenant_floor_ms=ISSUED_MS + 1,
    )  # fmt: skip
    access.take_policy(encode_signed(floored, AUTHORITY))
    why = access.refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE)
    assert why is not None and "predates the tenant's record floor" in why, why
    assert access.status()["tenant_floor"] == rfc3339((ISSUED_MS + 1) / 1000)
    # a record re-issued after the floor is believed again
    assert access.learn_record(
        encode_signed(node_record(revision=43, issued_ms=ISSUED_MS + 2), AUTHORITY), MEMBER
    )
    assert access.refusal(MEMBER, "rdp", TrafficClass.INTERACTIVE) is None
