"""Change generations per partition (tenant), for the route coordinators (ADR 0043).

A route coordinator (:mod:`accessfabric.control.server.coordinators`) plans one tenant's
routes from a snapshot of its partition: the tenant's nodes and the shared ones.  It
must rebuild when something *in its partition* changed, and only then.  A single global
counter per source of facts (heartbeats, services, drains) made any heartbeat anywhere
invalidate every tenant's snapshot; :class:`PartitionGenerations` keeps, beside the
global counter, the value it had at each tenant's last change.

``of(tenant)`` never repeats a value for another content: it is the global counter at
the tenant's last change, or at the last change of unknown partition (``moved(None)``:
a load, a change whose tenant this replica cannot tell), which counts for every tenant.
"""

from __future__ import annotations


class PartitionGenerations:
    """A global change counter and, per tenant, its value at the tenant's last change."""

    __slots__ = ("_all_at", "_of", "generation")

    def __init__(self) -> None:
        self.generation = 0
        """Moves with every change, of any partition."""
        self._of: dict[str, int] = {}
        """Per tenant: :attr:`generation` at its last change (one int per tenant seen)."""
        self._all_at = 0
        """:attr:`generation` at the last change of every partition."""

    def moved(self, tenant: str | None) -> None:
        """Note a change of ``tenant``'s partition (``None``: of unknown partition, so of
        every one)."""
        self.generation += 1
        if tenant is None:
            self._of.clear()
            self._all_at = self.generation
        else:
            self._of[tenant] = self.generation

    def of(self, tenant: str) -> int:
        """Moves whenever ``tenant``'s partition changed, not when another's did."""
        return self._of.get(tenant, self._all_at)
