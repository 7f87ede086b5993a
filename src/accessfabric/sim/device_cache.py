"""The light profile's node cache: a simulated device's cache writes, coalesced.

A device's node cache (``control/client/node_cache.py``) writes a document to a
temporary file and renames it over the old one whenever it changes.  At a fleet's start
the directory changes with every device that joins, so each device rewrote its
``directory.json`` (and its policy, access, route and service documents) at nearly every
heartbeat: 12-14 % of a worker's CPU at 1000 devices (temporary files, ``mkdir``,
``stat``; issue 17, docs/benchmarks.md).  A real device writes its own few files on its
own disk; 333 devices of one worker write theirs on one loop.

:class:`CoalescedCache` is the real :class:`NodeCache` with every document persisted the
way it already persists ``sync.json``: held in memory, served from memory, and written at
most every ``interval`` seconds (the latest state of each changed document, once), and
on :meth:`flush` (the control client flushes on close).  After a crash a device's files
read up to ``interval`` seconds old, which a load tool's throw-away devices do not
mind.  Reads, verification and the documents' content are the node cache's own.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from accessfabric.control.client.node_cache import SYNC_PERSIST_INTERVAL, NodeCache

COALESCE_INTERVAL = SYNC_PERSIST_INTERVAL
"""Seconds a simulated device's changed cache documents may be held before written."""


class CoalescedCache(NodeCache):
    """A :class:`NodeCache` whose writes are held and written together (module doc)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        interval: float = COALESCE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(directory, clock=clock)
        self.interval = interval
        self._now = clock
        self._deferred: dict[tuple[str, ...], Any] = {}
        """parts -> the document written last (a copy), not yet on disk."""
        self._held_since: float | None = None
        """When the oldest held document was written (None: none held)."""

    def write(self, document: dict[str, Any], *parts: str) -> None:
        # a copy, as the node cache keeps the bytes of the call: the caller may change its own
        self._deferred[parts] = json.loads(json.dumps(document))
        now = self._now()
        if self._held_since is None:
            self._held_since = now
        self.flush_due(now)

    def read(self, *parts: str) -> dict[str, Any] | None:
        if parts in self._deferred:
            value = self._deferred[parts]
            return value if isinstance(value, dict) else None
        return super().read(*parts)

    def flush_due(self, now: float | None = None) -> bool:
        """Write the held documents if the oldest waited ``interval`` seconds."""
        since = self._held_since
        if since is None or (now if now is not None else self._now()) - since < self.interval:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        """Write every held document (its latest state) and the node cache's own."""
        held, self._deferred, self._held_since = self._deferred, {}, None
        try:
            for parts, document in held.items():
                super().write(document, *parts)
        except BaseException:
            for parts, document in held.items():  # not lost: written at the next flush
                self._deferred.setdefault(parts, document)
            self._held_since = self._now()
            raise
        super().flush()

    def route_documents(self) -> list[dict[str, Any]]:
        return self._documents("routes")

    def service_documents(self) -> list[dict[str, Any]]:
        return self._documents("services")

    def _documents(self, folder: str) -> list[dict[str, Any]]:
        """The folder's documents, on disk or held, by file name (a held one over its file)."""
        names = {path.name for path in (self.directory / folder).glob("*.json")}
        names.update(p[1] for p in self._deferred if len(p) == 2 and p[0] == folder)
        out = []
        for name in sorted(names):
            document = self.read(folder, name)
            if document is not None:
                out.append(document)
        return out
