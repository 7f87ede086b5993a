"""Route leases: plan (source, service) with the route planner, then sign one lease per route.

The planner sees a :class:`~accessfabric.control.server.planning.model.FabricGraph` built from the
registry (roles, tenant, trust tier) and the latest heartbeats (placement, pressure, device
state, measured links); the service map comes from :class:`ServiceDirectory` (only serving
replicas, so routes follow a failover).  The snapshot is rebuilt when enrollment, roles or
services change, and at most every ``snapshot_max_age`` seconds for heartbeats alone.

Each (source, service) has route *slots*: 0 is the primary, 1.. the alternates.  A slot has a
stable ``route_id`` and an ``epoch`` kept at ``/routes/<source>/<service>``; when a slot's
hops change its epoch goes up (by compare-and-swap), which fences the leases of its old
path at every hop that has seen the new one.  The key's ``mod_revision`` is the fencing
token of every lease issued from it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from accessfabric.control.client.facts import MAX_PEERS
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.objects import RouteLease
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.control.server.drains import NodeDrains
from accessfabric.control.server.heartbeats import HeartbeatState, HeartbeatTable
from accessfabric.control.server.planner import (
    FabricGraph,
    LinkObservation,
    MobileFacts,
    NodeFacts,
    NoRouteError,
    Reason,
    RoutePlanner,
    RoutePolicy,
    UnknownNodeError,
    UnknownServiceError,
)
from accessfabric.control.server.registry import NodeRegistry, RegisteredNode
from accessfabric.control.server.services import ServiceDirectory
from accessfabric.control.server.store.base import Clock, Store
from accessfabric.wire.registry import TrafficClass

KEY_PREFIX = "/routes/"
DEFAULT_ROUTE_LEASE_TTL = 300.0
DEFAULT_SNAPSHOT_MAX_AGE = 1.0
SHARED_TENANT = "provider"
"""Nodes of this tenant are shared infrastructure: they may carry any tenant's traffic."""
MAX_CAS_ATTEMPTS = 16


class LeaseRefused(Exception):
    """No route lease can be issued; ``code`` is stable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class SnapshotBehind(Exception):
    """The asking node joined after its coordinator's snapshot was built, and the next
    rebuild is due in ``wait`` seconds: ask again then (``RouteLeasing.issue`` with
    ``may_wait``; the lease handler waits and asks once more, ADR 0043)."""

    def __init__(self, wait: float) -> None:
        self.wait = wait
        super().__init__(f"the planner's snapshot is rebuilt in {wait:.3f} s")


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedRoute:
    blob: bytes
    lease: RouteLease
    score: float
    reasons: tuple[Reason, ...]
    disjoint: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseGrant:
    service: str
    traffic_class: TrafficClass
    routes: tuple[IssuedRoute, ...]
    notes: tuple[str, ...]

    @property
    def primary(self) -> IssuedRoute:
        return self.routes[0]


def route_id_for(source: str, service: str, slot: int) -> int:
    digest = hashlib.sha256(f"{source}|{service}|{slot}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def node_facts(
    node: RegisteredNode, state: HeartbeatState | None, *, draining: bool = False
) -> NodeFacts:
    """What the planner needs of one node: the record's word on roles, the heartbeat's
    facts, and whether the operator drains it (:mod:`accessfabric.control.server.drains`)."""
    record = node.record
    roles = frozenset(record.roles)
    tier = record.trust_tier
    if state is None:
        return NodeFacts(
            node_id=record.node_id,
            roles=roles,
            tenant=record.tenant,
            region="default",
            failure_domain=f"node/{record.node_id}",
            trust_tier=tier,
            shared=record.tenant == SHARED_TENANT,
            draining=draining,
        )
    facts = state.facts
    if facts.trust_tier is not None:
        tier = min(tier, facts.trust_tier)  # a node may lower its tier, never raise it
    mobile = None
    if Role.MOBILE_EDGE in record.roles or facts.battery_percent is not None:
        mobile = MobileFacts(
            battery_percent=100.0 if facts.battery_percent is None else facts.battery_percent,
            charging=facts.charging,
            metered=facts.metered,
            relay_opt_in=facts.relay_opt_in,
        )
    return NodeFacts(
        node_id=record.node_id,
        roles=roles,
        tenant=record.tenant,
        region=facts.region or "default",
        failure_domain=facts.failure_domain or f"node/{record.node_id}",
        trust_tier=tier,
        shared=record.tenant == SHARED_TENANT,
        mobile=mobile,
        cpu_pressure=facts.cpu,
        memory_pressure=facts.memory,
        queue_pressure=min(1.0, facts.queue_depth / 10_000),
        draining=draining,
    )


GraphMemo = dict[
    str, tuple[RegisteredNode, HeartbeatState, bool, NodeFacts, tuple[LinkObservation, ...], bool]
]
"""Per node: what :func:`build_graph` made of it last time, and from which record,
heartbeat and drain state — (record, heartbeat, draining, facts, measured links, full list)."""


def build_graph(
    registry: NodeRegistry,
    heartbeats: HeartbeatTable,
    now: float,
    drains: NodeDrains | None = None,
    *,
    pool: Iterable[RegisteredNode] | None = None,
    memo: GraphMemo | None = None,
) -> FabricGraph:
    """The planner's snapshot: every node heard from recently (of ``pool``, a partition:
    :mod:`accessfabric.control.server.coordinators`; default the whole registry), every
    link they measured between them.

    A link measured in one direction only is assumed symmetric (the reverse observation
    may simply not have been reported yet) — unless the other end heartbeated later
    without it: the newer report is the better word.  A device whose entry died re-homes
    and says so in its next heartbeat, while the dead entry's last heartbeat, listing the
    device, counts until the entry is unreachable (4.5 intervals); mirrored, it had the
    planner route the device's streams through the dead entry (issue 17, ADR 0037).
    A heartbeat that lists ``MAX_PEERS`` peers may have left the link out for room (a
    hub with more sessions than that), so its silence is no word against the link.

    With ``memo`` (a route coordinator's, kept between its builds), a node whose record,
    heartbeat and drain state are the very ones of the last build reuses the facts and
    links made of them then: a rebuild makes new objects only for the nodes heard of
    since (at 1000 devices, reading the entries' peer tables and making every node's
    facts was most of a rebuild; ADR 0043).  ``memo`` is left holding this build's nodes.
    """
    nodes = []
    links: dict[tuple[str, str], LinkObservation] = {}
    heard_at: dict[str, float] = {}
    full_lists: set[str] = set()
    made: GraphMemo = {}
    for node in registry.all() if pool is None else pool:
        node_id = node.node_id
        state = heartbeats.get(node_id)
        if state is None or not heartbeats.live(node_id, now):
            continue
        heard_at[node_id] = state.received_at
        draining = drains is not None and drains.is_draining(node_id)
        hit = None if memo is None else memo.get(node_id)
        if hit is not None and hit[0] is node and hit[1] is state and hit[2] == draining:
            made[node_id] = hit
        else:
            peers = state.facts.peers
            own = tuple(
                LinkObservation(
                    src=node_id,
                    dst=peer.node_id,
                    rtt_ms=peer.rtt_ms,
                    jitter_ms=peer.jitter_ms,
                    loss=peer.loss,
                    bandwidth_mbps=peer.bandwidth_mbps,
                    queue_depth=peer.queue_depth,
                    retransmit_rate=peer.retransmit_rate,
                )
                for peer in peers
            )
            facts = node_facts(node, state, draining=draining)
            made[node_id] = hit = (node, state, draining, facts, own, len(peers) >= MAX_PEERS)
        if hit[5]:
            full_lists.add(node_id)
        nodes.append(hit[3])
        for link in hit[4]:
            links[(node_id, link.dst)] = link
    if memo is not None:
        memo.clear()
        memo.update(made)
    for (src, dst), link in list(links.items()):
        if (dst, src) in links:
            continue
        if dst in full_lists or heard_at.get(dst, 0.0) <= heard_at[src]:
            links[(dst, src)] = LinkObservation(
                src=dst,
                dst=src,
                rtt_ms=link.rtt_ms,
                jitter_ms=link.jitter_ms,
                loss=link.loss,
                bandwidth_mbps=link.bandwidth_mbps,
            )
    return FabricGraph.build(nodes, links.values())


class PartitionPlanners(Protocol):
    """Route coordinators per partition (control/server/coordinators.py)."""

    def planner(
        self, tenant: str, now: float, source: str | None = None, *, may_wait: bool = False
    ) -> RoutePlanner: ...

    def planned(self, tenant: str) -> None: ...


class RouteLeasing:
    """Plans and signs route leases: with ``coordinators``, each source's routes by its
    partition's coordinator; without, by one planner of the whole fleet."""

    def __init__(
        self,
        store: Store,
        authority: Authority,
        registry: NodeRegistry,
        heartbeats: HeartbeatTable,
        services: ServiceDirectory,
        *,
        clock: Clock = time.time,
        lease_ttl: float = DEFAULT_ROUTE_LEASE_TTL,
        policy: RoutePolicy | None = None,
        snapshot_max_age: float = DEFAULT_SNAPSHOT_MAX_AGE,
        alternates: int = 2,
        drains: NodeDrains | None = None,
        coordinators: PartitionPlanners | None = None,
    ) -> None:
        self._store = store
        self.coordinators = coordinators
        self._authority = authority
        self._registry = registry
        self._heartbeats = heartbeats
        self._services = services
        self._clock = clock
        self.lease_ttl = lease_ttl
        self.policy = policy or RoutePolicy()
        self._snapshot_max_age = snapshot_max_age
        self._alternates = alternates
        self._drains = drains
        self._planner: RoutePlanner | None = None
        self._built_at = 0.0
        self._built_key: tuple[int, int, int, int] = (-1, -1, -1, -1)

    def planner(self, now: float | None = None) -> RoutePlanner:
        """The current planner, rebuilt when the facts it was built from have moved on
        (for heartbeats alone at most every ``snapshot_max_age``: a rebuild costs ~200 ms
        at 1000 synthetic nodes; rebuilding for every lease request whose source had
        heartbeated since cost a 1000-device fleet's control plane ~40 CPU-s, ADR 0037)."""
        when = self._clock() if now is None else now
        drained = -1 if self._drains is None else self._drains.generation
        key = (
            self._registry.generation,
            self._services.generation,
            self._heartbeats.generation,
            drained,
        )
        fresh = self._planner is not None and key == self._built_key
        only_heartbeats = (
            self._planner is not None
            and key[:2] == self._built_key[:2]
            and key[3] == self._built_key[3]
        )
        if fresh or (only_heartbeats and when - self._built_at < self._snapshot_max_age):
            assert self._planner is not None
            return self._planner
        graph = build_graph(self._registry, self._heartbeats, when, self._drains)
        self._planner = RoutePlanner(graph, self._services.active_map(), policy=self.policy)
        self._built_at, self._built_key = when, key
        return self._planner

    def issue(
        self,
        source: RegisteredNode,
        service: str,
        traffic_class: TrafficClass,
        now: float | None = None,
        *,
        may_wait: bool = False,
    ) -> LeaseGrant:
        """A primary and alternates from ``source`` to ``service``, each a signed lease.

        ``may_wait``: raise :class:`SnapshotBehind` instead of rebuilding the source's
        coordinator's snapshot more often than ``SOURCE_REBUILD_INTERVAL`` for a source
        that joined since (the caller waits and asks again)."""
        when = self._clock() if now is None else now
        tenant = source.record.tenant
        coordinators = self.coordinators
        if coordinators is None:
            planner = self.planner(when)
        else:
            planner = coordinators.planner(tenant, when, source.node_id, may_wait=may_wait)
        if coordinators is not None:
            coordinators.planned(tenant)
        try:
            plan = planner.plan(source.node_id, service, alternates=self._alternates)
        except UnknownNodeError:
            raise LeaseRefused(
                "source_not_live",
                f"node {source.node_id} has not sent a recent heartbeat: the planner does "
                "not know where it is",
            ) from None
        except UnknownServiceError:
            raise LeaseRefused(
                "unknown_service", f"service {service!r} has no serving replica"
            ) from None
        except NoRouteError as exc:
            raise LeaseRefused("no_route", str(exc)) from None
        hops = [route.hops for route in plan.routes]
        slots, fencing_token = self._slots(source.node_id, service, hops)
        now_ms = int(when * 1000)
        issued = []
        for route, (route_id, epoch) in zip(plan.routes, slots, strict=True):
            lease = RouteLease(
                lease_id=secrets.token_bytes(16),
                route_id=route_id,
                epoch=epoch,
                hops=route.hops,
                tenant=source.record.tenant,
                allowed_services=frozenset({service}),
                allowed_classes=frozenset({traffic_class}),
                issued_ms=now_ms,
                expires_ms=now_ms + int(self.lease_ttl * 1000),
                fencing_token=fencing_token,
            )
            issued.append(
                IssuedRoute(
                    blob=self._authority.issue(lease),
                    lease=lease,
                    score=route.score,
                    reasons=route.reasons,
                    disjoint=route.disjoint,
                )
            )
        return LeaseGrant(
            service=service, traffic_class=traffic_class, routes=tuple(issued), notes=plan.notes
        )

    def _slots(
        self, source: str, service: str, hops: list[tuple[str, ...]]
    ) -> tuple[list[tuple[int, int]], int]:
        """``[(route_id, epoch)]`` per route and the fencing token, bumping changed slots."""
        key = f"{KEY_PREFIX}{source}/{service}"
        for _ in range(MAX_CAS_ATTEMPTS):
            entry = self._store.get(key)
            stored: list[dict[str, object]] = [] if entry is None else json.loads(entry.value)
            changed = entry is None or len(stored) < len(hops)
            slots: list[dict[str, object]] = []
            for index, path in enumerate(hops):
                old = stored[index] if index < len(stored) else None
                epoch = int(old["epoch"]) if old else 0  # type: ignore[call-overload]
                if old is None or old["hops"] != list(path):
                    epoch, changed = epoch + 1, True
                slots.append(
                    {
                        "route_id": route_id_for(source, service, index),
                        "epoch": epoch,
                        "hops": list(path),
                    }
                )
            slots.extend(stored[len(hops) :])  # keep the epochs of slots not used this time
            pairs = [(int(s["route_id"]), int(s["epoch"])) for s in slots[: len(hops)]]  # type: ignore[call-overload]
            if not changed:
                assert entry is not None
                return pairs, entry.mod_revision
            expected = 0 if entry is None else entry.mod_revision
            result = self._store.put_if(key, json.dumps(slots).encode(), expected)
            if result.succeeded:
                return pairs, result.revision
        raise LeaseRefused("contended", f"routes of {source} to {service!r} are contended")
