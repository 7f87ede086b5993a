"""The directory change log: which nodes' directory entries changed, in order (issue 17).

A node that holds a directory fetches ``GET /v1/directory?since=<cursor>`` with the
cursor of the directory it holds and gets only the entries that changed since then
(:func:`accessfabric.control.server.directory.directory_document`).  The log behind the cursor
is a bounded ring of ``(sequence, node id, tenant)``: the heartbeat table notes a node
whenever its visibility generation moves for it (first heartbeat, return, turning
``unreachable``, a change of region, endpoints, transports, measured peers or relay
facts), the registry whenever a node's record is stored, replaced or removed.

A cursor is ``<epoch>.<sequence>``.  The epoch names this log (a restarted or reloaded
table starts a new one), so a cursor of another log, a cursor older than the oldest
change kept, or one from the future gets ``None``: the caller then sends the whole
directory.  Memory is bounded by ``capacity`` entries whatever the fleet size.
"""

from __future__ import annotations

import secrets
from collections import deque

CHANGE_LOG_SIZE = 65_536
"""Changes kept: a node whose cursor is older than that many changes fetches in full."""


class ChangeLog:
    """A bounded, ordered log of changed node ids."""

    def __init__(self, capacity: int = CHANGE_LOG_SIZE) -> None:
        self.epoch = secrets.token_hex(4)
        self.seq = 0
        self._log: deque[tuple[int, str, str | None]] = deque(maxlen=capacity)

    def note(self, node_id: str, tenant: str | None = None) -> None:
        """``node_id``'s entry changed (``tenant``: when known, e.g. of a removed node)."""
        self.seq += 1
        self._log.append((self.seq, node_id, tenant))

    def reset(self) -> None:
        """Forget every change and start a new epoch: every cursor becomes unknown."""
        self.epoch = secrets.token_hex(4)
        self._log.clear()

    def cursor(self) -> str:
        return f"{self.epoch}.{self.seq}"

    def __len__(self) -> int:
        return len(self._log)

    def since(self, cursor: str) -> dict[str, str | None] | None:
        """The nodes changed after ``cursor`` (node id -> tenant if noted), or ``None``
        when the cursor is not this log's, is older than what is kept, or is ahead."""
        epoch, _, text = cursor.partition(".")
        if epoch != self.epoch or not (text.isascii() and text.isdigit()):  # not '²'
            return None
        seq = int(text)
        if seq > self.seq:
            return None
        oldest = self._log[0][0] if self._log else self.seq + 1
        if seq < oldest - 1:
            return None  # changes after the cursor were dropped from the ring
        changed: dict[str, str | None] = {}
        for at, node_id, tenant in reversed(self._log):
            if at <= seq:
                break
            if changed.get(node_id) is None:
                changed[node_id] = tenant
        return changed
