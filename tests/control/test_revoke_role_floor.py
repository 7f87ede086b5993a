"""``revoke-role``: the record floor survives a failed store write, and a tenant with more
recent revocations than one policy has per-node floors for still revokes (issue 14 review)."""

from __future__ import annotations

from pathlib import Path

import pytest

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.verify import verify_access_policy
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.control.server.plane import ControlPlane
from accessfabric.control.server.registry import RegisteredNode
from accessfabric.control.server.store.base import StoreUnavailableError, TxnResult
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.identity.keys import NodeKey
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
