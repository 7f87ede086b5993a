"""Operator drains: nodes the operator takes out of service without stopping them.

``accessfabric control drain NODE`` (``POST /v1/admin/nodes/{id}/drain``) stores
``/drains/<node id>``; ``control undrain`` deletes it.  While a node is drained:

* **placement** never names it (:mod:`accessfabric.control.server.directory`): devices are told
  to hold their session with another entry, and move when their directory changes (the
  directory's version moves with every drain and undrain, :meth:`NodeDrains.digest`);
* the **route planner** refuses it as a hop (``carrier_refusal``), so new route leases go
  around it;
* the **node** learns it from its heartbeat reply (``draining``): it refuses new sessions,
  lets the streams of its sessions finish and sends each session GOAWAY once it has no
  stream left, or when ``drain_timeout`` has passed (``NodeRuntime.drain``).

Drains are kept in the store, so every control replica sees them (etcd: through the
replica watch, :mod:`accessfabric.control.server.replication`), and survive restarts.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from accessfabric.control.server.generations import PartitionGenerations
from accessfabric.control.server.store.base import Change, ChangeKind, Clock, Store

KEY_PREFIX = "/drains/"


class NodeDrains:
    """The drained node ids (cached in memory, kept in a :class:`Store`)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = time.time,
        tenant_of: Callable[[str], str | None] | None = None,
    ) -> None:
        """``tenant_of`` names a node's tenant (the registry's word): a drain moves its
        partition's :meth:`tenant_generation` only (without it, or for a node it does not
        know, every partition's)."""
        self._store = store
        self._clock = clock
        self._tenant_of = tenant_of
        self._since: dict[str, float] = {}
        self._generations = PartitionGenerations()
        """Moved by every change (a route coordinator rebuilds its snapshot on its
        partition's: ADR 0043)."""

    @property
    def generation(self) -> int:
        """Moves with every drain or undrain (the whole-fleet planner rebuilds on it)."""
        return self._generations.generation

    def tenant_generation(self, tenant: str) -> int:
        """Moves when a node of ``tenant`` is drained or undrained, not another's."""
        return self._generations.of(tenant)

    def _moved(self, node_id: str | None) -> None:
        known = None if node_id is None or self._tenant_of is None else self._tenant_of(node_id)
        self._generations.moved(known)

    def load(self) -> None:
        self._since = {
            entry.key.removeprefix(KEY_PREFIX): _since(entry.value)
            for entry in self._store.range(KEY_PREFIX).entries
        }
        self._moved(None)

    def apply_change(self, change: Change) -> None:
        """Fold a change another replica wrote (seen in the store's watch)."""
        node_id = change.key.removeprefix(KEY_PREFIX)
        if change.kind is ChangeKind.DELETE:
            self._since.pop(node_id, None)
        else:
            self._since[node_id] = _since(change.value)
        self._moved(node_id)

    def drain(self, node_id: str) -> float:
        """Drain ``node_id`` (idempotent); when its drain began."""
        since = self._since.get(node_id)
        if since is None:
            since = self._clock()
            self._store.put(KEY_PREFIX + node_id, json.dumps({"since": since}).encode())
            self._since[node_id] = since
            self._moved(node_id)
        return since

    def undrain(self, node_id: str) -> bool:
        """End ``node_id``'s drain; ``False`` when it was not drained."""
        if self._since.pop(node_id, None) is None:
            return False
        self._store.delete(KEY_PREFIX + node_id)
        self._moved(node_id)
        return True

    def is_draining(self, node_id: str) -> bool:
        return node_id in self._since

    def since(self, node_id: str) -> float | None:
        return self._since.get(node_id)

    def digest(self) -> str:
        """Names the set of drained nodes (the same on every replica): part of the
        directory's version, so a drain or undrain makes every node refetch."""
        text = ",".join(sorted(self._since))
        return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _since(value: bytes) -> float:
    try:
        document = json.loads(value)
        return float(document["since"])
    except (ValueError, KeyError, TypeError):
        return 0.0
