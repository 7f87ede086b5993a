"""asyncio access to a :class:`Store`: ``AsyncStore`` and ``watch`` (polls the changes feed).

This is the only asyncio module of the store.  :class:`AsyncStore` calls the synchronous
store directly on the event loop by default: a SQLite call on local disk takes tens of
microseconds, less than handing it to a thread (measured in ``docs/control.md``).  Pass
``offload=True`` for a backend whose calls wait on the network (an etcd client that is
not natively async) so they run in the default executor instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from accessfabric.control.server.store.base import Change, Entry, RangeResult, Store, TxnResult

DEFAULT_POLL_INTERVAL = 0.05
"""Seconds between polls of the changes feed while a watch is idle."""

_T = TypeVar("_T")


async def watch(
    store: Store,
    prefix: str,
    since: int,
    *,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    offload: bool = False,
) -> AsyncIterator[Change]:
    """Yield every change under ``prefix`` after revision ``since``, in revision order, forever.

    Raises :class:`~accessfabric.control.server.store.base.CompactedError` if the watcher falls
    behind the retained history (at the start or later): list the prefix again and watch
    from the revision of that listing.  Stop by breaking out of the loop or cancelling.
    """
    if poll_interval <= 0:
        raise ValueError("poll_interval must be positive")
    last = since
    while True:
        # Read the revision first: every change up to it is in the batch read after it, so
        # the watcher may move past it even when nothing under the prefix changed (later
        # polls then scan only newer changes, and compaction of unrelated history does not
        # strand an idle watcher).
        revision = await _call(offload, store.revision)
        batch = await _call(offload, store.changes, last, prefix)
        for change in batch:
            yield change
        last = max(last, revision, batch[-1].revision if batch else 0)
        if not batch:
            await asyncio.sleep(poll_interval)


async def _call(offload: bool, function: Callable[..., _T], *args: object) -> _T:
    if offload:
        return await asyncio.to_thread(function, *args)
    return function(*args)


class AsyncStore:
    """The :class:`Store` calls as coroutines, plus :meth:`watch`."""

    def __init__(
        self,
        store: Store,
        *,
        offload: bool = False,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.store = store
        self.offload = offload
        self.poll_interval = poll_interval

    async def revision(self) -> int:
        return await _call(self.offload, self.store.revision)

    async def get(self, key: str) -> Entry | None:
        return await _call(self.offload, self.store.get, key)

    async def range(self, prefix: str) -> RangeResult:
        return await _call(self.offload, self.store.range, prefix)

    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        return await _call(self.offload, lambda: self.store.put(key, value, lease=lease))

    async def put_if(
        self, key: str, value: bytes, expected_mod_revision: int, *, lease: int | None = None
    ) -> TxnResult:
        return await _call(
            self.offload,
            lambda: self.store.put_if(key, value, expected_mod_revision, lease=lease),
        )

    async def delete(self, key: str) -> int | None:
        return await _call(self.offload, self.store.delete, key)

    async def delete_if(self, key: str, expected_mod_revision: int) -> TxnResult:
        return await _call(self.offload, self.store.delete_if, key, expected_mod_revision)

    async def grant_lease(self, ttl: float) -> int:
        return await _call(self.offload, self.store.grant_lease, ttl)

    async def keepalive(self, lease_id: int) -> float:
        return await _call(self.offload, self.store.keepalive, lease_id)

    async def time_to_live(self, lease_id: int) -> float:
        return await _call(self.offload, self.store.time_to_live, lease_id)

    async def revoke(self, lease_id: int) -> int | None:
        return await _call(self.offload, self.store.revoke, lease_id)

    async def changes(self, since_revision: int, prefix: str = "") -> list[Change]:
        return await _call(self.offload, self.store.changes, since_revision, prefix)

    def watch(self, prefix: str, since: int) -> AsyncIterator[Change]:
        """See :func:`watch`; a store with its own ``watch`` stream (etcd) uses that."""
        native = getattr(self.store, "watch", None)
        if callable(native):
            stream: AsyncIterator[Change] = native(prefix, since)
            return stream
        return watch(
            self.store, prefix, since, poll_interval=self.poll_interval, offload=self.offload
        )
