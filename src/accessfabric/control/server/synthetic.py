"""Synthetic fleets for planner tests and the control benchmark.

A fleet has regions on a ring (RTT grows with ring distance); each region has
entries, relays, exits and service hosts spread over four failure domains
(provider/site), opted-in and opted-out phones, observers and storage nodes
that must never carry traffic, and a majority of client devices.  Degrees
are what a real fleet has, not a complete graph:

=================  ==========================================================
node               links (each also observed in the other direction)
=================  ==========================================================
client             2-3 entries in its region, sometimes one in the next region,
                   sometimes a phone relay
phone relay        2 entries and 1-2 relays in its region
entry              6 relays, 2 exits and 2 service hosts in its region
relay              4 relays in its region, 2 in neighbouring regions, 2 exits,
                   3 service hosts, 1 core
core (backbone)    one core in every other region (a full mesh of PoPs); entries
                   and service hosts of its region link to 1-2 cores
exit               4 service hosts in its region
observer/storage   3 relays (they watch; they never relay)
=================  ==========================================================

Infrastructure is mostly provider-owned (``shared``); some relays belong to a
tenant.  Each tenant's services have 2-3 replicas in different regions.  The
same ``(size, seed)`` always gives the same fleet.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from accessfabric.control.server.planning.model import (
    FabricGraph,
    LinkObservation,
    MobileFacts,
    NodeFacts,
    Role,
)

PROVIDER = "provider"
"""The tenant of provider-owned shared infrastructure."""

_NODES_PER_REGION = 2000
_DOMAINS_PER_REGION = 4
_MIX = (
    # (kind, share of a region's nodes; at least 2 of each)
    ("core", 0.0015),
    ("entry", 0.03),
    ("relay", 0.06),
    ("exit", 0.01),
    ("host", 0.02),
    ("phone-relay", 0.03),
    ("watcher", 0.01),
)


@dataclass(frozen=True, slots=True)
class SyntheticFleet:
    """A generated graph, its service directory, and the client nodes routes start from."""

    graph: FabricGraph
    services: dict[str, tuple[str, ...]]
    clients: tuple[str, ...]
    regions: int


def _region_sizes(size: int, regions: int) -> list[int]:
    base, extra = divmod(size, regions)
    return [base + (1 if r < extra else 0) for r in range(regions)]


def generate(
    size: int, *, seed: int = 0, regions: int | None = None, tenants: int = 4
) -> SyntheticFleet:
    """A fleet of about ``size`` nodes (at least 40 per region), reproducible from ``seed``."""
    rng = random.Random(seed)
    regions = regions or max(2, round(size / _NODES_PER_REGION))
    if size < 40 * regions:
        raise ValueError(f"{size} nodes are too few for {regions} regions (40 per region)")
    tenant_names = [f"t{k}" for k in range(tenants)]
    nodes: list[NodeFacts] = []
    kinds: dict[str, list[list[str]]] = {
        kind: [[] for _ in range(regions)]
        for kind in ("core", "entry", "relay", "exit", "host", "phone-relay", "watcher", "client")
    }
    host_tenant: dict[str, str] = {}

    def domain(region: int) -> str:
        d = rng.randrange(_DOMAINS_PER_REGION)
        return f"provider{d % 2}/r{region:02d}-site{d}"

    for region, count in enumerate(_region_sizes(size, regions)):
        counts = {kind: max(2, round(share * count)) for kind, share in _MIX}
        counts["client"] = max(2, count - sum(counts.values()))
        for kind, n in counts.items():
            for i in range(n):
                node_id = f"r{region:02d}-{kind}-{i:04d}"
                kinds[kind][region].append(node_id)
                nodes.append(_node(rng, kind, node_id, region, tenant_names, domain(region)))
                if kind == "host":
                    host_tenant[node_id] = nodes[-1].tenant

    links: list[LinkObservation] = []

    def ring(a: int, b: int) -> int:
        d = abs(a - b)
        return min(d, regions - d)

    def link(a: str, ra: int, b: str, rb: int, *, access: bool = False) -> None:
        base = 2.0 + rng.expovariate(1 / 6.0) + 18.0 * ring(ra, rb)
        if access:
            base += rng.uniform(3.0, 30.0)
        loss = min(0.2, rng.expovariate(1 / 0.004)) if rng.random() < 0.7 else 0.0
        bandwidth = rng.choice((20.0, 50.0, 100.0, 500.0, 1000.0)) * rng.uniform(0.5, 1.0)
        for src, dst in ((a, b), (b, a)):
            links.append(
                LinkObservation(
                    src=src,
                    dst=dst,
                    rtt_ms=round(base * rng.uniform(0.95, 1.05), 2),
                    jitter_ms=round(rng.expovariate(1 / (1.0 + base / 10)), 2),
                    loss=round(loss * rng.uniform(0.8, 1.2), 5),
                    bandwidth_mbps=round(bandwidth, 1),
                    queue_depth=float(rng.randrange(0, 40)),
                    retransmit_rate=round(min(1.0, loss * rng.uniform(1.0, 2.0)), 5),
                )
            )

    def pick(kind: str, region: int, k: int) -> list[str]:
        pool = kinds[kind][region % regions]
        return rng.sample(pool, min(k, len(pool)))

    for r in range(regions):
        nxt = (r + 1) % regions
        for client in kinds["client"][r]:
            for e in pick("entry", r, rng.choice((2, 3))):
                link(client, r, e, r, access=True)
            if rng.random() < 0.3:
                link(client, r, pick("entry", nxt, 1)[0], nxt, access=True)
            if rng.random() < 0.2:
                link(client, r, pick("phone-relay", r, 1)[0], r, access=True)
        for phone in kinds["phone-relay"][r]:
            for e in pick("entry", r, 2):
                link(phone, r, e, r, access=True)
            for x in pick("relay", r, rng.choice((1, 2))):
                link(phone, r, x, r, access=True)
        for i, core in enumerate(kinds["core"][r]):
            for other in range(r + 1, regions):
                peers = kinds["core"][other]
                link(core, r, peers[i % len(peers)], other)
        for e in kinds["entry"][r]:
            for x in pick("core", r, rng.choice((1, 2))):
                link(e, r, x, r)
            for x in pick("relay", r, 6):
                link(e, r, x, r)
            for x in pick("exit", r, 2):
                link(e, r, x, r)
            for x in pick("host", r, 2):
                link(e, r, x, r)
        for relay in kinds["relay"][r]:
            for x in pick("relay", r, 4):
                if x != relay:
                    link(relay, r, x, r)
            for other in {(r - 1) % regions, nxt} - {r}:
                x = pick("relay", other, 1)[0]
                link(relay, r, x, other)
            for x in pick("exit", r, 2):
                link(relay, r, x, r)
            for x in pick("host", r, 3):
                link(relay, r, x, r)
            link(relay, r, pick("core", r, 1)[0], r)
        for host in kinds["host"][r]:
            for x in pick("core", r, rng.choice((1, 2))):
                link(host, r, x, r)
        for x_exit in kinds["exit"][r]:
            for x in pick("host", r, 4):
                link(x_exit, r, x, r)
        for watcher in kinds["watcher"][r]:
            for x in pick("relay", r, 3):
                link(watcher, r, x, r)

    services: dict[str, tuple[str, ...]] = {}
    for r in range(regions):
        for j, host in enumerate(kinds["host"][r]):
            if j % 2:
                continue
            tenant = host_tenant[host]
            replicas = [host]
            for other in ((r + 1) % regions, (r + regions // 2) % regions):
                same = [h for h in kinds["host"][other] if host_tenant[h] == tenant]
                if same and len(replicas) < rng.choice((2, 3)):
                    candidate = rng.choice(same)
                    if candidate not in replicas:
                        replicas.append(candidate)
            services[f"{tenant}-svc-r{r:02d}-{j:03d}"] = tuple(replicas)

    clients = tuple(c for region in kinds["client"] for c in region)
    graph = FabricGraph.build(nodes, links)
    return SyntheticFleet(graph=graph, services=services, clients=clients, regions=regions)


def _node(
    rng: random.Random, kind: str, node_id: str, region: int, tenants: list[str], domain: str
) -> NodeFacts:
    def pressure() -> float:
        return round(min(1.0, rng.betavariate(1.5, 6.0)), 3)

    base = NodeFacts(
        node_id=node_id,
        roles=frozenset(),
        tenant=rng.choice(tenants),
        region=f"region-{region:02d}",
        failure_domain=domain,
        reliability=round(1.0 - min(0.5, rng.expovariate(1 / 0.02)), 4),
        cpu_pressure=pressure(),
        memory_pressure=pressure(),
        queue_pressure=pressure(),
    )
    if kind in ("core", "entry", "exit") or (kind == "relay" and rng.random() < 0.8):
        role = {"entry": Role.ENTRY, "exit": Role.EXIT}.get(kind, Role.RELAY)
        return replace(
            base,
            roles=frozenset({role}),
            tenant=PROVIDER,
            shared=True,
            trust_tier=3,
            operator_cost=rng.choice((0.0, 0.0, 0.5, 1.0)),
        )
    if kind == "relay":
        return replace(base, roles=frozenset({Role.RELAY}), trust_tier=2)
    if kind == "host":
        roles = {Role.SERVICE_HOST} | ({Role.ENTRY} if rng.random() < 0.1 else set())
        return replace(base, roles=frozenset(roles), trust_tier=3)
    if kind == "phone-relay":
        mobile = MobileFacts(
            battery_percent=float(rng.randrange(5, 101)),
            charging=rng.random() < 0.4,
            metered=rng.random() < 0.3,
            relay_opt_in=rng.random() < 0.7,
        )
        return replace(
            base, roles=frozenset({Role.MOBILE_EDGE, Role.RELAY}), trust_tier=1, mobile=mobile
        )
    if kind == "watcher":
        role = rng.choice((Role.OBSERVER, Role.STORAGE, Role.UPDATE_CACHE))
        return replace(base, roles=frozenset({role}), tenant=PROVIDER, shared=True)
    if rng.random() < 0.5:
        phone = MobileFacts(battery_percent=float(rng.randrange(5, 101)))
        return replace(base, roles=frozenset({Role.MOBILE_EDGE}), trust_tier=1, mobile=phone)
    return replace(base, trust_tier=2)
