"""A watch stream that goes silent is a broken stream (real 3-member etcd on loopback).

After the etcd leader's SIGKILL, one control replica's watch on that member was seen to
deliver nothing and never fail: its quorum reads went to the other members and
succeeded, so it never noticed, and its caches stopped following the store (another
replica's heartbeat digests of the relay no longer arrived: leases refused ``no_route``
from 4.2 s after the kill on).  A member stopped with SIGSTOP makes the same silence on
purpose: the watch must raise within two progress windows, and the next request start at
another endpoint.  A healthy idle watch must not raise (etcd answers its progress
requests).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import pytest

from accessfabric.control.server.store import StoreUnavailableError
from accessfabric.control.server.store.etcd import EtcdStore
from accessfabric.control.server.store.etcd_cluster import EtcdMember, LocalEtcdCluster
from tests.etcd_cluster import restart_dead_members, revoke_all_leases, unique_namespace

PROGRESS_AFTER = 0.5


@pytest.fixture
def first_member_store(etcd_cluster: LocalEtcdCluster) -> Iterator[tuple[EtcdStore, EtcdMember]]:
    """A store whose first endpoint (where its watch goes) is the cluster's first member."""
    restart_dead_members(etcd_cluster)
    store = EtcdStore(etcd_cluster.endpoints, namespace=unique_namespace())
    try:
        yield store, etcd_cluster.members[0]
    finally:
        store.close()
        revoke_all_leases(etcd_cluster.endpoints)


def test_a_watch_on_a_member_that_answers_nothing_raises(
    first_member_store: tuple[EtcdStore, EtcdMember], etcd_cluster: LocalEtcdCluster
) -> None:
    store, member = first_member_store
    assert store.current_endpoint == member.endpoint
    start = store.revision()
    process = member.process
    assert process is not None

    async def main() -> float:
        seen: list[str] = []

        async def follow() -> None:
            async for change in store.watch("/s/", start, progress_after=PROGRESS_AFTER):
                seen.append(change.key)

        task = asyncio.create_task(follow())
        await asyncio.to_thread(store.put, "/s/a", b"1")
        deadline = time.monotonic() + 5.0
        while not seen:  # the stream is up and delivering
            assert time.monotonic() < deadline, "the watch delivered nothing"
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGSTOP)  # its TCP stays open: nothing ends the stream
        stopped = time.monotonic()
        try:
            with pytest.raises(StoreUnavailableError, match="silent"):
                await asyncio.wait_for(task, 10.0)
            return time.monotonic() - stopped
        finally:
            process.send_signal(signal.SIGCONT)

    took = asyncio.run(main())
    # two progress windows (0.5 s each) and the loaded machine's slack
    assert took < 2 * PROGRESS_AFTER + 1.5, took
    assert store.current_endpoint != member.endpoint  # the next request goes elsewhere
    etcd_cluster.wait_healthy(timeout=15.0)


def test_a_healthy_idle_watch_stays_open(first_member_store: tuple[EtcdStore, EtcdMember]) -> None:
    store, _ = first_member_store
    start = store.revision()

    async def main() -> list[str]:
        seen: list[str] = []

        async def follow() -> None:
            async for change in store.watch("/i/", start, progress_after=PROGRESS_AFTER):
                seen.append(change.key)

        task = asyncio.create_task(follow())
        await asyncio.sleep(8 * PROGRESS_AFTER)  # idle: only progress requests on the stream
        await asyncio.to_thread(store.put, "/i/a", b"1")
        deadline = time.monotonic() + 5.0
        while not seen:
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "the change never came"
            await asyncio.sleep(0.02)
        assert not task.done()
        task.cancel()
        return seen

    assert asyncio.run(main()) == ["/i/a"]
