"""A service change seen through another replica's store watch moves its tenant's route
coordinator generation only (ADR 0043): the watched key names the service, and the
replica finds its tenant from the meta, the services it knows, or the node named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import cast

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.vocabulary import ServiceMode
from accessfabric.control.server.plane import ControlConfig, ControlPlane
from accessfabric.control.server.registry import RegisteredNode
from accessfabric.control.server.replication import ReplicaSync, WatchableStore
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.identity.keys import NodeKey
from tests.control.conftest import FakeClock


class Replica:
    """A control plane on the shared store that learns the other's writes from the
    store's change feed, fed through :meth:`ReplicaSync.apply` (what the etcd watch
    delivers), one change at a time."""

    def __init__(self, store: SqliteStore, authority: Authority, clock: FakeClock) -> None:
        self.store = store
        self.plane = ControlPlane(store, authority, config=ControlConfig(), clock=clock)
        self.plane.load()
        self.sync = ReplicaSync(self.plane, cast(WatchableStore, store))
        self.seen = store.revision()

    def keys(self) -> dict[str, object]:
        return {t: self.plane.coordinators.key(t) for t in ("acme", "other")}

    def follow(self) -> list[tuple[str, dict[str, object]]]:
        """Apply every change since the last call; the coordinator keys after each."""
        after = []
        for change in self.store.changes(self.seen):
            self.sync.apply(change)
            self.seen = max(self.seen, change.revision)
            after.append((change.key, self.keys()))
        return after


def _enroll(plane: ControlPlane, tenant: str) -> RegisteredNode:
    token = plane.registry.tokens.create(tenant, ["service-host"], 3600).token
    key = NodeKey.generate()
    return plane.registry.enroll(token, key.public_key_bytes, key.sealing_public_key_bytes)


def test_a_service_change_through_one_replica_moves_only_its_tenants_coordinator(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_800_000_000.0)
    store = SqliteStore(tmp_path / "control.db", clock=clock)
    authority = Authority(NodeKey.generate())
    one = ControlPlane(store, authority, clock=clock)
    one.load()
    a, a2 = _enroll(one, "acme"), _enroll(one, "acme")
    b = _enroll(one, "other")
    one.services.register("bee", b.node_id, b.record.roles, "other", ServiceMode.ACTIVE_ACTIVE)
    two = Replica(store, authority, clock)  # started after "bee": knows it from the store

    def acme_changes(replica: Replica) -> int:
        """The changes it applied; asserts "other"'s key never moved and acme's did."""
        before = replica.keys()
        after = replica.follow()
        assert after, "no change was fed"
        for key, keys in after:
            assert keys["other"] == before["other"], key  # tenant B untouched
        assert after[-1][1]["acme"] != before["acme"]
        return len(after)

    leader_follower = ServiceMode.LEADER_FOLLOWER
    one.services.register("ay", a.node_id, a.record.roles, "acme", leader_follower)
    one.services.register("ay", a2.node_id, a2.record.roles, "acme", leader_follower)
    # meta, two replicas, the epoch CAS and the leader key
    assert acme_changes(two) >= 4
    # a replica started after: knows acme's service from the store's metas (load)
    late = Replica(store, authority, clock)
    one.services.deregister("ay", a.node_id)  # the leader's lease: replica and leader go
    one.services.reconcile("ay")  # a2 takes over: meta CAS, new leader
    assert acme_changes(two) >= 3
    assert acme_changes(late) >= 3
    # a change of tenant B's service moves B's, not A's
    before = two.keys()
    one.services.deregister("bee", b.node_id)
    for key, keys in two.follow():
        assert keys["acme"] == before["acme"], key
    assert two.keys()["other"] != before["other"]
    store.close()


def test_a_replica_key_of_a_service_not_known_here_is_of_its_nodes_tenant(
    tmp_path: Path,
) -> None:
    """A replica key of a service whose meta this replica never saw: the tenant of the
    node it names (a service's replicas are nodes of its tenant); a node not known
    either: every partition's."""
    clock = FakeClock(1_800_000_000.0)
    store = SqliteStore(tmp_path / "control.db", clock=clock)
    authority = Authority(NodeKey.generate())
    one = ControlPlane(store, authority, clock=clock)
    one.load()
    a = _enroll(one, "acme")
    two = Replica(store, authority, clock)
    one.services.register("ay", a.node_id, a.record.roles, "acme", ServiceMode.ACTIVE_ACTIVE)
    replica_put = [c for c in store.changes(two.seen) if "/replicas/" in c.key]
    assert len(replica_put) == 1
    before = two.keys()
    two.sync.apply(replica_put[0])
    assert two.keys()["other"] == before["other"]
    assert two.keys()["acme"] != before["acme"]
    stranger = replace(replica_put[0], key="/services/zed/replicas/" + "0" * 52)
    two.sync.apply(stranger)
    assert two.keys()["other"] != before["other"]  # unknown: counts for every partition
    store.close()
