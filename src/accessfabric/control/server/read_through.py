"""``NodeReadThrough``: a replica that has not learned a node yet reads it from the store.

Control replicas learn each other's enrollments from their etcd watch
(:mod:`.replication`), a few milliseconds after the write.  A node that enrolls through
replica A and at once sends its first heartbeat to replica B would get ``401
unknown_node`` in that gap.  On a registry miss for a well-formed node id, B reads that
node's record from the store once and, if it is there, admits it into the registry as
its watch would (:meth:`NodeRegistry.apply_change`, which checks the authority's
signature).  The read is bounded, because any outsider can send a signed-looking request
with a random node id (ADR 0042):

* **negative cache** -- an id the store did not have is not read again for ``ttl``
  seconds; the cache holds at most ``max_misses`` ids and, when they are all younger
  than ``ttl``, further misses are refused without a read (never evicted early), so the
  store sees at most ``max_misses`` miss reads per ``ttl``, and one per id per ``ttl``;
* **in flight** -- at most ``max_in_flight`` reads at once (on threads: an etcd read
  waits on the network); a miss beyond that is refused without a read; concurrent
  misses of one id share one read.

A refused miss answers ``unknown_node`` as before: the node retries, and by then the
watch has delivered.  A record the watch has already passed (``watched_revision`` at or
beyond its ``mod_revision``) but the registry does not hold was removed since the read,
and is not admitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from accessfabric.control.server.registry import KEY_PREFIX, NodeRegistry, RegisteredNode
from accessfabric.control.server.store.base import Change, ChangeKind, Entry, Store
from accessfabric.observe.log_format import log_event
from accessfabric.observe.log_rate import RateLimitedLog

_log = logging.getLogger("accessfabric.control.server.read_through")
NEGATIVE_TTL = 5.0
"""Seconds an id the store did not hold is answered ``unknown_node`` without a read."""
MAX_MISSES = 1024
"""Ids in the negative cache; at most this many miss reads per ``NEGATIVE_TTL``."""
MAX_IN_FLIGHT = 4
"""Store reads of unknown ids at once."""


class NodeReadThrough:
    """On a registry miss, one bounded store read of the node (see the module)."""

    def __init__(
        self,
        store: Store,
        registry: NodeRegistry,
        *,
        watched_revision: Callable[[], int],
        ttl: float = NEGATIVE_TTL,
        max_misses: int = MAX_MISSES,
        max_in_flight: int = MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
        offload: bool = True,
    ) -> None:
        """``watched_revision``: the newest store revision the replica's watch has applied.
        ``offload``: read on a thread (a network store); else on the loop."""
        if ttl <= 0 or max_misses < 1 or max_in_flight < 1:
            raise ValueError("ttl, max_misses and max_in_flight must be positive")
        self._store = store
        self._registry = registry
        self._watched_revision = watched_revision
        self.ttl = ttl
        self.max_misses = max_misses
        self.max_in_flight = max_in_flight
        self.clock = clock
        self._offload = offload
        self._misses: OrderedDict[str, float] = OrderedDict()
        """Node id -> when its entry expires, oldest first (one ttl for all)."""
        self._in_flight: dict[str, asyncio.Task[RegisteredNode | None]] = {}
        self._log = RateLimitedLog(_log)
        self.reads = 0
        """Store reads made (found or not)."""
        self.admitted = 0
        """Nodes found in the store and admitted into the registry."""
        self.cached = 0
        """Misses answered from the negative cache (no read)."""
        self.refused = 0
        """Misses answered without a read because a bound was reached."""
        self.not_found = 0
        """Reads that found no node this authority signed (now negatively cached)."""
        self.failed = 0
        """Reads the store failed (nothing cached: the next miss reads again)."""

    async def lookup(self, node_id: str) -> RegisteredNode | None:
        """The node ``node_id`` (canonical), from the registry or one store read, or ``None``."""
        node = self._registry.get(node_id)
        if node is not None:
            return node
        now = self.clock()
        self._expire(now)
        if node_id in self._misses:
            self.cached += 1
            return None
        shared = self._in_flight.get(node_id)
        if shared is not None:
            return await asyncio.shield(shared)
        in_flight = len(self._in_flight)
        if in_flight >= self.max_in_flight or len(self._misses) + in_flight >= self.max_misses:
            self.refused += 1
            suppressed = self._log.admit("bound", now)
            if suppressed is not None:  # unknown node ids arrive fast: an outsider, likely
                log_event(
                    _log, "node read-through refused", logging.WARNING,
                    in_flight=in_flight, negative_cached=len(self._misses),
                    suppressed=suppressed,
                )  # fmt: skip
            return None
        # The read is a task of its own: a caller cancelled (its request's deadline) stops
        # waiting, not the read the others share, and the in-flight slot stays taken until
        # the read is really over.
        read = asyncio.get_running_loop().create_task(self._read(node_id))
        self._in_flight[node_id] = read
        read.add_done_callback(lambda done: self._read_over(node_id, done))
        return await asyncio.shield(read)

    def _read_over(self, node_id: str, read: asyncio.Task[RegisteredNode | None]) -> None:
        self._in_flight.pop(node_id, None)
        if not read.cancelled():
            read.exception()  # retrieved: its waiters re-raise it, none is fine too

    async def _read(self, node_id: str) -> RegisteredNode | None:
        self.reads += 1
        key = KEY_PREFIX + node_id
        entry: Entry | None
        try:
            if self._offload:
                entry = await asyncio.to_thread(self._store.get, key)
            else:
                entry = self._store.get(key)
        except Exception:
            self.failed += 1
            raise
        node = self._registry.get(node_id)  # the watch may have delivered it meanwhile
        if node is not None:
            return node
        if entry is None or self._watched_revision() >= entry.mod_revision:
            # absent, or the watch passed this record and dropped it (removed since)
            self.not_found += 1
            self._misses[node_id] = self.clock() + self.ttl
            return None
        self._registry.apply_change(
            Change(
                kind=ChangeKind.PUT,
                key=key,
                value=entry.value,
                revision=entry.mod_revision,
                create_revision=entry.create_revision,
                version=entry.version,
                lease_id=entry.lease_id,
            )
        )
        node = self._registry.get(node_id)  # None: not signed by this authority
        if node is None:
            self.not_found += 1
            self._misses[node_id] = self.clock() + self.ttl
        else:
            self.admitted += 1
        return node

    def _expire(self, now: float) -> None:
        misses = self._misses
        while misses:
            node_id, until = next(iter(misses.items()))
            if until > now:
                return
            del misses[node_id]
