"""``watch`` and ``AsyncStore``: puts and deletes arrive in revision order; compaction errors."""

from __future__ import annotations

import asyncio

import pytest

from accessfabric.control.server.store import Change, ChangeKind, CompactedError, SqliteStore
from accessfabric.control.server.store.aio import AsyncStore, watch
from tests.control.conftest import FakeClock


async def _collect(store: SqliteStore, prefix: str, since: int, count: int) -> list[Change]:
    seen: list[Change] = []
    async for change in watch(store, prefix, since, poll_interval=0.001):
        seen.append(change)
        if len(seen) == count:
            break
    return seen


def assert_watched_in_order(seen: list[Change]) -> None:
    """What the watch scenario (put /w/a, /other, /w/b with a lease; delete and put /w/a
    again; the lease expires) delivers under /w/, on every store: in order, revisions up."""
    assert [(c.kind, c.key, c.value) for c in seen] == [
        (ChangeKind.PUT, "/w/a", b"1"),
        (ChangeKind.PUT, "/w/b", b"2"),
        (ChangeKind.DELETE, "/w/a", b""),
        (ChangeKind.PUT, "/w/a", b"3"),
        (ChangeKind.DELETE, "/w/b", b""),
    ]
    revisions = [c.revision for c in seen]
    assert revisions == sorted(revisions)


def test_watch_delivers_puts_and_deletes_in_order(store: SqliteStore, clock: FakeClock) -> None:
    async def scenario() -> list[Change]:
        start = store.revision()
        task = asyncio.create_task(_collect(store, "/w/", start, 5))
        await asyncio.sleep(0.01)
        lease = store.grant_lease(5)
        store.put("/w/a", b"1")
        store.put("/other", b"ignored")
        store.put("/w/b", b"2", lease=lease)
        await asyncio.sleep(0.005)
        store.delete("/w/a")
        store.put("/w/a", b"3")
        clock.advance(6)
        store.get("/w/b")  # any call applies the expiry
        return await asyncio.wait_for(task, 5)

    seen = asyncio.run(scenario())
    assert_watched_in_order(seen)


def test_watch_replays_history_from_since(store: SqliteStore) -> None:
    start = store.revision()
    store.put("/h/1", b"a")
    store.put("/h/2", b"b")
    seen = asyncio.run(_collect(store, "/h/", start, 2))
    assert [c.key for c in seen] == ["/h/1", "/h/2"]


def test_watch_from_compacted_revision_raises(store: SqliteStore) -> None:
    for i in range(5):
        store.put(f"/c/{i}", b"v")
    store.compact(4)
    with pytest.raises(CompactedError):
        asyncio.run(_collect(store, "/c/", 2, 1))


def test_idle_watcher_survives_unrelated_compaction(store: SqliteStore) -> None:
    async def scenario() -> list[Change]:
        task = asyncio.create_task(_collect(store, "/quiet/", store.revision(), 1))
        await asyncio.sleep(0.01)
        for i in range(20):
            store.put(f"/busy/{i}", b"v")
        await asyncio.sleep(0.01)  # the watcher polls: nothing for it, but it moves on
        store.compact(store.revision())
        await asyncio.sleep(0.01)
        store.put("/quiet/x", b"1")
        return await asyncio.wait_for(task, 5)

    assert [c.key for c in asyncio.run(scenario())] == ["/quiet/x"]


@pytest.mark.parametrize("offload", [False, True])
def test_async_store_wraps_every_call(store: SqliteStore, offload: bool) -> None:
    async def scenario() -> None:
        astore = AsyncStore(store, offload=offload, poll_interval=0.001)
        start = await astore.revision()
        lease = await astore.grant_lease(30)
        revision = await astore.put("/x/k", b"v", lease=lease)
        entry = await astore.get("/x/k")
        assert entry is not None and entry.mod_revision == revision
        assert (await astore.put_if("/x/k", b"w", revision)).succeeded
        assert await astore.keepalive(lease) == 30
        assert await astore.time_to_live(lease) == 30
        assert len((await astore.range("/x/")).entries) == 1
        assert (await astore.delete_if("/x/k", revision)).succeeded is False
        assert await astore.delete("/x/k") is not None
        assert await astore.revoke(lease) is None
        changes = await astore.changes(start, "/x/")
        assert [c.kind for c in changes] == [ChangeKind.PUT, ChangeKind.PUT, ChangeKind.DELETE]
        seen = []
        async for change in astore.watch("/x/", start):
            seen.append(change)
            if len(seen) == 3:
                break
        assert seen == changes

    asyncio.run(scenario())
