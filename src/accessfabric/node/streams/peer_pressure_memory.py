"""The last NODE_PRESSURE levels each peer node reported, for its next session (issue 22).

A session learns its peer's pressure only from NODE_PRESSURE frames on that session; the
peer sends one at the start of an episode, on a ``RESEND_STEP``-point change and every
``RESEND_INTERVAL`` (5 s) while pressured.  A session replaced mid-episode (a TCP session
redialled after a network change, ADR 0045) therefore started uncapped and at bulk's full
weight until the next resend.  This remembers each peer's last levels by node id and a new
session to that node starts from them.

Bounded (``MAX_PEERS``, least recently reported first out) and expiring (``TTL`` after the
report: three resend intervals, so a peer that went away pressured is not assumed
pressured for ever; a peer still pressured resends before that).  On the new session the
assumed levels lapse after ``LAPSE_AFTER`` unless the peer reports on it first: a peer whose
pressure ended while no session was up told no one, and would otherwise stay "pressured"
on the new session until its next episode.
"""

from __future__ import annotations

from collections import OrderedDict

Levels = tuple[int, int, int, int]
"""queue, cpu, memory, network (percent), as in NODE_PRESSURE."""

MAX_PEERS = 256
TTL = 15.0
"""Seconds a report stays valid for a new session."""
LAPSE_AFTER = 12.0
"""Seconds assumed levels hold on a new session with no report on it (more than two of a
pressured peer's 5 s resends)."""


class PeerPressureMemory:
    """Node id -> (levels, when reported); ``now`` is passed in (monotonic seconds)."""

    __slots__ = ("_reports", "max_peers", "ttl")

    def __init__(self, max_peers: int = MAX_PEERS, ttl: float = TTL) -> None:
        self.max_peers = max_peers
        self.ttl = ttl
        self._reports: OrderedDict[str, tuple[Levels, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._reports)

    def note(self, node_id: str, levels: Levels, now: float) -> None:
        """The peer reported ``levels`` (low ones too: a recovered peer is remembered so)."""
        reports = self._reports
        reports[node_id] = (levels, now)
        reports.move_to_end(node_id)
        while len(reports) > self.max_peers:
            reports.popitem(last=False)

    def recall(self, node_id: str, now: float) -> Levels | None:
        """The peer's last levels if reported within ``ttl``, else None (and forgotten)."""
        report = self._reports.get(node_id)
        if report is None:
            return None
        levels, at = report
        if now - at > self.ttl:
            del self._reports[node_id]
            return None
        return levels
