"""The bounded search: an integer index of the graph, per-service cones, hop-capped A*.

Three pieces, each there for scale:

* :class:`GraphIndex` -- built once per graph snapshot.  Node ids become
  integers in sorted order (so comparing paths of integers breaks ties by
  node id), link and node costs are priced once, and edges into nodes that can
  never carry traffic (observers, storage, opted-out phones, ...) are dropped
  before any search.
* :func:`build_cone` -- for one (service, tenant), a reverse, hop-layered
  Bellman-Ford from the replicas over eligible carriers: ``cone[v][r]`` is the
  cheapest cost from ``v`` to a replica in at most ``r`` more hops (roles
  relaxed to "any carrier"), for ``r`` up to ``max_hops - 2``.  It holds only
  nodes within that many hops of a replica -- the regional partition a request
  needs -- and is an admissible, consistent A* heuristic.  The first hop is
  left out on purpose: the layer of everything that reaches a replica in
  ``max_hops - 1`` hops is most of a region plus the backbone, while the
  source has only a handful of first hops, which the search checks directly.
  Planners cache cones per (service, tenant).
* :func:`search` -- A* over states (node, depth) from the source with the
  exact position rules, the hop cap, exclusions and penalties; a label is
  dropped only when another label at the same node is no more expensive and no
  deeper.  The heap orders by (estimate, path), so equal costs break by node id.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from accessfabric.control.server.planning.model import FabricGraph
from accessfabric.control.server.planning.policy import (
    ENTRY,
    FIRST_HOP,
    LAST_HOP,
    RELAY,
    SERVICE_HOST,
    RoutePolicy,
    carrier_refusal,
    role_bits,
)
from accessfabric.control.server.planning.scoring import (
    ScoringWeights,
    hop_cost,
    link_cost,
    replica_cost,
)

INF = math.inf

Cone = Mapping[int, list[float]]
"""Node index -> cheapest cost to a replica in at most ``r`` more hops, indexed by ``r``."""


class GraphIndex:
    """A graph snapshot priced under one set of weights and policy, as integer arrays."""

    __slots__ = (
        "carrier",
        "domain_id",
        "domain_names",
        "graph",
        "hop_cost",
        "ids",
        "inc",
        "out",
        "policy",
        "position",
        "replica_cost",
        "roles",
        "shared",
        "tenant",
        "weights",
    )

    def __init__(self, graph: FabricGraph, weights: ScoringWeights, policy: RoutePolicy) -> None:
        self.graph = graph
        self.weights = weights
        self.policy = policy
        self.ids: list[str] = sorted(graph.nodes)
        self.position: dict[str, int] = {node_id: i for i, node_id in enumerate(self.ids)}
        nodes = [graph.nodes[node_id] for node_id in self.ids]
        self.roles: list[int] = [role_bits(n) for n in nodes]
        self.carrier: list[bool] = [carrier_refusal(n, policy) is None for n in nodes]
        self.tenant: list[str] = [n.tenant for n in nodes]
        self.shared: list[bool] = [n.shared and policy.allow_shared_nodes for n in nodes]
        domains: dict[str, int] = {}
        self.domain_id: list[int] = [
            domains.setdefault(n.failure_domain, len(domains)) for n in nodes
        ]
        self.domain_names: list[str] = list(domains)
        self.hop_cost: list[float] = [hop_cost(n, weights) for n in nodes]
        self.replica_cost: list[float] = [replica_cost(n, weights) for n in nodes]
        # Only edges whose far end may ever carry or serve traffic are kept.
        useful = [
            c or bool(r & SERVICE_HOST) for c, r in zip(self.carrier, self.roles, strict=True)
        ]
        out: list[list[tuple[int, float]]] = [[] for _ in nodes]
        inc: list[list[tuple[int, float]]] = [[] for _ in nodes]
        position = self.position
        carrier = self.carrier
        for (src, dst), link in graph.links.items():
            v = position[dst]
            if not useful[v]:
                continue
            u = position[src]
            cost = link_cost(link, weights)
            out[u].append((v, cost))
            if carrier[u]:
                inc[v].append((u, cost))
        for edges in out:
            edges.sort()
        for edges in inc:
            edges.sort()
        self.out = out
        self.inc = inc

    def tenant_ok(self, i: int, tenant: str) -> bool:
        return self.tenant[i] == tenant or self.shared[i]


def build_cone(index: GraphIndex, replicas: Collection[int], tenant: str) -> dict[int, list[float]]:
    """Cheapest cost from each eligible carrier to a replica within r hops, r = 1..max_hops-2.

    Locality is left out (it depends on the source and is >= 0), so the values
    stay lower bounds for every source.
    """
    levels = max(0, index.policy.max_hops - 2)
    cone: dict[int, list[float]] = {}
    inc, hop, carrier = index.inc, index.hop_cost, index.carrier
    ten, shared = index.tenant, index.shared
    # ``via[w]``: the cost of a route that has just arrived at ``w`` to finish from there.
    via: dict[int, float] = {t: index.replica_cost[t] for t in replicas}
    for r in range(1, levels + 1):
        offers: dict[int, float] = {}
        for w, rest in via.items():
            for u, cost in inc[w]:
                if u in replicas or not carrier[u] or not (ten[u] == tenant or shared[u]):
                    continue
                value = cost + rest
                if value < offers.get(u, INF):
                    offers[u] = value
        improved: dict[int, float] = {}
        for values in cone.values():
            values[r] = values[r - 1]
        for u, value in offers.items():
            known = cone.get(u)
            if known is None:
                known = cone[u] = [INF] * (levels + 1)
            if value < known[r]:
                known[r] = value
                improved[u] = hop[u] + value
        via = improved
    return cone


@dataclass(frozen=True, slots=True, kw_only=True)
class Constraints:
    """What an alternate must avoid (banned) or pays extra for (penalised)."""

    banned_nodes: frozenset[int] = frozenset()
    banned_domains: frozenset[int] = frozenset()
    banned_edges: frozenset[tuple[int, int]] = frozenset()
    penalised_nodes: frozenset[int] = frozenset()
    node_penalty: float = 0.0
    penalised_domains: frozenset[int] = frozenset()
    domain_penalty: float = 0.0

    def penalty(self, index: GraphIndex, v: int) -> float:
        extra = 0.0
        if v in self.penalised_nodes:
            extra += self.node_penalty
        if index.domain_id[v] in self.penalised_domains:
            extra += self.domain_penalty
        return extra


NO_CONSTRAINTS = Constraints()


def search(
    index: GraphIndex,
    source: int,
    tenant: str,
    arrival: Mapping[int, float],
    cone: Cone,
    constraints: Constraints = NO_CONSTRAINTS,
) -> tuple[float, tuple[int, ...]] | None:
    """The cheapest eligible path from ``source`` to any replica, or None.

    ``arrival`` maps each replica to what ending there costs (replica terms
    plus locality); ``cone`` comes from :func:`build_cone` for the same
    replicas and ``tenant`` (it already excludes other tenants' and
    ineligible nodes; first hops, which it leaves out, are checked here and
    get the estimate 0).
    """
    max_hops = index.policy.max_hops
    max_depth = max_hops - 1
    out, roles, hop = index.out, index.roles, index.hop_cost
    carrier, ten, shared = index.carrier, index.tenant, index.shared
    banned = constraints.banned_nodes
    banned_domains = constraints.banned_domains
    banned_edges = constraints.banned_edges
    penalised = bool(constraints.penalised_nodes or constraints.penalised_domains)
    domain_id = index.domain_id
    settled: dict[int, list[tuple[float, int]]] = {}
    heap: list[tuple[float, tuple[int, ...], float]] = [(0.0, (source,), 0.0)]
    push, pop = heapq.heappush, heapq.heappop
    while heap:
        _, path, g = pop(heap)
        u = path[-1]
        if u in arrival and len(path) > 1:
            return g, path
        depth = len(path) - 1
        labels = settled.get(u)
        if labels is None:
            settled[u] = [(g, depth)]
        else:
            if any(g0 <= g and d0 <= depth for g0, d0 in labels):
                continue
            labels.append((g, depth))
        # A hop at depth >= 2 continues to another hop only if it is a relay.
        may_continue = depth == 0 or depth == 1 or bool(roles[u] & RELAY)
        next_depth = depth + 1
        remaining = max_hops - next_depth
        for v, cost in out[u]:
            finish = arrival.get(v)
            if finish is not None:
                if depth == 0 and not roles[v] & ENTRY:
                    continue
                if banned_edges and (u, v) in banned_edges:
                    continue
                total = g + cost + finish
                push(heap, (total, (*path, v), total))
                continue
            if not may_continue or next_depth > max_depth:
                continue
            if next_depth == 1:
                if not carrier[v] or not (ten[v] == tenant or shared[v]):
                    continue
                estimate = 0.0
            else:
                estimates = cone.get(v)
                if estimates is None:
                    continue
                estimate = estimates[remaining]
                if estimate == INF:
                    continue
            if not roles[v] & (FIRST_HOP if next_depth == 1 else LAST_HOP):
                continue
            if v in path or v in banned:
                continue
            if banned_domains and domain_id[v] in banned_domains:
                continue
            if banned_edges and (u, v) in banned_edges:
                continue
            g2 = g + cost + hop[v]
            if penalised:
                g2 += constraints.penalty(index, v)
            push(heap, (g2 + estimate, (*path, v), g2))
    return None


__all__ = [
    "NO_CONSTRAINTS",
    "Cone",
    "Constraints",
    "GraphIndex",
    "build_cone",
    "search",
]
