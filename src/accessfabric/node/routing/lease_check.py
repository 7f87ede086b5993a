"""The route-lease check every hop runs on an OPEN_STREAM before it relays or serves it.

Signature with the pinned authority key, validity window, epoch (an
:class:`EpochFence` per route id: a newer epoch fences older ones), allowed service
and class, this node on the route, and the previous hop on the route being the peer
that opened the stream.  The first failure raises :class:`LeaseRejected`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from accessfabric.control.kernel.codec import canonical_node_id
from accessfabric.control.kernel.fence import EpochFence, FenceBook
from accessfabric.control.kernel.objects import RouteLease
from accessfabric.control.kernel.rejections import LeaseRejected, RejectReason
from accessfabric.control.kernel.verify import verify_route_lease
from accessfabric.wire.registry import TrafficClass


@dataclass(frozen=True, slots=True)
class CheckedLease:
    lease: RouteLease
    blob: bytes
    position: int
    """This node's index in ``lease.hops`` (0 is the source, the last one the destination)."""

    @property
    def is_destination(self) -> bool:
        return self.position == len(self.lease.hops) - 1

    @property
    def next_hop(self) -> str:
        return self.lease.hops[self.position + 1]


class LeaseChecker:
    def __init__(
        self,
        node_id: str,
        authority_key: bytes | None,
        clock: Callable[[], float] = time.time,
        *,
        fences: FenceBook | None = None,
    ) -> None:
        self.node_id = canonical_node_id(node_id)
        self.authority_key = authority_key
        self.clock = clock
        self.fences = fences if fences is not None else FenceBook()
        """The node's route epoch fences (shared with the control client and route execution)."""

    def fence(self, route_id: int) -> EpochFence:
        return self.fences.fence(route_id)

    def check(
        self,
        blob: bytes,
        *,
        peer_id: str,
        service: str,
        traffic_class: TrafficClass,
        route_id: int,
    ) -> CheckedLease:
        if self.authority_key is None:
            raise LeaseRejected(
                RejectReason.FORGED, "this node has no authority key configured to check leases"
            )
        fence = self.fence(route_id)
        lease = verify_route_lease(
            blob,
            self.authority_key,
            self.clock(),
            hop=self.node_id,
            service=service,
            traffic_class=traffic_class,
            min_epoch=fence.epoch,
        )
        what = f"route lease {lease.lease_id.hex()} (route {lease.route_id}, epoch {lease.epoch})"
        if lease.route_id != route_id:
            raise LeaseRejected(
                RejectReason.HOP_NOT_ON_ROUTE,
                f"OPEN_STREAM names route {route_id}, but carries {what}",
            )
        position = lease.hops.index(self.node_id)
        if position == 0:
            raise LeaseRejected(
                RejectReason.HOP_NOT_ON_ROUTE, f"this node is the source of {what}, not a hop"
            )
        if lease.hops[position - 1] != _canonical(peer_id):
            raise LeaseRejected(
                RejectReason.HOP_NOT_ON_ROUTE,
                f"{peer_id} is not the hop before this node on {what}",
            )
        fence.admit(lease)
        return CheckedLease(lease, blob, position)


def _canonical(node_id: str) -> str:
    try:
        return canonical_node_id(node_id)
    except ValueError:
        return node_id
