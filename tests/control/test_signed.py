"""Canonical encoding: deterministic bytes, golden vectors both ways, strict decoding."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accessfabric.control.kernel.codec import MalformedError
from accessfabric.control.kernel.objects import (
    AccessGrant,
    AccessPolicy,
    NodeRecord,
    ObjectType,
    RouteLease,
    ServiceLease,
)
from accessfabric.control.kernel.signed import encode_signed, object_type_of, open_signed
from accessfabric.control.kernel.vocabulary import Role, ServiceMode
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass
from tests.control.objects_factory import AUTHORITY, NODES, node_record, route_lease, service_lease

VECTOR_DIR = Path(__file__).parents[1] / "vectors"
DOCUMENT: dict[str, Any] = json.loads((VECTOR_DIR / "leases.json").read_text(encoding="utf-8"))
KINDS: dict[str, type[NodeRecord | RouteLease | ServiceLease | AccessPolicy]] = {
    "node_record": NodeRecord,
    "route_lease": RouteLease,
    "service_lease": ServiceLease,
    "access_policy": AccessPolicy,
}


def _grant(fields: dict[str, Any]) -> AccessGrant:
    assert set(fields) == {f.name for f in dataclasses.fields(AccessGrant)}
    return AccessGrant(
        **{
            **fields,
            "grant_id": bytes.fromhex(fields["grant_id"]),
            "roles": frozenset(Role(r) for r in fields["roles"]),
            "services": frozenset(fields["services"]),
            "classes": frozenset(TrafficClass.from_name(c) for c in fields["classes"]),
        }
    )


def _from_fields(
    kind: str, fields: dict[str, Any]
) -> NodeRecord | RouteLease | ServiceLease | AccessPolicy:
    if kind == "access_policy":
        return AccessPolicy(**{**fields, "grants": tuple(_grant(g) for g in fields["grants"])})
    if kind == "node_record":
        return NodeRecord(
            **{
                **fields,
                "public_key": bytes.fromhex(fields["public_key"]),
                "sealing_public_key": bytes.fromhex(fields["sealing_public_key"]),
                "roles": frozenset(Role(r) for r in fields["roles"]),
                "organisation_scopes": frozenset(fields["organisation_scopes"]),
            }
        )
    if kind == "route_lease":
        return RouteLease(
            **{
                **fields,
                "lease_id": bytes.fromhex(fields["lease_id"]),
                "hops": tuple(fields["hops"]),
                "allowed_services": frozenset(fields["allowed_services"]),
                "allowed_classes": frozenset(
                    TrafficClass.from_name(c) for c in fields["allowed_classes"]
                ),
            }
        )
    mode = {
        "active-active": ServiceMode.ACTIVE_ACTIVE,
        "leader-follower": ServiceMode.LEADER_FOLLOWER,
    }
    return ServiceLease(**{**fields, "mode": mode[fields["mode"]]})


@pytest.mark.parametrize("vector", DOCUMENT["vectors"], ids=lambda v: v["type"])
def test_golden_vectors_both_ways(vector: dict[str, Any]) -> None:
    authority = NodeKey.from_seed(bytes.fromhex(DOCUMENT["authority_seed"]))
    assert authority.public_key_bytes.hex() == DOCUMENT["authority_public_key"]
    kind = KINDS[vector["type"]]
    # every signed field is in the vector, so a new field cannot go untested
    assert set(vector["fields"]) == {f.name for f in dataclasses.fields(kind)}
    obj = _from_fields(vector["type"], vector["fields"])
    blob = bytes.fromhex(vector["hex"])
    assert obj.encode_body().hex() == vector["body_hex"]
    assert encode_signed(obj, authority) == blob
    assert object_type_of(blob) == ObjectType(vector["type_tag"])
    assert open_signed(blob, kind, authority.public_key_bytes) == obj  # type: ignore[type-var]


def test_route_lease_vector_carries_the_tenant_right_after_the_hops() -> None:
    (vector,) = [v for v in DOCUMENT["vectors"] if v["type"] == "route_lease"]
    body = bytes.fromhex(vector["body_hex"])
    tenant_at = 16 + 8 + 8 + 1 + 40 * len(vector["fields"]["hops"])
    assert body[tenant_at : tenant_at + 5] == b"\x04acme"
    assert RouteLease.decode_body(body).tenant == vector["fields"]["tenant"] == "acme"


def test_decoder_refuses_a_route_lease_tenant_that_is_not_a_name() -> None:
    lease = route_lease(tenant="acme")
    body = bytearray(lease.encode_body())
    tenant_at = 16 + 8 + 8 + 1 + 40 * len(lease.hops)
    body[tenant_at + 1 : tenant_at + 5] = b"ACME"
    with pytest.raises(ValueError, match="tenant"):
        RouteLease.decode_body(bytes(body))


def test_vector_file_is_current() -> None:
    script = VECTOR_DIR / "make_leases.py"
    done = subprocess.run([sys.executable, str(script), "--check"], check=False)
    assert done.returncode == 0, "tests/vectors/leases.json is stale: rerun make_leases.py"


def test_encoding_is_deterministic_whatever_the_set_order() -> None:
    one = route_lease(allowed_services=frozenset(["ssh", "rdp", "http"]))
    two = route_lease(allowed_services=frozenset(["http", "rdp", "ssh"]))
    assert encode_signed(one, AUTHORITY) == encode_signed(two, AUTHORITY)
    assert encode_signed(one, AUTHORITY) == encode_signed(one, AUTHORITY)


def test_hop_order_matters() -> None:
    forward = route_lease()
    backward = route_lease(hops=tuple(reversed(forward.hops)))
    assert forward.encode_body() != backward.encode_body()


@given(
    roles=st.frozensets(st.sampled_from(list(Role))),
    classes=st.frozensets(st.sampled_from(list(TrafficClass))),
    services=st.frozensets(st.from_regex(r"[a-z0-9][a-z0-9.-]{0,10}", fullmatch=True), max_size=5),
    epoch=st.integers(0, 2**64 - 1),
    hop_count=st.integers(1, 4),
)
def test_roundtrip_property(
    roles: frozenset[Role],
    classes: frozenset[TrafficClass],
    services: frozenset[str],
    epoch: int,
    hop_count: int,
) -> None:
    lease = route_lease(
        allowed_classes=classes,
        allowed_services=services,
        epoch=epoch,
        hops=tuple(n.node_id for n in NODES[:hop_count]),
    )
    assert RouteLease.decode_body(lease.encode_body()) == lease
    record = node_record(roles=roles)
    assert NodeRecord.decode_body(record.encode_body()) == record


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b + b"\x00", "trailing"),
        (lambda b: b[:-1], "truncated"),
    ],
)
def test_decoder_refuses_non_canonical_bodies(mutate: Any, message: str) -> None:
    body = route_lease().encode_body()
    with pytest.raises(MalformedError, match=message):
        RouteLease.decode_body(mutate(body))


def test_decoder_refuses_unsorted_names_and_unknown_bits() -> None:
    body = bytearray(service_lease().encode_body())
    record = bytearray(node_record(organisation_scopes=frozenset({"a", "b"})).encode_body())
    scopes_at = 40 + 32 + 32 + 2 + 1 + len("acme")
    assert record[scopes_at : scopes_at + 5] == b"\x02\x01a\x01b"
    record[scopes_at : scopes_at + 5] = b"\x02\x01b\x01a"
    with pytest.raises(MalformedError, match="ascending"):
        NodeRecord.decode_body(bytes(record))
    roles_at = 40 + 32 + 32
    record = bytearray(node_record().encode_body())
    record[roles_at] = 0x80  # bit 15: no such role
    with pytest.raises(ValueError, match="undefined"):
        NodeRecord.decode_body(bytes(record))
    body[len("admin-console") + 1 + 40] = 9  # no such mode
    with pytest.raises(ValueError):
        ServiceLease.decode_body(bytes(body))


def test_decoder_refuses_upper_case_node_ids() -> None:
    body = bytearray(service_lease().encode_body())
    start = len("admin-console") + 1
    body[start : start + 4] = b"AFN1"
    with pytest.raises(MalformedError, match="canonical"):
        ServiceLease.decode_body(bytes(body))


@pytest.mark.parametrize(
    "build",
    [
        lambda: route_lease(hops=()),
        lambda: route_lease(hops=(NODES[0].node_id, NODES[0].node_id)),
        lambda: route_lease(lease_id=b"short"),
        lambda: route_lease(expires_ms=0),
        lambda: route_lease(epoch=-1),
        lambda: route_lease(allowed_services=frozenset({"Bad Name"})),
        lambda: route_lease(tenant=""),
        lambda: node_record(public_key=NODES[1].public_key_bytes),
        lambda: node_record(trust_tier=4),
        lambda: node_record(tenant=""),
        lambda: service_lease(replica="afn1nope"),
    ],
)
def test_invalid_objects_cannot_be_built(build: Any) -> None:
    with pytest.raises(ValueError):
        build()
