"""``RouteBook``: one node's verified route leases, with one epoch fence per route id.

The node holds its route leases in one place.  The control client puts what it fetched
(verified, epochs admitted) or read back from its disk cache after a restart; route
execution (``node/routing/routes.py``) reads the usable ones, puts static routes and
applies a ROUTE_UPDATE, whose newer epoch replaces the held lease of its route for every
reader at once.  The book's :class:`~accessfabric.control.kernel.fence.FenceBook` is the
one the hop's lease check uses too (docs/architecture.md, path 2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from accessfabric.control.kernel.fence import FenceBook
from accessfabric.control.kernel.leased_route import LeasedRoute
from accessfabric.control.kernel.objects import RouteLease
from accessfabric.wire.registry import TrafficClass

_log = logging.getLogger(__name__)

RouteKey = tuple[str, TrafficClass]
Replaced = Callable[[RouteKey, LeasedRoute, LeasedRoute], None]
"""Told (key, the lease replaced, the lease in its place) by :meth:`RouteBook.update`."""


class RouteBook:
    """Verified route leases per (service, traffic class), primary first."""

    __slots__ = ("_routes", "fences", "on_replaced")

    def __init__(self, fences: FenceBook | None = None) -> None:
        self.fences = fences if fences is not None else FenceBook()
        """Newest epoch seen per route id, shared with the hop's lease check."""
        self._routes: dict[RouteKey, list[LeasedRoute]] = {}
        self.on_replaced: list[Replaced] = []
        """Told of every lease :meth:`update` replaced (the control client rewrites its
        disk cache, so a restart from it does not bring the older epoch back)."""

    def put(self, service: str, traffic_class: TrafficClass, routes: Iterable[LeasedRoute]) -> None:
        """Hold ``routes`` (verified, primary first) for (service, class), replacing what
        was held; their epochs are not admitted here (the caller decides)."""
        self._routes[(service, traffic_class)] = list(routes)

    def held(self, service: str, traffic_class: TrafficClass) -> list[LeasedRoute] | None:
        """Every lease held for (service, class), usable or not; None: nothing was put."""
        routes = self._routes.get((service, traffic_class))
        return None if routes is None else list(routes)

    def usable(self, service: str, traffic_class: TrafficClass, now: float) -> list[LeasedRoute]:
        """The held leases not expired at ``now`` and not fenced by a newer epoch."""
        return [
            route
            for route in self._routes.get((service, traffic_class), ())
            if not route.expired(now) and not self.fences.fenced(route.lease)
        ]

    def items(self) -> list[tuple[RouteKey, list[LeasedRoute]]]:
        return [(key, list(routes)) for key, routes in self._routes.items()]

    def update(self, lease: RouteLease, blob: bytes) -> int:
        """A verified newer epoch of a route (ROUTE_UPDATE): admit it in the fences and put
        it in place of every held lease of an older epoch of that route whose service and
        class it allows.  How many were replaced.  Raises ``LeaseRejected`` (stale epoch)
        when the book has seen a newer one."""
        self.fences.admit(lease)
        changes: list[tuple[RouteKey, LeasedRoute, LeasedRoute]] = []
        for (service, traffic_class), routes in self._routes.items():
            if service not in lease.allowed_services or traffic_class not in lease.allowed_classes:
                continue
            for index, route in enumerate(routes):
                if route.route_id == lease.route_id and route.lease.epoch < lease.epoch:
                    routes[index] = LeasedRoute(lease, blob, route.rank, route.destination)
                    changes.append(((service, traffic_class), route, routes[index]))
        # Listeners after the book is whole; one that fails (e.g. an odd cached document)
        # neither stops the others nor undoes the replacement.
        for key, old, new in changes:
            for listener in self.on_replaced:
                try:
                    listener(key, old, new)
                except Exception:
                    _log.exception("route replacement listener failed for %s", new.route_id)
        return len(changes)
