"""``revoke-role``: the record floor survives a failed store write, and a tenant with more
recent revocations than one policy has per-node floors for still revokes (issue 14 review)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.codec import MalformedError
from accessfabric.control.kernel.objects import MAX_RECORD_FLOORS, AccessPolicy
from accessfabric.control.kernel.verify import verify_access_policy
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.control.server.plane import ControlPlane
from accessfabric.control.server.registry import RegisteredNode
from accessfabric.control.server.store.base import StoreUnavailableError, TxnResult
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.identity.keys import NodeKey
from accessfabric.node.serving.access import ServiceAccess
from accessfabric.wire.registry import TrafficClass
from tests.control.conftest import FakeClock


class FlakyStore(SqliteStore):
    """A real SQLite store whose next write to a key under ``fail_prefix`` times out once."""

    fail_prefix: str | None = None

    def _maybe_fail(self, keys: list[str]) -> None:
        prefix = self.fail_prefix
        if prefix is not None and any(key.startswith(prefix) for key in keys):
            self.fail_prefix = None
            raise StoreUnavailableError("etcd request timed out (injected)")

    def put_many(self, items: list[tuple[str, bytes]]) -> int:
        self._maybe_fail([key for key, _ in items])
        return super().put_many(items)

    def put_if(
        self, key: str, value: bytes, expected_mod_revision: int, *, lease: int | None = None
    ) -> TxnResult:
        self._maybe_fail([key])
        return super().put_if(key, value, expected_mod_revision, lease=lease)


def _plane(tmp_path: Path) -> tuple[ControlPlane, FlakyStore, FakeClock]:
    clock = FakeClock(1_800_000_000.0)
    store = FlakyStore(tmp_path / "control.db", clock=clock)
    return ControlPlane(store, Authority(NodeKey.generate()), clock=clock), store, clock


def _enroll(plane: ControlPlane, tenant: str = "acme") -> RegisteredNode:
    token = plane.registry.tokens.create(tenant, ["entry", "relay"], 3600).token
    key = NodeKey.generate()
    return plane.registry.enroll(token, key.public_key_bytes, key.sealing_public_key_bytes)


def _floor(plane: ControlPlane, host: RegisteredNode, node: RegisteredNode) -> int:
    blob = plane.grants.policy_for(host.node_id, host.record.tenant)
    policy = verify_access_policy(
        blob, plane.authority.public_key, plane.clock(), host=host.node_id
    )
    return policy.floor_of(node.node_id)


@pytest.mark.parametrize("failing", ["/record-floors/", "/nodes/"])
def test_a_revocation_whose_second_write_fails_is_finished_by_a_retry(
    tmp_path: Path, failing: str
) -> None:
    plane, store, _ = _plane(tmp_path)
    host, node = _enroll(plane), _enroll(plane)
    store.fail_prefix = failing
    with pytest.raises(StoreUnavailableError):
        plane.revoke_role(node.node_id, Role.ENTRY)  # the operator gets a 500
    revoked = plane.revoke_role(node.node_id, Role.ENTRY)  # and retries: not role_not_held
    assert Role.ENTRY not in revoked.record.roles
    assert revoked.record.revision == node.record.revision + 1
    assert _floor(plane, host, node) == revoked.record.revision  # the old record is refused


def test_revocations_past_the_per_node_floors_go_on_and_are_enforced(tmp_path: Path) -> None:
    """The 129th recent revocation of a tenant merges its oldest floor into a tenant floor:
    it succeeds (it was 409 ``too_many_grants``), every revoked node's old record is still
    refused, and honest nodes are re-issued a record the hosts believe."""
    plane, _, clock = _plane(tmp_path)
    host = _enroll(plane)
    honest = _enroll(plane)  # its record predates every revocation
    plane.grants.create("acme", ["web"])  # any role of the tenant: only floors refuse
    revoked: list[tuple[RegisteredNode, RegisteredNode]] = []  # (old record, new record)
    for _ in range(MAX_RECORD_FLOORS + 1):
        clock.advance(60)
        node = _enroll(plane)
        clock.advance(60)
        revoked.append((node, plane.revoke_role(node.node_id, Role.ENTRY)))
    policy_blob = plane.grants.policy_for(host.node_id, "acme")
    policy = verify_access_policy(
        policy_blob, plane.authority.public_key, clock(), host=host.node_id
    )
    assert len(policy.record_floors) == MAX_RECORD_FLOORS
    assert policy.tenant_floor_ms == revoked[0][0].record.issued_ms + 1  # the oldest, merged

    def refusal(node: RegisteredNode) -> str | None:
        access = ServiceAccess(host.node_id, {}, plane.authority.public_key, clock=clock)
        access.take_policy(policy_blob)
        assert access.learn_record(node.blob, node.node_id) is not None
        return access.refusal(node.node_id, "web", TrafficClass.INTERACTIVE)

    for old, new in revoked:
        assert refusal(old) is not None, old.node_id
        assert refusal(new) is None, new.node_id
    assert refusal(honest) is not None  # its record predates the tenant floor ...
    reissued = plane.registry.get(honest.node_id)
    assert reissued is not None and reissued.record.revision == honest.record.revision + 1
    assert refusal(reissued) is None  # ... and it was re-issued one before the floor rose
    assert refusal(plane.registry.get(host.node_id) or host) is None


def test_the_tenant_floor_is_optional_and_last_in_the_policy_body(tmp_path: Path) -> None:
    plane, _, _ = _plane(tmp_path)
    host = _enroll(plane)
    blob = plane.grants.policy_for(host.node_id, "acme")
    policy = verify_access_policy(
        blob, plane.authority.public_key, plane.clock(), host=host.node_id
    )
    assert policy.tenant_floor_ms == 0  # absent: a policy reads as before the field
    assert AccessPolicy.decode_body(policy.encode_body()) == policy
    with pytest.raises(MalformedError):  # 0 is written as no field, never as zeros
        AccessPolicy.decode_body(policy.encode_body() + bytes(8))
    floored = dataclasses.replace(policy, tenant_floor_ms=5)
    assert floored.encode_body() == policy.encode_body() + (5).to_bytes(8, "big")
    assert AccessPolicy.decode_body(floored.encode_body()) == floored
