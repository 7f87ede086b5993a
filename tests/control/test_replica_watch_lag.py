"""A watch whose stream answers but delivers nothing is found (ADR 0061).

etcd 3.4 answers a watch's progress request from the member's own revision whether or
not the watcher sent its events, so a stream can pass the 1 s silence check while the
replica's caches stand still.  :class:`ReplicaSync` compares the watch with the revisions
its quorum probes read: behind one for ``WATCH_LAG_LIMIT`` seconds while something under
the namespace changed in between, the watch is broken (reload, watch again); revisions of
writes elsewhere in etcd, which no watched key changed, are not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.server.plane import ControlConfig, ControlPlane
from accessfabric.control.server.replication import WATCH_LAG_LIMIT, ReplicaSync
from accessfabric.control.server.store.base import Change, StoreUnavailableError
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.identity.keys import NodeKey
from tests.conditions import until
from tests.control.conftest import FakeClock


class StalledWatch:
    """A store whose revision moves on every quorum read while its watch streams nothing
    (it stays open: from the replica's side, only progress answers arrive)."""

    def __init__(self, *, watched_keys_change: bool) -> None:
        self.watched_keys_change = watched_keys_change
        self.revision_value = 10
        self.watches: list[int] = []
        self.checks: list[tuple[int, int]] = []

    def revision(self) -> int:
        self.revision_value += 1
        return self.revision_value

    def changed_between(self, prefix: str, after: int, until: int) -> bool:
        assert prefix == "/"
        self.checks.append((after, until))
        return self.watched_keys_change

    async def watch(self, prefix: str, since: int) -> AsyncIterator[Change]:
        self.watches.append(since)
        await asyncio.Event().wait()
        yield  # pragma: no cover - makes this an async generator


def _plane(tmp_path: Path) -> ControlPlane:
    clock = FakeClock(1_800_000_000.0)
    store = SqliteStore(tmp_path / "control.db", clock=clock)
    config = ControlConfig(heartbeat_interval=1.0, replica_ttl=600.0)
    plane = ControlPlane(store, Authority(NodeKey.generate()), config=config, clock=clock)
    plane.load()
    return plane


def test_a_watch_behind_the_quorum_revision_with_changes_is_watched_again(
    tmp_path: Path,
) -> None:
    """Before, the replica stayed synced on the stalled watch for as long as it ran."""
    plane = _plane(tmp_path)
    store = StalledWatch(watched_keys_change=True)

    async def main() -> None:
        sync = plane.sync = ReplicaSync(plane, store)
        sync.start(10)
        try:
            await until(
                lambda: not sync.synced,
                timeout=WATCH_LAG_LIMIT + 4.0,
                what="the replica finds its watch behind the store",
            )
            assert "the watch stayed at revision 10" in sync.reason, sync.reason
            assert store.checks and store.checks[0][0] == 10
            await until(lambda: len(store.watches) == 2, what="it reloads and watches again")
            assert store.watches[1] > 10  # from the revision it reloaded at
            await until(lambda: sync.synced, what="it serves again")
        finally:
            await sync.stop()

    asyncio.run(main())


def test_revisions_of_writes_outside_the_namespace_do_not_break_the_watch(
    tmp_path: Path,
) -> None:
    plane = _plane(tmp_path)
    store = StalledWatch(watched_keys_change=False)

    async def main() -> None:
        sync = plane.sync = ReplicaSync(plane, store)
        sync.start(10)
        try:
            await until(
                lambda: len(store.checks) >= 2,
                timeout=2 * WATCH_LAG_LIMIT + 4.0,
                what="the replica checks the lag twice",
            )
            assert sync.synced and store.watches == [10]
            # the second check starts after the revision the first found quiet
            assert store.checks[1][1] > store.checks[0][1]
        finally:
            await sync.stop()

    asyncio.run(main())


class BreaksWithARead:
    """A store whose watch breaks in the same loop step as a quorum read returns, as
    both do when the etcd member behind them is killed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._broken = asyncio.Event()
        self.reads = 0
        self.watches = 0

    def revision(self) -> int:  # in a worker thread
        self.reads += 1
        if self.reads == 3:  # the break is queued just before this read's answer
            self._loop.call_soon_threadsafe(self._broken.set)
        return 10

    def changed_between(self, prefix: str, after: int, until: int) -> bool:
        return False

    async def watch(self, prefix: str, since: int) -> AsyncIterator[Change]:
        self.watches += 1
        if self.watches == 1:
            await self._broken.wait()
            raise StoreUnavailableError("Stream removed")
        await asyncio.Event().wait()
        yield  # pragma: no cover - makes this an async generator


def test_a_watch_breaking_as_a_probe_returns_is_watched_again(tmp_path: Path) -> None:
    """Python 3.11's ``asyncio.wait_for`` swallows a cancellation that arrives once its
    inner future is done: the probe cancelled as the watch broke kept probing, and the
    sync task waited for it for ever, the replica synced on a dead watch (the leader-kill
    fault test's stale caches) and deaf to ``stop``."""
    plane = _plane(tmp_path)

    async def main() -> None:
        store = BreaksWithARead(asyncio.get_running_loop())
        sync = plane.sync = ReplicaSync(plane, store)
        sync.start(10)
        try:
            await until(lambda: store.watches == 2, what="the replica watches again")
            assert store.reads >= 3
        finally:
            await asyncio.wait_for(sync.stop(), 5.0)

    asyncio.run(main())
