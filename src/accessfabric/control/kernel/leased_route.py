"""``LeasedRoute``: a verified route lease a source node can open streams on.

The one node-side route type: the control client builds it from the leases it verifies
(fresh or cached), route execution (``node/routing/routes.py``) opens, fails over and reports on
it.  The control plane's own types are the planner's ``PlannedRoute`` (a path and why it
scored so) and the lease authority's ``IssuedRoute`` (a signed lease as issued).
"""

from __future__ import annotations

from dataclasses import dataclass

from accessfabric.control.kernel.objects import NodeRecord, RouteLease


@dataclass(frozen=True, slots=True)
class LeasedRoute:
    lease: RouteLease
    """The verified lease (the signed ``blob`` decoded)."""
    blob: bytes
    """The signed lease as issued: every hop checks it (OPEN_STREAM carries it)."""
    rank: str = ""
    """``primary`` or ``alternate`` (the control plane's word; empty for static routes)."""
    destination: NodeRecord | None = None
    """The destination's verified node record, when the control plane sent it."""

    @property
    def route_id(self) -> int:
        return self.lease.route_id

    @property
    def first_hop(self) -> str:
        return self.lease.hops[1]

    def expired(self, now: float) -> bool:
        return now * 1000 >= self.lease.expires_ms
