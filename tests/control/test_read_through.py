"""A replica admits a node its watch has not delivered yet by one bounded store read (ADR 0042).

Two replicas on the session's real etcd cluster.  Replica B's watch is held (its store's
``watch`` stream waits on a gate), so B can learn an enrollment through A only by the
read-through; then an outsider's random node ids cost at most one store read per id per
TTL, at most ``max_misses`` per TTL, and at most ``max_in_flight`` at once.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from accessfabric.control.client.requestsig import RequestSigner
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.server.read_through import NodeReadThrough
from accessfabric.control.server.registry import KEY_PREFIX, NodeRegistry
from accessfabric.control.server.store.base import Change, Entry
from accessfabric.control.server.store.etcd import EtcdStore
from accessfabric.control.server.store.etcd_cluster import LocalEtcdCluster
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.node_id import node_id_from_public_key
from tests.conditions import until
from tests.control.api_harness import Running
from tests.control.replica_harness import running_replicas
from tests.control.test_replicas_etcd import _enroll, _mac_heartbeat
from tests.etcd_cluster import restart_dead_members, revoke_all_leases, unique_namespace

HEARTBEAT = "/v1/heartbeat"


def _hold_watch(store: EtcdStore, gate: asyncio.Event) -> None:
    """Changes of ``store``'s watch reach the replica only once ``gate`` is set."""
    watch = store.watch

    async def held(prefix: str, since: int) -> AsyncIterator[Change]:
        async for change in watch(prefix, since):
            await gate.wait()
            yield change

    setattr(store, "watch", held)  # noqa: B010 - the replica calls store.watch


class _CountedReads:
    """Wraps ``store.get``: counts reads of node records, the most at once, and can hold
    them (``hold``) until released."""

    def __init__(self, store: EtcdStore) -> None:
        self.reads = 0
        self.concurrent = 0
        self.most_concurrent = 0
        self.release = threading.Event()
        self.release.set()
        self._lock = threading.Lock()
        get = store.get

        def counted(key: str) -> Entry | None:
            if not key.startswith(KEY_PREFIX):
                return get(key)
            with self._lock:
                self.reads += 1
                self.concurrent += 1
                self.most_concurrent = max(self.most_concurrent, self.concurrent)
            try:
                assert self.release.wait(30), "held read never released"
                return get(key)
            finally:
                with self._lock:
                    self.concurrent -= 1

        setattr(store, "get", counted)  # noqa: B010


def _stranger() -> str:
    """A well-formed node id nobody enrolled."""
    return node_id_from_public_key(os.urandom(32))


async def _heartbeat_as(replica: Running, node_id: str) -> tuple[int, Any]:
    """A heartbeat naming ``node_id`` with a made-up signature (an outsider's request)."""
    signer = RequestSigner(NodeKey.generate(), clock=replica.plane.clock)
    headers = signer.headers("POST", HEARTBEAT, b"{}")
    headers["AF-Node"] = node_id
    async with replica.http.post(replica.url + HEARTBEAT, data=b"{}", headers=headers) as reply:
        return reply.status, await reply.json()


def test_heartbeat_through_the_other_replica_before_its_watch_delivers_is_accepted(
    etcd_cluster: LocalEtcdCluster,
) -> None:
    restart_dead_members(etcd_cluster)
    endpoints = etcd_cluster.endpoints

    async def main() -> None:
        gate = asyncio.Event()

        def hold_b(index: int, store: EtcdStore) -> None:
            if index == 1:
                _hold_watch(store, gate)

        async with running_replicas(
            [endpoints, endpoints[::-1]], unique_namespace(), before_start=hold_b
        ) as (a, b):
            key, control, revision = await _enroll(a, ["relay"])
            assert b.plane.registry.get(key.node_id) is None  # B's watch is held
            reads = b.plane.node_reads
            assert reads is not None
            signer = RequestSigner(key)
            status, reply = await _mac_heartbeat(b, signer, key, control, revision)
            assert status == 200, reply
            assert (reads.reads, reads.admitted) == (1, 1)  # the read-through answered
            node = b.plane.registry.get(key.node_id)
            assert node is not None and node.record.revision == revision
            status, reply = await b.signed(key, "GET", "/v1/directory")
            assert status == 200, reply
            assert reads.reads == 1  # admitted: no second read
            gate.set()  # the watch delivers the enrollment: nothing changes
            await until(lambda: b.plane.sync is not None and b.plane.sync.applied > 0)
            assert b.plane.registry.get(key.node_id) == node

    try:
        asyncio.run(main())
    finally:
        revoke_all_leases(etcd_cluster.endpoints)


def test_random_unknown_node_ids_cost_bounded_store_reads(etcd_cluster: LocalEtcdCluster) -> None:
    restart_dead_members(etcd_cluster)
    endpoints = etcd_cluster.endpoints
    counted: list[_CountedReads] = []

    def count(index: int, store: EtcdStore) -> None:
        counted.append(_CountedReads(store))

    async def main() -> None:
        async with running_replicas([endpoints], unique_namespace(), before_start=count) as (b,):
            reads = b.plane.node_reads
            assert reads is not None
            store = counted[0]
            now = [1000.0]
            reads.clock = lambda: now[0]
            reads.max_misses = 150

            async def refused(ids: list[str]) -> None:
                for node_id in ids:  # one after the other: the in-flight bound is not hit
                    status, reply = await _heartbeat_as(b, node_id)
                    assert (status, reply["error"]["code"]) == (401, "unknown_node"), reply

            first = [_stranger() for _ in range(100)]
            await refused(first)
            assert store.reads == reads.reads == 100  # one read per id
            await refused(first)
            assert store.reads == 100 and reads.cached == 100  # within the TTL: none
            await refused([_stranger() for _ in range(100)])
            assert store.reads == 150 and reads.refused == 50  # the cache is full: no read
            now[0] += reads.ttl
            await refused(first)
            assert store.reads == 250  # after the TTL, one read per id again

            # at most max_in_flight reads at once; a miss beyond is refused without a read
            reads.max_in_flight = 2
            store.release.clear()
            before_refused, before_reads = reads.refused, store.reads
            try:
                replies = asyncio.gather(*(_heartbeat_as(b, _stranger()) for _ in range(20)))
                await until(lambda: reads.refused - before_refused == 18, 20, "18 refused")
                # the two admitted reads wait on threads (their thread may start later)
                await until(lambda: store.concurrent == 2, 20, "two reads held")
            finally:
                store.release.set()
            for status, reply in await replies:
                assert (status, reply["error"]["code"]) == (401, "unknown_node"), reply
            assert store.reads - before_reads == 2 and store.most_concurrent == 2

            async with b.http.get(b.url + "/metrics") as response:
                text = await response.text()
            counted_outcomes = {
                line.split('"')[1]: float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("accessfabric_control_node_read_through_total{")
            }
            assert counted_outcomes == {
                "admitted": 0, "not_found": 252, "failed": 0, "cached": 100, "refused": 50 + 18,
            }  # fmt: skip

    try:
        asyncio.run(main())
    finally:
        revoke_all_leases(etcd_cluster.endpoints)


def test_a_record_the_watch_passed_and_dropped_is_not_admitted(tmp_path: Any) -> None:
    """Read, then the watch applies a removal of the node before the read returns: the
    read's (older) record must not come back into the registry."""
    authority = Authority(NodeKey.generate())
    with SqliteStore(tmp_path / "control.db", clock=time.time) as store:
        writer = NodeRegistry(store, authority)
        token = writer.tokens.create("acme", ["relay"], ttl=3600).token
        key = NodeKey.generate()
        writer.enroll(token, key.public_key_bytes, key.sealing_public_key_bytes)
        stored = store.get(KEY_PREFIX + key.node_id)
        assert stored is not None
        registry = NodeRegistry(store, authority)  # the replica that has not learned it
        watched = [stored.mod_revision - 1]
        lookup = _read_through(store, registry, lambda: watched[0])
        assert asyncio.run(lookup(key.node_id)) is not None  # the watch is behind: admitted

        registry = NodeRegistry(store, authority)
        watched = [stored.mod_revision + 1]  # the watch passed it (a delete came after)
        lookup = _read_through(store, registry, lambda: watched[0])
        assert asyncio.run(lookup(key.node_id)) is None
        assert registry.get(key.node_id) is None


def _read_through(
    store: SqliteStore, registry: NodeRegistry, watched: Callable[[], int]
) -> Callable[[str], Any]:
    reads = NodeReadThrough(store, registry, watched_revision=watched, offload=False)
    return reads.lookup


def test_a_cancelled_caller_does_not_cancel_the_read_others_wait_for(tmp_path: Any) -> None:
    """Two requests name the same unknown node and share one read; the first is cancelled
    (its request's deadline) while the read is held: the second still gets its answer, and
    the in-flight slot stays taken until the read is really over."""
    authority = Authority(NodeKey.generate())

    async def scenario(store: SqliteStore) -> None:
        release = threading.Event()
        get = store.get

        def held_get(key: str) -> Entry | None:
            assert release.wait(10), "held read never released"
            return get(key)

        setattr(store, "get", held_get)  # noqa: B010
        reads = NodeReadThrough(
            store, NodeRegistry(store, authority), watched_revision=lambda: 0, offload=True
        )
        stranger = _stranger()
        first = asyncio.create_task(reads.lookup(stranger))
        second = asyncio.create_task(reads.lookup(stranger))
        await until(lambda: reads.reads == 1)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        assert first.cancelled()
        assert len(reads._in_flight) == 1  # the read goes on
        release.set()
        assert await asyncio.wait_for(second, 5) is None
        assert (reads.reads, reads.not_found, reads.failed) == (1, 1, 0)
        assert not reads._in_flight

    with SqliteStore(tmp_path / "control.db", clock=time.time) as store:
        asyncio.run(scenario(store))
