"""A service change seen through another replica's store watch moves its tenant's route
coordinator generation only (ADR 0043): the watched key names the service, and the
replica finds its tenant from the meta, the services it knows, or the node named."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import cast

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.vocabulary import ServiceMode
from accessfabric.control.server.plane import ControlConfig, ControlPlane
from accessfabric.control.server.registry import RegisteredNode
from accessfabric.control.server.replication import ReplicaSync, WatchableStore
from accessfabric.control.server.store.etcd_cluster import LocalEtcdCluster
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.identity.keys import NodeKey
from tests.conditions import until
from tests.control.api_harness import Running, enroll_body
from tests.control.conftest import FakeClock
from tests.control.replica_harness import running_replicas
from tests.etcd_cluster import restart_dead_members, revoke_all_leases, unique_namespace


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


def test_through_etcd_a_service_change_on_replica_one_leaves_other_tenants_on_replica_two(
    etcd_cluster: LocalEtcdCluster,
) -> None:
    """Two replicas on the real etcd cluster: tenant acme's service registered, led and
    left through replica A; replica B follows through its watch, and tenant other's
    coordinator generations there never move."""
    restart_dead_members(etcd_cluster)
    endpoints = etcd_cluster.endpoints

    async def enroll(cp: Running, tenant: str) -> RegisteredNode:
        key = NodeKey.generate()
        token = await cp.token(tenant, ["service-host"])
        status, reply = await cp.signed(key, "POST", "/v1/enroll", enroll_body(key, token))
        assert status == 200, reply
        node = cp.plane.registry.get(key.node_id)
        assert node is not None
        return node

    async def main() -> None:
        async with running_replicas([endpoints, endpoints[::-1]], unique_namespace()) as (a, b):
            nodes = [await enroll(a, "acme"), await enroll(a, "acme"), await enroll(a, "other")]

            async def b_follows() -> None:
                """Until B applied every write of A so far (a marker written last)."""
                marker = a.plane.store.put("/test-marker", b"")

                def caught_up() -> bool:
                    return b.plane.sync is not None and b.plane.sync.since >= marker

                await until(caught_up, timeout=5.0, what="replica B follows A's writes")

            await b_follows()
            assert all(b.plane.registry.get(n.node_id) is not None for n in nodes)
            other_before = b.plane.coordinators.key("other")
            acme_before = b.plane.coordinators.key("acme")
            mode = ServiceMode.LEADER_FOLLOWER
            for node in nodes[:2]:
                a.plane.services.register("ay", node.node_id, node.record.roles, "acme", mode)
            a.plane.services.deregister("ay", nodes[0].node_id)  # the leader leaves
            await b_follows()
            assert b.plane.coordinators.key("acme") != acme_before
            assert b.plane.coordinators.key("other") == other_before

    try:
        asyncio.run(main())
    finally:
        revoke_all_leases(etcd_cluster.endpoints)
