"""Route coordinators per partition (issue 17, ADR 0038).

A route for a source of tenant T can only pass through T's nodes and shared
infrastructure (tenant ``provider``, when the policy allows shared nodes: the planner's
``tenant_allows``), so the tenant is the planner's natural partition.  Before, one
planner held the whole fleet: every snapshot rebuild read every node's facts and links
(O(fleet)), and a route of one tenant was planned over a graph holding every other's.

Each :class:`RouteCoordinator` plans the routes of one partition only: its snapshot is
built from the registry's by-tenant index (the partition's nodes and the shared ones),
so a rebuild costs O(partition) and a coordinator never holds another tenant's node or
link.  :class:`RouteCoordinators` holds them for a control replica, built on first use,
the least recently used dropped beyond ``max_coordinators`` (each holds the shared
infrastructure too); :class:`~accessfabric.control.server.leasing.RouteLeasing` asks the
source's coordinator for every lease.  Every generation it rebuilds on is its
partition's (its tenant's, and the shared infrastructure's when it holds them; ADR
0043): at once when a node it may hold is replaced or removed
(:meth:`NodeRegistry.tenant_known_generation`: not a new node's first record, which no
snapshot holds before its first heartbeat) or the partition's services or drains
changed, at most every ``snapshot_max_age`` seconds for its heartbeats alone, so a burst
of lease requests is planned on one snapshot; another tenant's heartbeat, enrollment,
drain or service change rebuilds nothing here.  A source that joined since the snapshot
was built waits for one rebuild shared with the others that joined
(:data:`SOURCE_REBUILD_INTERVAL`), and a rebuild reuses what it made of every node that
did not change (``build_graph``'s memo).  A snapshot only heartbeat-aged (older than
``snapshot_max_age``, nothing structural moved) still answers a lease request whose
source it holds with the links it reports now, up to :data:`AGED_SNAPSHOT_BOUND` times
that age: the rebuild runs after the request, on the event loop, one at a time per
coordinator (ADR 0043, amendment 4).  ``max_coordinators`` is
``ControlConfig.max_route_coordinators`` (``control serve --max-route-coordinators``):
keep it above the number of tenants that request leases, or round-robin requests of more
tenants than that rebuild a snapshot every time.

Regions are not a partition: a route may and often must cross them.  Nodes holding the
``route-coordinator`` role get the tenant-wide directory but do not plan yet; the
coordinators run in the control replicas (ADR 0038, "What is left").
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from accessfabric.control.server.drains import NodeDrains
from accessfabric.control.server.heartbeats import HeartbeatTable
from accessfabric.control.server.leasing import (
    SHARED_TENANT,
    GraphMemo,
    SnapshotBehind,
    build_graph,
)
from accessfabric.control.server.planner import RoutePlanner, RoutePolicy
from accessfabric.control.server.registry import NodeRegistry, RegisteredNode
from accessfabric.control.server.services import ServiceDirectory
from accessfabric.control.server.store.base import Clock

DEFAULT_MAX_COORDINATORS = 256
SOURCE_REBUILD_INTERVAL = 0.1
"""A lease request whose source is missing from the snapshot but heartbeated after it
was built (a device that just joined) rebuilds it, but at most this often per
coordinator: requests meanwhile wait for the next one (:class:`SnapshotBehind`)."""
AGED_SNAPSHOT_BOUND = 2.0
"""A snapshot older than ``snapshot_max_age`` for heartbeats alone answers lease requests
(its rebuild scheduled after them) until it is this many times that age; older, the
request rebuilds it on its own path, as any structural change does (ADR 0043)."""

Defer = Callable[[Callable[[], None]], object]
"""Runs a callback after the current request (``loop.call_soon``)."""

Key = tuple[int, ...]


@dataclass(slots=True)
class RouteCoordinator:
    """The planner of one partition (a tenant) and what it did."""

    tenant: str
    planner: RoutePlanner | None = None
    built_at: float = 0.0
    built_key: Key = ()
    """The partition generations it was built from (:meth:`RouteCoordinators.key`)."""
    memo: GraphMemo = field(default_factory=dict)
    """Facts and links made of each node at the last build (reused when unchanged)."""
    builds: int = 0
    late_builds: int = 0
    """Of :attr:`builds`, heartbeat-age rebuilds run after the request that found the
    snapshot aged (not on its path)."""
    rebuild_pending: bool = False
    """A heartbeat-age rebuild is scheduled and has not run yet (at most one)."""
    plans: int = 0
    """Route requests it planned (each a primary and its alternates)."""

    @property
    def node_ids(self) -> frozenset[str]:
        """The nodes its current snapshot holds."""
        return frozenset(self.planner.graph.nodes) if self.planner is not None else frozenset()


class RouteCoordinators:
    """A control replica's route coordinators, one per partition asked for."""

    def __init__(
        self,
        registry: NodeRegistry,
        heartbeats: HeartbeatTable,
        services: ServiceDirectory,
        *,
        policy: RoutePolicy,
        snapshot_max_age: float,
        drains: NodeDrains | None = None,
        max_coordinators: int = DEFAULT_MAX_COORDINATORS,
        clock: Clock = time.time,
        defer: Defer | None = None,
    ) -> None:
        """``defer`` schedules a heartbeat-age rebuild after the request that found the
        snapshot aged (default: the running event loop's ``call_soon``; with no loop
        running, the request rebuilds it, as before); ``clock`` dates that rebuild."""
        self._registry = registry
        self._heartbeats = heartbeats
        self._services = services
        self.policy = policy
        self._snapshot_max_age = snapshot_max_age
        self._drains = drains
        self.max_coordinators = max_coordinators
        self._clock = clock
        self._defer = defer
        self._coordinators: OrderedDict[str, RouteCoordinator] = OrderedDict()
        self.total_plans = 0
        self.total_builds = 0
        """Across every coordinator ever held (``/metrics``; a dropped one's count stays)."""

    def get(self, tenant: str) -> RouteCoordinator | None:
        return self._coordinators.get(tenant)

    def __len__(self) -> int:
        return len(self._coordinators)

    def partition(self, tenant: str) -> list[RegisteredNode]:
        """The nodes a route of ``tenant`` may use: its own and (policy allowing) shared."""
        nodes = self._registry.of_tenant(tenant)
        if tenant != SHARED_TENANT and self.policy.allow_shared_nodes:
            nodes += self._registry.of_tenant(SHARED_TENANT)
        return nodes

    def coordinator(self, tenant: str) -> RouteCoordinator:
        """``tenant``'s coordinator (made on first use; the least recently used beyond
        ``max_coordinators`` is dropped)."""
        found = self._coordinators.get(tenant)
        if found is None:
            found = self._coordinators[tenant] = RouteCoordinator(tenant)
            while len(self._coordinators) > self.max_coordinators:
                self._coordinators.popitem(last=False)
        else:
            self._coordinators.move_to_end(tenant)
        return found

    def key(self, tenant: str) -> Key:
        """The generations ``tenant``'s snapshot is built from: its partition's only (its
        own tenant's and, when it holds them, the shared nodes'), never another tenant's
        (ADR 0038, ADR 0043) — registry changes of nodes it may hold, services, drains,
        then heartbeats (the last part: rebuilt at most every ``snapshot_max_age``)."""
        tenants = [tenant]
        if tenant != SHARED_TENANT and self.policy.allow_shared_nodes:
            tenants.append(SHARED_TENANT)
        drains = self._drains
        return (
            *(self._registry.tenant_known_generation(t) for t in tenants),
            *(self._services.tenant_generation(t) for t in tenants),
            *(-1 if drains is None else drains.tenant_generation(t) for t in tenants),
            *(self._heartbeats.tenant_generation(t) for t in tenants),
        )

    def planner(
        self, tenant: str, now: float, source: str | None = None, *, may_wait: bool = False
    ) -> RoutePlanner:
        """``tenant``'s planner, rebuilt when the facts it was built from moved on: at once
        for registry, service and drain changes of its partition, at most every
        ``snapshot_max_age`` for heartbeats alone — and when ``source`` (the node asking)
        heartbeated after the snapshot was built and is not in it (it just joined) or is
        in it with other links than it reports now.  That
        rebuild happens at most every :data:`SOURCE_REBUILD_INTERVAL`; before, with
        ``may_wait``, :class:`SnapshotBehind` says how long to wait for it (without, the
        snapshot is rebuilt at once).  A snapshot aged by heartbeats alone that holds
        ``source`` with its current links answers, up to :data:`AGED_SNAPSHOT_BOUND`
        times ``snapshot_max_age``, and its rebuild is scheduled after the request."""
        c = self.coordinator(tenant)
        key = self.key(tenant)
        planner = c.planner
        if planner is not None:
            beats = len(key) // 4 * 3  # where the heartbeat generations start
            same = key[:beats] == c.built_key[:beats]  # no structural change (drain, ...)
            age = now - c.built_at
            fresh = key == c.built_key or (same and age < self._snapshot_max_age)
            behind = self._source_behind(c, source, now)
            if fresh and not behind:
                return planner
            if fresh and may_wait:
                wait = c.built_at + SOURCE_REBUILD_INTERVAL - now
                if wait > 0:
                    raise SnapshotBehind(wait)
            if (
                not fresh
                and same
                and age < AGED_SNAPSHOT_BOUND * self._snapshot_max_age
                and (source is None or source in planner.graph.nodes)
                and not behind
                and self._rebuild_later(tenant, c)
            ):
                return planner
        self._build(tenant, c, now, key)
        assert c.planner is not None
        return c.planner

    def _build(self, tenant: str, c: RouteCoordinator, now: float, key: Key) -> None:
        graph = build_graph(self._registry, self._heartbeats, now, self._drains,
                            pool=self.partition(tenant), memo=c.memo)  # fmt: skip
        c.planner = RoutePlanner(graph, self._services.active_map(), policy=self.policy)
        c.built_at, c.built_key = now, key
        c.builds += 1
        self.total_builds += 1

    def _rebuild_later(self, tenant: str, c: RouteCoordinator) -> bool:
        """Schedule ``c``'s heartbeat-age rebuild after this request, one at a time;
        ``False`` when nothing can run it later (no event loop: rebuild now)."""
        if c.rebuild_pending:
            return True
        defer = self._defer
        if defer is None:
            try:
                defer = asyncio.get_running_loop().call_soon
            except RuntimeError:
                return False
        c.rebuild_pending = True
        defer(lambda: self._late_build(tenant, c))
        return True

    def _late_build(self, tenant: str, c: RouteCoordinator) -> None:
        """The scheduled rebuild: skipped when ``c`` was dropped or rebuilt since."""
        c.rebuild_pending = False
        if self._coordinators.get(tenant) is not c:
            return
        now = self._clock()
        key = self.key(tenant)
        if key == c.built_key or now - c.built_at < self._snapshot_max_age:
            return
        self._build(tenant, c, now, key)
        c.late_builds += 1

    def _source_behind(self, c: RouteCoordinator, source: str | None, now: float) -> bool:
        """``source`` is live, heard of after the snapshot was built, and either not in it
        (it just joined) or in it with other links than it reports now (its first
        heartbeat was taken in before its entry session was up, or it re-homed since):
        planned on this snapshot it would have no first hop, or a lost one."""
        if source is None:
            return False
        state = self._heartbeats.get(source)
        if (
            state is None
            or state.received_at < c.built_at
            or not self._heartbeats.live(source, now)
        ):
            return False
        made = c.memo.get(source)
        if made is None:
            return True
        if made[1] is state:
            return False
        return {link.dst for link in made[4]} != {peer.node_id for peer in state.facts.peers}

    def planned(self, tenant: str) -> None:
        """Count one route request ``tenant``'s coordinator planned."""
        self.coordinator(tenant).plans += 1
        self.total_plans += 1

    def status(self) -> list[dict[str, object]]:
        """Per coordinator: its partition, snapshot size, builds and plans (metrics)."""
        return [
            {"tenant": t, "nodes": len(c.node_ids), "builds": c.builds, "plans": c.plans}
            for t, c in sorted(self._coordinators.items())
        ]
