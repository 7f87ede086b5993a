"""``EpochFence``: the highest epoch a node has seen for one route (or service).

A newer epoch fences every older one: once a hop has accepted epoch 5 of route 42, a lease
of epoch 4 for route 42 is refused as ``stale_epoch`` even though it is signed and
unexpired.  Renewals keep the epoch, so they pass.
"""

from __future__ import annotations

from accessfabric.control.kernel.objects import RouteLease
from accessfabric.control.kernel.rejections import LeaseRejected, RejectReason


class EpochFence:
    """Per-route memory of the newest epoch; :meth:`admit` a verified lease through it."""

    __slots__ = ("epoch", "route_id")

    def __init__(self, route_id: int, epoch: int = 0) -> None:
        self.route_id = route_id
        self.epoch = epoch

    def check(self, epoch: int) -> None:
        """Raise ``LeaseRejected(STALE_EPOCH)`` if ``epoch`` is older than the newest seen."""
        if epoch < self.epoch:
            raise LeaseRejected(
                RejectReason.STALE_EPOCH,
                f"route {self.route_id} epoch {epoch} is fenced by epoch {self.epoch}",
            )

    def advance(self, epoch: int) -> bool:
        """Check ``epoch`` and remember it; True if it is newer than anything seen."""
        self.check(epoch)
        if epoch > self.epoch:
            self.epoch = epoch
            return True
        return False

    def admit(self, lease: RouteLease) -> bool:
        """:meth:`advance` with a verified lease of this route; True if its epoch is new."""
        if lease.route_id != self.route_id:
            raise ValueError(f"lease is for route {lease.route_id}, fence for {self.route_id}")
        return self.advance(lease.epoch)


class FenceBook:
    """One node's fences: one :class:`EpochFence` per route id, shared by every part of the
    node that takes route leases (the control client, route execution at the source, the
    lease check at a hop), so a newer epoch any of them sees fences the older ones for all.
    """

    __slots__ = ("_fences",)

    def __init__(self) -> None:
        self._fences: dict[int, EpochFence] = {}

    def fence(self, route_id: int) -> EpochFence:
        fence = self._fences.get(route_id)
        if fence is None:
            fence = self._fences[route_id] = EpochFence(route_id)
        return fence

    def epoch(self, route_id: int) -> int:
        """The newest epoch seen of ``route_id`` (0: none yet)."""
        fence = self._fences.get(route_id)
        return 0 if fence is None else fence.epoch

    def check(self, lease: RouteLease) -> None:
        """Raise ``LeaseRejected(STALE_EPOCH)`` if a newer epoch of the lease's route was seen."""
        self.fence(lease.route_id).check(lease.epoch)

    def admit(self, lease: RouteLease) -> bool:
        """Check a verified lease and remember its epoch; True if the epoch is new."""
        return self.fence(lease.route_id).admit(lease)

    def fenced(self, lease: RouteLease) -> bool:
        """True when a newer epoch of the lease's route was seen."""
        return lease.epoch < self.epoch(lease.route_id)
