"""Small hand-made graphs and an independent brute-force route enumerator for planner tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from accessfabric.control.server.planner import (
    FabricGraph,
    LinkObservation,
    MobileFacts,
    NodeFacts,
    Role,
    RoutePolicy,
)

CARRY_ROLES = {Role.ENTRY, Role.RELAY, Role.EXIT}


def node(
    node_id: str,
    *roles: Role,
    tenant: str = "acme",
    region: str = "eu",
    domain: str | None = None,
    **facts: object,
) -> NodeFacts:
    return NodeFacts(
        node_id=node_id,
        roles=frozenset(roles),
        tenant=tenant,
        region=region,
        failure_domain=domain or f"site-{node_id}",
        **facts,  # type: ignore[arg-type]
    )


def client(node_id: str = "src", **facts: object) -> NodeFacts:
    return node(node_id, **facts)


def link(src: str, dst: str, rtt: float = 10.0, **facts: object) -> LinkObservation:
    facts.setdefault("rtt_ms", rtt)
    return LinkObservation(src=src, dst=dst, **facts)  # type: ignore[arg-type]


def both(a: str, b: str, rtt: float = 10.0, **facts: object) -> list[LinkObservation]:
    return [link(a, b, rtt, **facts), link(b, a, rtt, **facts)]


def diamond(
    a: NodeFacts | None = None,
    b: NodeFacts | None = None,
    *,
    a_link: Mapping[str, object] | None = None,
    b_link: Mapping[str, object] | None = None,
) -> FabricGraph:
    """``src -> A -> host`` and ``src -> B -> host``; A and B are relays unless given."""
    a = a or node("A", Role.RELAY)
    b = b or node("B", Role.RELAY)
    nodes = [client(), a, b, node("host", Role.SERVICE_HOST)]
    links = [
        link("src", a.node_id, **dict(a_link or {})),
        link(a.node_id, "host", **dict(a_link or {})),
        link("src", b.node_id, **dict(b_link or {})),
        link(b.node_id, "host", **dict(b_link or {})),
    ]
    return FabricGraph.build(nodes, links)


# ---- an independent statement of the rules (not the planner's code) ---------------------------


def may_carry(n: NodeFacts, tenant: str, policy: RoutePolicy) -> bool:
    """Tenant, trust and mobile rules for a hop, written out again from the issue."""
    if not (n.roles & CARRY_ROLES):
        return False
    if n.tenant != tenant and not (n.shared and policy.allow_shared_nodes):
        return False
    if n.trust_tier < policy.min_trust_tier:
        return False
    if n.mobile is not None or Role.MOBILE_EDGE in n.roles:
        m = n.mobile
        if m is None or not m.relay_opt_in or not policy.allow_mobile_relays:
            return False
        low = not m.charging and m.battery_percent < policy.min_relay_battery_percent
        if low and not policy.allow_low_battery_relays:
            return False
        if m.metered and not policy.allow_metered_relays:
            return False
    return True


def position_ok(n: NodeFacts, depth: int, last: bool) -> bool:
    """Role rules by position: first hop entry/relay; middle relay; last relay/exit."""
    if depth == 1:
        return bool(n.roles & {Role.ENTRY, Role.RELAY})
    if last:
        return bool(n.roles & {Role.RELAY, Role.EXIT})
    return Role.RELAY in n.roles


def replica_ok(n: NodeFacts, tenant: str, policy: RoutePolicy) -> bool:
    return Role.SERVICE_HOST in n.roles and (
        n.tenant == tenant or (n.shared and policy.allow_shared_nodes)
    )


def route_ok(
    graph: FabricGraph,
    hops: Sequence[str],
    replicas: Sequence[str],
    policy: RoutePolicy,
) -> str | None:
    """Why ``hops`` breaks a rule, or None."""
    source = graph.nodes[hops[0]]
    if len(hops) < 2 or len(hops) - 1 > policy.max_hops:
        return f"bad length {len(hops)}"
    if len(set(hops)) != len(hops):
        return "not simple"
    for a, b in itertools.pairwise(hops):
        if (a, b) not in graph.links:
            return f"no link {a}->{b}"
    replica = graph.nodes[hops[-1]]
    if replica.node_id not in replicas or not replica_ok(replica, source.tenant, policy):
        return f"bad replica {replica.node_id}"
    if len(hops) == 2 and Role.ENTRY not in replica.roles:
        return "direct to a replica without entry role"
    relays = hops[1:-1]
    for depth, hop in enumerate(relays, start=1):
        n = graph.nodes[hop]
        if hop in replicas:
            return f"replica {hop} used as a relay"
        if not may_carry(n, source.tenant, policy):
            return f"{hop} may not carry"
        if not position_ok(n, depth, depth == len(relays)):
            return f"{hop} may not sit at depth {depth}"
    return None


def all_routes(
    graph: FabricGraph, source: str, replicas: Sequence[str], policy: RoutePolicy
) -> Iterator[tuple[str, ...]]:
    """Every eligible route, by exhaustive search (small graphs only)."""
    out: dict[str, list[str]] = {}
    for a, b in graph.links:
        out.setdefault(a, []).append(b)
    targets = set(replicas)

    def walk(path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        if len(path) - 1 >= policy.max_hops:
            return
        for nxt in sorted(out.get(path[-1], ())):
            if nxt in path:
                continue
            candidate = (*path, nxt)
            if nxt in targets:
                if route_ok(graph, candidate, replicas, policy) is None:
                    yield candidate
                continue
            yield from walk(candidate)

    yield from walk((source,))


@dataclass(frozen=True)
class Scenario:
    graph: FabricGraph
    source: str
    replicas: tuple[str, ...]
    policy: RoutePolicy


def mobile(
    battery: float = 80.0, *, charging: bool = False, metered: bool = False, opt_in: bool = True
) -> MobileFacts:
    return MobileFacts(
        battery_percent=battery, charging=charging, metered=metered, relay_opt_in=opt_in
    )
