"""The peer directory, least knowledge: each node learns only the peers its roles need.

Candidates are always limited to the asking node's tenant and shared infrastructure
(tenant ``provider``), and to nodes heard from recently (not ``unreachable``).  Among them,
a node sees the union of what each of its roles grants:

================================  ========================================================
role                              sees
================================  ========================================================
mobile-edge (and a node with no   at most ``MOBILE_LIMIT`` entry nodes: those it measured,
carrier role)                     nearest first, then entries of its region; never relays,
                                  exits or service hosts, never the whole topology
entry, relay                      its neighbours (nodes it measured or that measured it),
                                  and relays and exits of its region
exit                              its neighbours and service hosts of its region
service-host, storage,            its neighbours
update-cache
observer, route-coordinator,      every node of its tenant and shared infrastructure
control-plane
================================  ========================================================

Every entry carries the peer's signed node record, so the node verifies public keys and
roles against the authority key itself.

The directory's ``version`` (:func:`directory_version`, also in every heartbeat reply) is
an opaque number that moves whenever any directory could change: a node record changes
(the registry's store revision), a node turns visible or ``unreachable``, or a live node's
region, endpoints, transports, measured peers or relay facts change (the heartbeat table's
visibility generation), or the operator drains or undrains a node.  A node refetches
when it differs from the one it holds; it does not move with health or RTT values alone,
so those may be up to one such change old.

A ``mobile`` directory has its own, narrower version (:func:`version_for`): it moves
only when what that directory can show moves — an entry of the node's tenant or shared
infrastructure, of its region or measured by it, enrolling, changing its record, turning
visible or unreachable, or changing its region, endpoints, transports or relay facts,
or a drain or undrain — or the node's own region or set of measured entries changes.
Before, every device refetched its directory whenever *any* node enrolled, renewed its
record or connected somewhere: at 1000 devices that was a refetch storm of O(N^2)
directory builds (issue 17, docs/fleet.md).

**Deltas** (:func:`directory_document`): a node that sends the ``cursor`` of the
directory it holds gets only the entries of its view that changed since then, the ids
that left it (``removed``; a ``mobile`` view, at most ``MOBILE_LIMIT`` entries, sends
its member ``ids`` instead) and its placement.  A change is noted per node in the
heartbeat table's change log (:mod:`accessfabric.control.server.directory_log`), so a node of
another tenant, or one whose view the changed node cannot be in, gets an empty delta.
No cursor, a cursor the bounded log no longer covers, a drain or undrain since the
cursor (the cursor names the set of drained nodes), or a change of the asking node
itself (its record, region: its whole view may move) gets the whole directory.

A ``tenant`` or ``neighbours`` delta is **incremental** (ADR 0043): made from the
changed nodes alone (:func:`_shown`, one health evaluation each), not from a rebuild of
the view over the partition; the replica remembers per such node what it last served
(:class:`_Served`: the cursor, the view's inputs, the ids the node's copy holds), so a
change of the node's own measured peers is a delta too (:func:`_own_change`) and
``removed`` names exactly the ids its copy holds that its view no longer shows.
"""

from __future__ import annotations

import base64
import hashlib
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from accessfabric.control.client.facts import peer_ids
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.control.server.drains import NodeDrains
from accessfabric.control.server.heartbeats import Health, HeartbeatTable
from accessfabric.control.server.leasing import SHARED_TENANT, node_facts
from accessfabric.control.server.placement import EntryCandidate, place
from accessfabric.control.server.planning.policy import RoutePolicy, carrier_refusal
from accessfabric.control.server.registry import NodeRegistry, RegisteredNode, record_json

MOBILE_LIMIT = 8
FULL_VIEW = frozenset({Role.OBSERVER, Role.ROUTE_COORDINATOR, Role.CONTROL_PLANE})
NEIGHBOUR_ROLES = frozenset(
    {Role.ENTRY, Role.RELAY, Role.EXIT, Role.SERVICE_HOST, Role.STORAGE, Role.UPDATE_CACHE}
)
REGION_GRANTS: dict[Role, frozenset[Role]] = {
    Role.ENTRY: frozenset({Role.RELAY, Role.EXIT}),
    Role.RELAY: frozenset({Role.RELAY, Role.EXIT}),
    Role.EXIT: frozenset({Role.SERVICE_HOST}),
}
CARRIER_ROLES = frozenset({Role.ENTRY, Role.RELAY, Role.EXIT, Role.SERVICE_HOST})


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectoryEntry:
    node: RegisteredNode
    health: Health
    region: str
    endpoints: tuple[str, ...]
    transports: tuple[str, ...]
    rtt_ms: float | None
    """RTT the asking node measured to this peer, if it did."""
    draining: bool = False
    """The operator drains this peer (:mod:`accessfabric.control.server.drains`)."""

    def to_json(self) -> dict[str, Any]:
        record = self.node.record
        return {
            "node_id": record.node_id,
            "roles": sorted(role.value for role in record.roles),
            "tenant": record.tenant,
            "revision": record.revision,
            "record": base64.b64encode(self.node.blob).decode("ascii"),
            "health": self.health.value,
            "region": self.region,
            "endpoints": list(self.endpoints),
            "transports": list(self.transports),
            "rtt_ms": self.rtt_ms,
            "draining": self.draining,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Directory:
    version: int
    scope: str
    """Which rule produced it (``mobile``, ``neighbours``, ``tenant``), for operators."""
    entries: tuple[DirectoryEntry, ...]
    placement: tuple[str, ...] = ()
    """``mobile`` scope: the entries in the order the node should use them (primary
    first, then alternates; :mod:`accessfabric.control.server.placement`)."""


def _scope(roles: frozenset[Role]) -> str:
    if roles & FULL_VIEW:
        return "tenant"
    if roles & NEIGHBOUR_ROLES:
        return "neighbours"
    return "mobile"


def directory_version(
    registry: NodeRegistry, heartbeats: HeartbeatTable, now: float, drains: NodeDrains | None = None
) -> int:
    """The version of every directory at ``now``: compare for equality only (48 bits)."""
    text = f"{heartbeats.epoch}:{registry.version}:{heartbeats.visibility(now)}"
    if drains is not None:
        text += f":{drains.digest()}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=6).digest(), "big")


@dataclass
class _EntryDigests:
    """Per heartbeat table: the digest of each (tenant, region)'s entries, for one
    (registry version, visibility generation); recomputed when either moves."""

    key: tuple[int, int] = (-1, -1)
    by_partition: dict[tuple[str, str], bytes] = field(default_factory=dict)


_DIGESTS: weakref.WeakKeyDictionary[HeartbeatTable, _EntryDigests] = weakref.WeakKeyDictionary()


def _entry_facts(node: RegisteredNode, heartbeats: HeartbeatTable, now: float) -> bytes:
    """What of one entry a mobile directory shows or selects on (b"" when not shown)."""
    state = heartbeats.get(node.node_id)
    if state is None:
        return b""
    if heartbeats.health(node.node_id, now, node.record.revision).health is Health.UNREACHABLE:
        return b""
    f = state.facts
    relay = (f.relay_opt_in, f.charging, f.metered, f.trust_tier)
    return repr((node.node_id, node.record.revision, f.region, f.endpoints, f.transports,
                 relay)).encode()  # fmt: skip


def _entries_digest(
    tenant: str, region: str, registry: NodeRegistry, heartbeats: HeartbeatTable, now: float
) -> bytes:
    """What of ``tenant``'s (and shared) entries of ``region`` a mobile directory shows or
    selects on: through the same indexes as the view (:func:`_mobile_pool`), O(region)."""
    memo = _DIGESTS.get(heartbeats)
    if memo is None:
        memo = _DIGESTS[heartbeats] = _EntryDigests()
    key = (registry.version, heartbeats.visibility(now))
    if memo.key != key:
        memo.key, memo.by_partition = key, {}
    digest = memo.by_partition.get((tenant, region))
    if digest is None:
        h = hashlib.blake2b(digest_size=12)
        for node in _mobile_pool(tenant, region, {}, registry, heartbeats):
            if node.record.tenant in (tenant, SHARED_TENANT):
                h.update(_entry_facts(node, heartbeats, now))
        digest = memo.by_partition[(tenant, region)] = h.digest()
    return digest


def version_for(
    asking: RegisteredNode,
    registry: NodeRegistry,
    heartbeats: HeartbeatTable,
    now: float,
    drains: NodeDrains | None = None,
) -> int:
    """The version of ``asking``'s directory (heartbeat replies and the directory carry it).

    ``mobile`` scope: its own narrow version (module docstring): its region's entries of
    its partition, and the entries it measured; other scopes: the global
    :func:`directory_version`.  Both move with every drain and undrain."""
    if _scope(asking.record.roles) != "mobile":
        return directory_version(registry, heartbeats, now, drains)
    me = asking.record
    own = heartbeats.get(me.node_id)
    region = (own.facts.region or "default") if own else "default"
    measured = sorted(peer_ids(own.facts.peers)) if own else []
    h = hashlib.blake2b(digest_size=6)
    h.update(f"mobile:{heartbeats.epoch}:{me.revision}:{region}:{','.join(measured)}:".encode())
    h.update(_entries_digest(me.tenant, region, registry, heartbeats, now))
    for node_id in measured:
        node = registry.get(node_id)
        mine = node is not None and node.record.tenant in (me.tenant, SHARED_TENANT)
        if node is not None and mine and Role.ENTRY in node.record.roles:
            h.update(_entry_facts(node, heartbeats, now))
    if drains is not None:
        h.update(drains.digest().encode())
    return int.from_bytes(h.digest(), "big")


def build_directory(
    asking: RegisteredNode,
    registry: NodeRegistry,
    heartbeats: HeartbeatTable,
    now: float,
    policy: RoutePolicy | None = None,
    drains: NodeDrains | None = None,
) -> Directory:
    """The peers ``asking`` may know about under the rules above.

    ``policy`` (the route planner's): the ``mobile`` placement names only entries it lets
    carry traffic (:func:`_carriers`), and never a drained one (``drains``) while another
    may be placed.
    """
    version = version_for(asking, registry, heartbeats, now, drains)  # first: sweeps unreachable
    view = _View.of(asking, heartbeats)
    me = asking.record
    candidates: dict[str, DirectoryEntry] = {}
    measured_me: set[str] = set()
    pool = (
        _mobile_pool(me.tenant, view.region, view.measured, registry, heartbeats)
        if view.scope == "mobile"
        else _partition(me.tenant, registry)
    )
    for node in pool:
        found = _candidate(view, node, heartbeats, now, drains)
        if found is None:
            continue
        entry, measures_me = found
        if measures_me:
            measured_me.add(node.node_id)
        candidates[node.node_id] = entry
    chosen: dict[str, DirectoryEntry] = {}
    placement: tuple[str, ...] = ()
    if view.scope == "tenant":
        chosen = candidates
    elif view.scope == "neighbours":
        for node_id, entry in candidates.items():
            if view.neighbour_shows(entry, node_id in measured_me):
                chosen[node_id] = entry
    else:
        own_region = view.region
        entries = [e for e in candidates.values() if Role.ENTRY in e.node.record.roles]
        entries = [e for e in entries if e.rtt_ms is not None or e.region == own_region]
        entries.sort(key=lambda e: (e.rtt_ms is None, e.rtt_ms or 0.0, e.node.node_id))
        chosen = {e.node.node_id: e for e in entries[:MOBILE_LIMIT]}
        placement = place(
            me.node_id,
            [
                EntryCandidate(
                    node_id=e.node.node_id,
                    sessions=_sessions(heartbeats, e.node.node_id),
                    same_region=e.region == own_region,
                    rtt_ms=e.rtt_ms,
                )
                for e in _carriers(list(chosen.values()), heartbeats, policy or RoutePolicy())
            ],
        )
    ordered = tuple(chosen[k] for k in sorted(chosen))
    return Directory(version=version, scope=view.scope, entries=ordered, placement=placement)


@dataclass(frozen=True, slots=True)
class _View:
    """What of the asking node decides which peers its view shows (its own record and
    last heartbeat): a change of any of it notes the node itself in the change log."""

    me: RegisteredNode
    scope: str
    region: str
    measured: dict[str, float]

    @classmethod
    def of(cls, asking: RegisteredNode, heartbeats: HeartbeatTable) -> _View:
        own = heartbeats.get(asking.node_id)
        return cls(
            me=asking,
            scope=_scope(asking.record.roles),
            region=(own.facts.region or "default") if own else "default",
            measured={p.node_id: p.rtt_ms for p in own.facts.peers} if own else {},
        )

    def neighbour_shows(self, entry: DirectoryEntry, measures_me: bool) -> bool:
        """``neighbours`` scope: a candidate it measured or that measured it, or one of its
        region with a role its roles grant (``REGION_GRANTS``)."""
        node_id = entry.node.node_id
        if node_id in self.measured or measures_me:
            return True
        peer_roles = entry.node.record.roles
        return entry.region == self.region and any(
            peer_roles & REGION_GRANTS.get(role, frozenset()) for role in self.me.record.roles
        )


def _candidate(
    view: _View,
    node: RegisteredNode,
    heartbeats: HeartbeatTable,
    now: float,
    drains: NodeDrains | None,
) -> tuple[DirectoryEntry, bool] | None:
    """``node``'s entry as ``view`` would show it, and whether it measured the asking
    node; ``None`` when it is the asking node, of another partition, or not live.  One
    node's facts only: O(its measured peers), whatever the fleet size."""
    record, me = node.record, view.me.record
    if record.node_id == me.node_id or record.tenant not in (me.tenant, SHARED_TENANT):
        return None
    state = heartbeats.get(record.node_id)
    if state is None:
        return None
    health = heartbeats.health(record.node_id, now, record.revision).health
    if health is Health.UNREACHABLE:
        return None
    entry = DirectoryEntry(
        node=node,
        health=health,
        region=state.facts.region or "default",
        endpoints=state.facts.endpoints,
        transports=state.facts.transports,
        rtt_ms=view.measured.get(record.node_id),
        draining=drains is not None and drains.is_draining(record.node_id),
    )
    return entry, me.node_id in peer_ids(state.facts.peers)


def _shown(
    view: _View,
    node_ids: Iterable[str],
    registry: NodeRegistry,
    heartbeats: HeartbeatTable,
    now: float,
    drains: NodeDrains | None,
) -> dict[str, DirectoryEntry]:
    """Of ``node_ids``, those a ``tenant`` or ``neighbours`` view shows, and their entries.

    Whether a peer is in such a view depends on that peer's record and facts and on the
    asking node's own (:class:`_View`), never on a third node's, so a delta's entries are
    found by looking at the changed nodes alone: O(changes), not O(partition)
    (:func:`directory_document`)."""
    shown: dict[str, DirectoryEntry] = {}
    for node_id in node_ids:
        node = registry.get(node_id)
        found = None if node is None else _candidate(view, node, heartbeats, now, drains)
        if found is None:
            continue
        entry, measures_me = found
        if view.scope == "tenant" or view.neighbour_shows(entry, measures_me):
            shown[node_id] = entry
    return shown


def _partition(tenant: str, registry: NodeRegistry) -> list[RegisteredNode]:
    """The nodes a ``tenant`` or ``neighbours`` view may show: its tenant's and shared
    infrastructure, through the registry's by-tenant index (O(partition), not O(fleet))."""
    nodes = registry.of_tenant(tenant)
    if tenant != SHARED_TENANT:
        nodes += registry.of_tenant(SHARED_TENANT)
    return nodes


def _mobile_pool(
    tenant: str,
    region: str,
    measured: dict[str, float],
    registry: NodeRegistry,
    heartbeats: HeartbeatTable,
) -> list[RegisteredNode]:
    """The entries a ``mobile`` view may show: of its tenant or shared, measured by the
    node or of its region — looked up through the registry's entries-by-tenant and the
    heartbeat table's nodes-by-region indexes, so a device's fetch costs O(its region's
    nodes or its partition's entries, whichever is smaller), not O(fleet)."""
    tenants = (tenant, SHARED_TENANT)
    in_region = heartbeats.in_region(region)
    pool: dict[str, RegisteredNode] = {}
    if len(in_region) <= sum(registry.entry_count(t) for t in tenants):
        for node_id in in_region:
            node = registry.get(node_id)
            if node is not None and Role.ENTRY in node.record.roles:
                pool[node_id] = node
    else:
        for t in tenants:
            for node in registry.entries_of(t):
                if node.node_id in in_region:
                    pool[node.node_id] = node
    for node_id in measured:
        node = registry.get(node_id)
        if node is not None and Role.ENTRY in node.record.roles:
            pool[node_id] = node
    return [pool[k] for k in sorted(pool)]


def _carriers(
    entries: list[DirectoryEntry], heartbeats: HeartbeatTable, policy: RoutePolicy
) -> list[DirectoryEntry]:
    """The entries a device may be placed on: those the planner lets carry its traffic,
    not drained by the operator.

    A device holds one session, to its placed entry, so an entry the planner refuses as
    a hop (a mobile entry not opted in to relaying, on a metered network or low on
    battery, or below the policy's trust tier) would leave it with no route at all.  When
    none may carry, all of them: the device still holds a session (its status, its
    directory) and moves once one may.
    """
    live = [e for e in entries if not e.draining] or entries
    carriers = [
        e
        for e in live
        if carrier_refusal(node_facts(e.node, heartbeats.get(e.node.node_id)), policy) is None
    ]
    return carriers or live


def _sessions(heartbeats: HeartbeatTable, node_id: str) -> int:
    state = heartbeats.get(node_id)
    return state.facts.sessions if state is not None else 0


def _of_partition(asking: RegisteredNode, node: RegisteredNode | None, tenant: str | None) -> bool:
    """Whether a changed node is of ``asking``'s partition (its tenant or shared; a
    removed node of tenant not noted counts): it may have been in its view before the
    change, whatever its role or region now."""
    tenant = node.record.tenant if node is not None else tenant
    return tenant is None or tenant in (asking.record.tenant, SHARED_TENANT)


SERVED_LIMIT = 16_384
"""Views remembered per heartbeat table (:func:`_own_change`): one per ``tenant`` or
``neighbours`` node that fetched (entries, relays, exits, observers: not devices).  Beyond
it the least recently served is forgotten (its next fetch is a whole directory)."""


@dataclass(slots=True)
class _Served:
    """What a ``tenant`` or ``neighbours`` node was last served: its cursor, the view it
    was made from, and the ids its copy holds since (the node merges each delta)."""

    cursor: str
    revision: int
    region: str
    measured: dict[str, float]
    ids: set[str]


_SERVED: weakref.WeakKeyDictionary[HeartbeatTable, dict[str, _Served]] = weakref.WeakKeyDictionary()


def _own_change(view: _View, served: _Served) -> set[str] | None:
    """When the asking node's own change since it was ``served`` is of the peers it
    measured only (an entry's sessions come and go), the peers whose entry that change
    may have moved: those it began or stopped measuring, or measures at another RTT.
    ``None`` when its view changed otherwise (its record, its region): the whole
    directory then."""
    if served.revision != view.me.record.revision or served.region != view.region:
        return None
    old, new = served.measured, view.measured
    moved = old.keys() ^ new.keys()
    moved.update(n for n, rtt in new.items() if n in old and old[n] != rtt)
    return moved


def directory_document(
    asking: RegisteredNode,
    registry: NodeRegistry,
    heartbeats: HeartbeatTable,
    now: float,
    policy: RoutePolicy | None = None,
    since: str | None = None,
    drains: NodeDrains | None = None,
) -> dict[str, Any]:
    """``GET /v1/directory``: the whole directory, or with ``since`` (the ``cursor`` of the
    one the node holds) the delta since then when the change log still covers it and no
    node was drained or undrained since (the cursor's last part names the drained set).

    A ``tenant`` or ``neighbours`` delta is made from the changed nodes alone
    (:func:`_shown`): an entry node refetching after one change costs the control plane
    O(1), not a rebuild of its view over the whole partition (ADR 0043, "incremental
    directory deltas").  So is one after a change of the peers the asking node measured
    (:func:`_own_change`): its delta adds the peers it began measuring or measures at
    another RTT, and removes those it stopped measuring that it no longer sees.  A
    ``mobile`` delta (at most ``MOBILE_LIMIT`` entries, from its region's pool) is still
    built whole: its placement orders every member."""
    scope = _scope(asking.record.roles)
    version = version_for(asking, registry, heartbeats, now, drains)  # first: sweeps unreachable
    log = heartbeats.changes
    drained = drains.digest() if drains is not None else "-"
    changed = None
    if since is not None:
        position, _, since_drained = since.rpartition(".")
        changed = log.since(position) if since_drained == drained else None
    head: dict[str, Any] = {
        "version": version,
        "scope": scope,
        "cursor": f"{log.cursor()}.{drained}",
    }
    if scope == "mobile":
        return _whole_or_cut(asking, registry, heartbeats, now, policy, drains, since,
                             changed, head)  # fmt: skip
    view = _View.of(asking, heartbeats)
    table = _SERVED.get(heartbeats)
    if table is None:
        table = _SERVED[heartbeats] = {}
    held = table.pop(asking.node_id, None)
    if held is not None:
        table[asking.node_id] = held  # most recently served last: evicted last
    own: set[str] | None = None
    if changed is not None and held is not None and held.cursor == since:
        own = _own_change(view, held) if asking.node_id in changed else set()
    if changed is None or held is None or own is None:
        built = build_directory(asking, registry, heartbeats, now, policy, drains)
        while len(table) >= SERVED_LIMIT and asking.node_id not in table:
            del table[next(iter(table))]  # the least recently served
        table[asking.node_id] = _Served(
            cursor=head["cursor"], revision=asking.record.revision, region=view.region,
            measured=view.measured, ids={entry.node.node_id for entry in built.entries},
        )  # fmt: skip
        return {
            **head,
            "placement": [],
            "delta": False,
            "node_record": record_json(asking),
            "entries": [entry.to_json() for entry in built.entries],
        }
    looked_at = (changed.keys() - {asking.node_id}) | own
    shown = _shown(view, looked_at, registry, heartbeats, now, drains)
    removed = {node_id for node_id in looked_at if node_id not in shown and node_id in held.ids}
    held.ids -= removed
    held.ids.update(shown)
    held.cursor, held.measured = head["cursor"], view.measured
    return {
        **head,
        "placement": [],
        "delta": True,
        "since": since,
        "entries": [shown[node_id].to_json() for node_id in sorted(shown)],
        "removed": sorted(removed),
    }


def _whole_or_cut(
    asking: RegisteredNode,
    registry: NodeRegistry,
    heartbeats: HeartbeatTable,
    now: float,
    policy: RoutePolicy | None,
    drains: NodeDrains | None,
    since: str | None,
    changed: dict[str, str | None] | None,
    head: dict[str, Any],
) -> dict[str, Any]:
    """A ``mobile`` directory: built whole (its placement orders every member), sent
    whole or as the changed members and the member ids."""
    built = build_directory(asking, registry, heartbeats, now, policy, drains)
    head["placement"] = list(built.placement)
    if changed is None or asking.node_id in changed:
        return {
            **head,
            "delta": False,
            "node_record": record_json(asking),
            "entries": [entry.to_json() for entry in built.entries],
        }
    shown = {entry.node.node_id: entry for entry in built.entries}
    entries = [shown[node_id].to_json() for node_id in sorted(changed) if node_id in shown]
    document = {**head, "delta": True, "since": since, "entries": entries}
    if any(_of_partition(asking, registry.get(n), t) for n, t in changed.items()):
        # at most MOBILE_LIMIT members: the ids, not removals; whenever a node of its
        # partition changed (an entry that left its region or lost its role was a member)
        document["ids"] = sorted(shown)
    return document
