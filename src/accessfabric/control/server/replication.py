"""``ReplicaSync``: one control replica learns the other replicas' writes from etcd watches.

Several stateless replicas share one etcd cluster.  Each keeps in memory what it needs on
every request (the node registry, other replicas' heartbeat digests); this task keeps that
memory equal to etcd by watching ``/nodes/`` and ``/heartbeats/``: a role revoked, a node
record replaced or a node removed (its record and heartbeat state) through one replica
reaches every other replica within one watch delivery (milliseconds on a LAN), not a poll
interval.

When the watch breaks (etcd unreachable, quorum lost) the replica marks itself
``synced = False`` — the API then answers 503 for everything that would act on the cached
registry — and retries with jittered backoff; when history it missed was compacted it lists
the prefixes again before watching.  Meanwhile its heartbeat table is paused: the nodes'
heartbeats it cannot take are not counted against them, and when it serves again every
node live at the pause has one unreachable window for its next heartbeat to land
(:meth:`HeartbeatTable.resume`, ADR 0061).  Only stores with a native ``watch`` (etcd)
need this: SQLite replicas are single-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

from accessfabric.control.server.drains import KEY_PREFIX as DRAIN_PREFIX
from accessfabric.control.server.drains import NodeDrains
from accessfabric.control.server.heartbeats import KEY_PREFIX as HEARTBEAT_PREFIX
from accessfabric.control.server.heartbeats import HeartbeatTable
from accessfabric.control.server.registry import KEY_PREFIX as NODE_PREFIX
from accessfabric.control.server.registry import NodeRegistry
from accessfabric.control.server.services import KEY_PREFIX as SERVICE_PREFIX
from accessfabric.control.server.services import ServiceDirectory
from accessfabric.control.server.store.base import Change, ChangeKind, CompactedError, StoreError

_log = logging.getLogger("accessfabric.control.server.replication")
MAX_BACKOFF = 2.0
PROBE_INTERVAL = 0.5
PROBE_TIMEOUT = 2.5
PROBE_FAILURES = 2
"""Beyond the store's own 2 s deadline: a quorum read slower than that is a lost store."""
WATCHED_PREFIX = "/"
"""One watch over the namespace; changes outside the two prefixes are skipped."""
WATCH_LAG_LIMIT = 2.0
"""Seconds the watch may stay behind a revision a quorum probe read before the replica
asks the store whether anything it watches changed in between (ADR 0061): if so, the
watch is broken though its stream still answers."""


class WatchableStore(Protocol):
    def watch(self, prefix: str, since: int) -> AsyncIterator[Change]: ...

    def revision(self) -> int: ...

    def changed_between(self, prefix: str, after: int, until: int) -> bool: ...


def watchable(store: object) -> WatchableStore | None:
    """``store`` if it streams its own changes (etcd), else ``None``."""
    return store if callable(getattr(store, "watch", None)) else None  # type: ignore[return-value]


class ReplicatedCaches(Protocol):
    """The caches a replica keeps equal to the shared store (the control plane's)."""

    @property
    def registry(self) -> NodeRegistry: ...

    @property
    def heartbeats(self) -> HeartbeatTable: ...

    @property
    def services(self) -> ServiceDirectory: ...

    @property
    def drains(self) -> NodeDrains: ...


class ReplicaSync:
    """Keeps ``plane``'s caches equal to the shared store; run it as a task."""

    def __init__(
        self,
        plane: ReplicatedCaches,
        store: WatchableStore,
    ) -> None:
        self._plane = plane
        self._store = store
        self.synced = True
        self.reason = ""
        self.applied = 0
        self.since = 0
        self.store_ok_at: float | None = None
        """When the last quorum read that succeeded was sent (the heartbeat table's clock):
        the store answered then, so a loss found later began after it."""
        self._checked = 0
        """A revision up to which nothing watched changed beyond ``since`` (writes
        elsewhere in etcd move its revision without an event for the watch)."""
        self._behind: list[tuple[int, float]] = []
        """Revisions probes read that the watch has not reached, and when (monotonic)."""
        self._task: asyncio.Task[None] | None = None

    def start(self, since: int) -> None:
        self.since = since
        self._task = asyncio.create_task(self._run(), name="control replica sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0
        while True:
            watcher = asyncio.create_task(self._watch())
            prober = asyncio.create_task(self._probe_until_failure())
            try:
                done, _ = await asyncio.wait({watcher, prober}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when this task is cancelled (stop): end both
                for task in (watcher, prober):
                    task.cancel()
                    task.add_done_callback(_read_error)  # the ones in done are read below
                # waited on with a bound, never awaited: an await swallows this task's own
                # cancellation when the awaited one is cancelled too (stop would not stop)
                _, left = await asyncio.wait({watcher, prober}, timeout=PROBE_TIMEOUT)
                if left:
                    _log.error("replica sync: %d task(s) did not end when cancelled", len(left))
            for task in done:
                with contextlib.suppress(asyncio.CancelledError):
                    error = task.exception()
                    if isinstance(error, StoreError):
                        self._mark_lost(str(error))
                    elif error is not None:  # a replica that stops following must say so
                        _log.error("replica sync failed", exc_info=error)
                        self._mark_lost(f"replica sync failed: {error!r}")
            failures += 1
            while True:
                await asyncio.sleep(random.uniform(0.5, 1.0) * min(MAX_BACKOFF, 0.1 * 2**failures))
                if await self._reload():
                    failures = 0
                    break
                failures += 1

    async def _watch(self) -> None:
        """Apply every change from ``since`` on; returns only by raising."""
        try:
            async for change in self._store.watch(WATCHED_PREFIX, self.since):
                self.apply(change)
                self.since = max(self.since, change.revision)
        except CompactedError as error:
            raise StoreError(f"missed compacted history ({error}); reloading") from error
        raise StoreError("the store ended its watch stream")

    async def _probe_until_failure(self) -> None:
        """A quorum read every ``PROBE_INTERVAL``: a partitioned replica notices within
        ``PROBE_FAILURES`` probes even when its watch stream just goes silent (one slow read
        on a loaded machine is not a partition)."""
        failures = 0
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            sent = self._plane.heartbeats.now()
            try:
                revision = await _in_thread(self._store.revision)
            except (TimeoutError, StoreError) as error:
                failures += 1
                if failures >= PROBE_FAILURES:
                    reason = str(error) or f"no quorum read within {PROBE_TIMEOUT} s"
                    raise StoreError(f"{failures} quorum reads failed: {reason}") from None
            else:
                failures = 0
                self.store_ok_at = sent
                await self._check_watch_lag(revision, time.monotonic())

    async def _check_watch_lag(self, revision: int, now: float) -> None:
        """Raise :class:`StoreError` when the watch has stayed behind a probed revision for
        ``WATCH_LAG_LIMIT`` seconds and something it watches changed in between.

        A net for any watch that stops delivering while the store answers: etcd 3.4
        answers a progress request from the member's own revision whether or not the
        watcher has sent its events, so the stream's silence check cannot see such a
        stream.  In the leader-kill fault runs it caught a watch that had ended while
        ``_run`` did not notice (before ``_in_thread`` replaced ``wait_for``)."""
        reached = max(self.since, self._checked)
        self._behind = [(r, at) for r, at in self._behind if r > reached]
        if revision > reached and (not self._behind or revision > self._behind[-1][0]):
            self._behind.append((revision, now))
        if not self._behind or now - self._behind[0][1] < WATCH_LAG_LIMIT:
            return
        target, since = self._behind[0][0], self.since
        try:
            changed = await _in_thread(
                lambda: self._store.changed_between(WATCHED_PREFIX, since, target)
            )
        except (TimeoutError, StoreError):
            return  # the probes find a store that does not answer
        if not changed:  # revisions of writes outside the namespace
            self._checked = max(self._checked, target)
        elif self.since < target:  # not delivered meanwhile either
            raise StoreError(
                f"the watch stayed at revision {self.since} for {now - self._behind[0][1]:.1f} s "
                f"while the store had changes up to {target}; watching again"
            )

    async def _reload(self) -> bool:
        """Read the caches again from the store (after a break); ``True`` when done."""
        try:
            revision = await _in_thread(self._store.revision)
            self._plane.registry.load()
            self._plane.heartbeats.load()
            self._plane.drains.load()
            self._plane.services.load()
        except (StoreError, TimeoutError) as error:
            self._mark_lost(str(error) or "no quorum read in time")
            return False
        self.since = revision
        self._behind = []
        self._mark_synced()
        return True

    def _mark_lost(self, reason: str) -> None:
        if self.synced:
            _log.warning("replica sync lost the store: %s", reason)
            # the loss began after the last quorum read that succeeded, maybe well before
            # it was found (two failed probes take up to 5 s): heartbeats other replicas
            # could not persist since then are not counted against the nodes either
            self._plane.heartbeats.pause(self.store_ok_at)
        self.synced = False
        self.reason = reason

    def _mark_synced(self) -> None:
        if not self.synced:
            _log.info("replica sync: store reachable again")
            self._plane.heartbeats.resume()  # before the first request it serves
        self.synced = True
        self.reason = ""

    def _tenant_of_node(self, node_id: str) -> str | None:
        node = self._plane.registry.get(node_id)
        return None if node is None else node.record.tenant

    def apply(self, change: Change) -> None:
        """Fold one change of another replica (or this one: idempotent) into the caches."""
        if change.key.startswith(NODE_PREFIX):
            self._plane.registry.apply_change(change)
            if change.kind is ChangeKind.DELETE:  # removed: its soft state goes with it
                self._plane.heartbeats.forget(change.key.removeprefix(NODE_PREFIX))
        elif change.key.startswith(HEARTBEAT_PREFIX):
            self._plane.heartbeats.apply_change(change)
        elif change.key.startswith(SERVICE_PREFIX):
            # services are read from the store on demand; the route coordinators rebuild
            # their snapshots (serving replicas, leaders) when the generation of the
            # service's tenant moves (ADR 0043): found from the meta, or the node named
            self._plane.services.apply_change(change, self._tenant_of_node)
        elif change.key.startswith(DRAIN_PREFIX):
            self._plane.drains.apply_change(change)
        else:
            return
        self.applied += 1


_T = TypeVar("_T")


async def _in_thread(call: Callable[[], _T]) -> _T:
    """``call()`` in a worker thread; :class:`TimeoutError` after ``PROBE_TIMEOUT``.

    Not ``asyncio.wait_for``: on Python 3.11 it returns the result instead of raising when
    it is cancelled just as the call finished, and a probe cancelled as the watch broke
    (the etcd member behind both killed) kept probing while ``_run`` waited for it for
    ever, the replica synced on a dead watch (ADR 0061)."""
    task = asyncio.ensure_future(asyncio.to_thread(call))
    task.add_done_callback(_read_error)
    done, _ = await asyncio.wait({task}, timeout=PROBE_TIMEOUT)
    if not done:
        task.cancel()  # the thread finishes on its own: the store's calls have deadlines
        raise TimeoutError
    return task.result()


def _read_error(task: asyncio.Future[Any]) -> None:
    """Marks ``task``'s error as read (it is reported elsewhere, or not wanted)."""
    if not task.cancelled():
        task.exception()
