"""Service failovers as one node sees them: ``accessfabric_service_failovers_total``.

The control plane elects service leaders; a node learns the outcome from what its
control link fetches, and counts a failover when

* ``leader_changed`` — the service lease of a service it hosts (``[[services]]``)
  names another replica than before, under a higher epoch (leader-follower: the
  leader's replica lease ran out and a follower won the epoch CAS);
* ``replica_lost`` — a replica that served a service it hosts is no longer among
  the serving replicas, the others still serve (active-active);
* ``destination_changed`` — the route leases of a service it reaches now lead
  elsewhere: the replica the primary route ended at is no longer the destination of
  any route (its streams must go to another replica).  Counted per traffic class.

A service with no serving replica at all changes nothing (the next replica to appear
is compared with the last one seen).  Service names are the ``service`` label only when
the node's configuration names them, or for the first :data:`MAX_OTHER_SERVICES`
others (services streams were opened to); the rest are counted as ``other``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from accessfabric.control.kernel.objects import RouteLease, ServiceLease
from accessfabric.control.kernel.vocabulary import ServiceMode
from accessfabric.wire.registry import TrafficClass

MAX_OTHER_SERVICES = 16
OTHER = "other"
REASONS = ("leader_changed", "replica_lost", "destination_changed")


class ServiceFailovers(Collector):
    """Counts service failovers from the service and route leases the node receives."""

    def __init__(self, configured: Iterable[str]) -> None:
        self._labels = set(configured)
        self._others = 0
        self._serving: dict[str, tuple[frozenset[str], int]] = {}  # replicas, highest epoch
        self._primary: dict[tuple[str, TrafficClass], str] = {}
        self.counts: Counter[tuple[str, str]] = Counter()  # (service label, reason)

    def _label(self, service: str) -> str:
        if service in self._labels:
            return service
        if self._others < MAX_OTHER_SERVICES:
            self._others += 1
            self._labels.add(service)
            return service
        return OTHER

    def service_leases(self, service: str, leases: Sequence[ServiceLease]) -> None:
        """The verified service leases of ``service`` just fetched (a hosted service)."""
        if not leases:
            return
        replicas = frozenset(lease.replica for lease in leases)
        epoch = max(lease.epoch for lease in leases)
        before = self._serving.get(service)
        self._serving[service] = (replicas, epoch)
        if before is None or replicas == before[0]:
            return
        if any(lease.mode == ServiceMode.LEADER_FOLLOWER for lease in leases):
            if epoch > before[1]:
                self.counts[(self._label(service), "leader_changed")] += 1
        elif lost := len(before[0] - replicas):
            self.counts[(self._label(service), "replica_lost")] += lost

    def route_leases(
        self, service: str, traffic_class: TrafficClass, leases: Sequence[RouteLease]
    ) -> None:
        """The route leases (primary first) the node now uses for ``service``."""
        if not leases:
            return
        key = (service, traffic_class)
        before = self._primary.get(key)
        self._primary[key] = leases[0].hops[-1]
        if before is not None and all(lease.hops[-1] != before for lease in leases):
            self.counts[(self._label(service), "destination_changed")] += 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "accessfabric_service_failovers",
            "Service failovers this node saw, by service and reason "
            "(leader_changed, replica_lost, destination_changed).",
            labels=["service", "reason"],
        )
        for (service, reason), count in sorted(self.counts.items()):
            family.add_metric([service, reason], count)
        yield family
