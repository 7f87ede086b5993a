"""EtcdStore on a real 3-member etcd cluster: what the shared conformance tests cannot show.

Leases expire in real time here (etcd's clock, whole seconds, 1 s minimum with the
cluster's 500 ms election timeout), the watch is etcd's own stream, and a cluster without
quorum makes every call fail with ``StoreUnavailableError`` instead of answering stale.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from accessfabric.control.server.store import (
    Change,
    ChangeKind,
    CompactedError,
    LeaseNotFoundError,
    StoreUnavailableError,
)
from accessfabric.control.server.store.aio import AsyncStore
from accessfabric.control.server.store.etcd import EtcdStore, parse_store_url
from accessfabric.control.server.store.etcd_cluster import LocalEtcdCluster
from tests.control.test_store_watch import assert_watched_in_order


def _wait_until_gone(store: EtcdStore, key: str, limit: float) -> float:
    start = time.monotonic()
    while store.get(key) is not None:
        assert time.monotonic() - start < limit, f"{key} outlived its lease by far"
        time.sleep(0.05)
    return time.monotonic() - start


def test_lease_expiry_deletes_every_key_in_one_revision(etcd_store: EtcdStore) -> None:
    lease = etcd_store.grant_lease(1)
    etcd_store.put("/svc/a", b"1", lease=lease)
    etcd_store.put("/svc/b", b"2", lease=lease)
    etcd_store.put("/svc/c", b"3")
    entry = etcd_store.get("/svc/a")
    assert entry is not None and entry.lease_id == lease
    before = etcd_store.revision()
    _wait_until_gone(etcd_store, "/svc/a", 5.0)
    assert [e.key for e in etcd_store.range("/svc/").entries] == ["/svc/c"]
    deletes = etcd_store.changes(before, "/svc/")
    assert [(c.kind, c.key) for c in deletes] == [
        (ChangeKind.DELETE, "/svc/a"),
        (ChangeKind.DELETE, "/svc/b"),
    ]
    assert deletes[0].revision == deletes[1].revision
    with pytest.raises(LeaseNotFoundError):
        etcd_store.keepalive(lease)
    with pytest.raises(LeaseNotFoundError):
        etcd_store.put("/svc/d", b"4", lease=lease)
    with pytest.raises(LeaseNotFoundError):
        etcd_store.time_to_live(lease)


def test_keepalive_keeps_keys_past_their_ttl(etcd_store: EtcdStore) -> None:
    lease = etcd_store.grant_lease(1)
    etcd_store.put("k", b"v", lease=lease)
    detached_lease = etcd_store.grant_lease(1)
    etcd_store.put("detached", b"v", lease=detached_lease)
    etcd_store.put("detached", b"w")  # a put without a lease detaches, as in etcd
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert etcd_store.keepalive(lease) >= 1
        time.sleep(0.3)
    assert etcd_store.get("k") is not None
    detached = etcd_store.get("detached")
    assert detached is not None and detached.lease_id is None
    waited = _wait_until_gone(etcd_store, "k", 5.0)
    assert waited >= 0.5  # it lived a TTL after the last keepalive


def test_native_watch_streams_puts_deletes_and_expiry(etcd_store: EtcdStore) -> None:
    async def scenario() -> list[Change]:
        astore = AsyncStore(etcd_store, offload=True)
        start = await astore.revision()
        seen: list[Change] = []

        async def collect() -> None:
            async for change in astore.watch("/w/", start):
                seen.append(change)
                if len(seen) == 5:
                    return

        task = asyncio.create_task(collect())
        lease = await astore.grant_lease(1)
        await astore.put("/w/a", b"1")
        await astore.put("/other", b"ignored")
        await astore.put("/w/b", b"2", lease=lease)
        await astore.delete("/w/a")
        await astore.put("/w/a", b"3")
        await asyncio.wait_for(task, 10)
        return seen

    seen = asyncio.run(scenario())
    assert_watched_in_order(seen)


def test_native_watch_from_compacted_revision_raises(etcd_store: EtcdStore) -> None:
    base = etcd_store.revision()
    for i in range(4):
        etcd_store.put(f"/c/{i}", b"v")
    etcd_store.compact(base + 3)

    async def scenario() -> None:
        async for _ in etcd_store.watch("/c/", base + 1):
            pass

    with pytest.raises(CompactedError) as caught:
        asyncio.run(asyncio.wait_for(scenario(), 10))
    assert caught.value.compact_revision == base + 3


def test_changed_between_sees_only_puts_under_the_prefix_in_the_range(
    etcd_store: EtcdStore, etcd_cluster: LocalEtcdCluster
) -> None:
    """What a replica asks when its watch lags the quorum revision (ADR 0061): writes
    elsewhere in etcd move the revision without changing anything it watches."""
    other = EtcdStore(etcd_cluster.endpoints, namespace=etcd_store.namespace + "-other")
    try:
        base = etcd_store.put("/w/a", b"1")
        elsewhere = other.put("/w/a", b"1")  # same key, outside the namespace
        assert elsewhere > base
        assert not etcd_store.changed_between("/", base, elsewhere)
        first = etcd_store.put("/w/b", b"1")
        second = etcd_store.put("/w/c", b"1")
        assert etcd_store.changed_between("/", base, second)
        assert etcd_store.changed_between("/", first, second)  # one key, not the first
        assert not etcd_store.changed_between("/", second, etcd_store.revision())
        assert not etcd_store.changed_between("/x/", base, second)
    finally:
        other.close()


def test_store_url_is_parsed_with_clear_errors() -> None:
    assert parse_store_url("etcd://h1:2379,h2:2379") == (["h1:2379", "h2:2379"], "/accessfabric")
    assert parse_store_url("etcd://127.0.0.1:2379/fleet/a/") == (["127.0.0.1:2379"], "/fleet/a")
    for bad in ("http://h:2379", "etcd://", "etcd://h1", "etcd://h1:99999"):
        with pytest.raises(ValueError):
            parse_store_url(bad)


def test_no_quorum_means_unavailable_never_stale(
    etcd_cluster: LocalEtcdCluster, etcd_store: EtcdStore
) -> None:
    etcd_store.put("k", b"v")
    survivor = etcd_cluster.members[0]
    lonely = EtcdStore([survivor.endpoint], namespace=etcd_store.namespace, timeout=1.0)
    try:
        for member in etcd_cluster.members[1:]:
            etcd_cluster.kill(member)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            lonely.get("k")  # a linearizable read needs a quorum
        with pytest.raises(StoreUnavailableError):
            lonely.put_if("k", b"w", 0)
        assert time.monotonic() - started < 5.0
    finally:
        lonely.close()
        for member in etcd_cluster.members[1:]:
            etcd_cluster.restart(member)
        etcd_cluster.wait_all_ready()
    entry = etcd_store.get("k")
    assert entry is not None and entry.value == b"v"
