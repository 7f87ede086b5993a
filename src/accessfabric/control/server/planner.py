"""The route planner: for (source node, service), a primary route and alternates, with reasons.

Pure: no I/O, no clock, no randomness.  Give it a :class:`FabricGraph`
snapshot, the service directory (service name -> replica node ids), scoring
weights and policy; ask :meth:`RoutePlanner.plan`.

How an answer is found (docs/route-planning.md has the whole story):

1. The source's tenant fixes which nodes may carry the traffic; the policy
   fixes which roles may sit in which position and which phones may relay.
2. The primary is the cheapest eligible path within ``max_hops`` links,
   found by A* over (node, depth) with a per-(service, tenant) cone as the
   heuristic (see :mod:`accessfabric.control.server.planning.search`).
3. Each alternate is searched again under the strictest constraints that
   still give an answer: no relay and no failure domain of an earlier route;
   then no relay of an earlier route and none of the primary's domains; then
   no relay of an earlier route, shared domains penalised; last, one link of
   every earlier route removed, shared relays and domains penalised.  The
   failure-domain reason says which level was needed and why.
4. Every route carries reasons -- (factor, contribution, explanation) -- whose
   contributions add up to its score (milliseconds-equivalent, lower is better).
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from accessfabric.control.kernel.vocabulary import node_echo_target
from accessfabric.control.server.planning.errors import (
    NoRouteError,
    PlanningError,
    UnknownNodeError,
    UnknownServiceError,
)
from accessfabric.control.server.planning.model import (
    MAX_TRUST_TIER,
    FabricGraph,
    LinkObservation,
    MobileFacts,
    NodeFacts,
    Role,
)
from accessfabric.control.server.planning.policy import (
    ENTRY,
    RELAY,
    SERVICE_HOST,
    RoutePolicy,
    carrier_refusal,
    tenant_allows,
)
from accessfabric.control.server.planning.scoring import (
    FACTORS,
    FAILURE_DOMAIN,
    Reason,
    ScoringWeights,
    explain,
    locality_term,
    pool_spread_term,
)
from accessfabric.control.server.planning.search import (
    Constraints,
    GraphIndex,
    build_cone,
    search,
)

MAX_EDGE_COMBINATIONS = 64
"""The last alternate level tries at most this many ways of cutting the earlier routes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedRoute:
    """One route: the nodes it passes, its score and why it scored so."""

    hops: tuple[str, ...]
    """``source, relay..., replica``."""
    score: float
    """Milliseconds-equivalent, lower is better; the sum of the reasons' contributions."""
    reasons: tuple[Reason, ...]
    failure_domains: tuple[str, ...]
    """The failure domain of each relay hop, in order."""
    disjoint: bool
    """No relay and no relay failure domain in common with any earlier route of the plan."""

    @property
    def source(self) -> str:
        return self.hops[0]

    @property
    def replica(self) -> str:
        return self.hops[-1]

    @property
    def relays(self) -> tuple[str, ...]:
        return self.hops[1:-1]

    def describe(self) -> str:
        """Several lines an operator can read: the path, the score, then one line per reason."""
        lines = [f"{' -> '.join(self.hops)}  score {self.score:.2f}"]
        lines.extend(f"  {reason}" for reason in self.reasons)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutePlan:
    """The answer for (source, service): a primary, alternates, and notes on what was missing."""

    source: str
    service: str
    primary: PlannedRoute
    alternates: tuple[PlannedRoute, ...]
    notes: tuple[str, ...] = ()

    @property
    def routes(self) -> tuple[PlannedRoute, ...]:
        return (self.primary, *self.alternates)


class RoutePlanner:
    """Plans routes over one graph snapshot; build a new planner when the snapshot changes.

    The planner caches one cone per (service, tenant) -- at most
    ``cone_cache_size`` of them, least recently used dropped first.
    """

    def __init__(
        self,
        graph: FabricGraph,
        services: Mapping[str, Sequence[str]],
        *,
        weights: ScoringWeights | None = None,
        policy: RoutePolicy | None = None,
        cone_cache_size: int = 4096,
    ) -> None:
        self.graph = graph
        self.services = {name: tuple(replicas) for name, replicas in services.items()}
        self.weights = weights or ScoringWeights()
        self.policy = policy or RoutePolicy()
        self.index = GraphIndex(graph, self.weights, self.policy)
        self._cones: OrderedDict[tuple[str, str], dict[int, list[float]]] = OrderedDict()
        self._cone_cache_size = cone_cache_size

    # ---- public ------------------------------------------------------------------------------

    def plan(self, source: str, service: str, *, alternates: int = 2) -> RoutePlan:
        """The primary route from ``source`` to a replica of ``service`` and up to ``alternates``.

        Raises :class:`UnknownNodeError`, :class:`UnknownServiceError` or
        :class:`NoRouteError` (its message says what ruled the routes out).
        """
        index = self.index
        src = index.position.get(source)
        if src is None:
            raise UnknownNodeError(f"source node {source!r} is not in the graph")
        source_node = self.graph.nodes[source]
        usable, refusals = self._replicas(source_node, service)
        replicas = usable - {src}
        if src in usable:
            refusals.append(f"replica {source} is the source itself")
        if not replicas:
            raise NoRouteError(
                f"service {service!r} has no replica that {source!r} may use: "
                + "; ".join(refusals)
            )
        # The cone depends on (service, tenant) only, never on the source.
        cone = self._cone(service, source_node.tenant, usable)
        pool = len(replicas) > 1  # a pool: each source its own order among equals
        arrival = {
            t: index.replica_cost[t]
            + locality_term(source_node, self.graph.nodes[index.ids[t]], self.weights)
            + (pool_spread_term(source, index.ids[t], self.weights) if pool else 0.0)
            for t in replicas
        }
        found = search(index, src, source_node.tenant, arrival, cone)
        if found is None:
            raise NoRouteError(self._why_no_route(source, service, replicas, refusals))
        primary = self._route(found[1], None)
        routes: list[tuple[int, ...]] = [found[1]]
        built = [primary]
        notes = list(refusals)
        for _ in range(alternates):
            alternate = self._alternate(src, source_node.tenant, arrival, cone, routes)
            if alternate is None:
                notes.append(
                    f"only {len(routes) - 1} alternate(s): no further eligible route within "
                    f"{self.policy.max_hops} hops"
                )
                break
            path, level = alternate
            built.append(self._route(path, (routes, level)))
            routes.append(path)
        return RoutePlan(
            source=source,
            service=service,
            primary=primary,
            alternates=tuple(built[1:]),
            notes=tuple(notes),
        )

    # ---- replicas and cones ------------------------------------------------------------------

    def _replicas(self, source: NodeFacts, service: str) -> tuple[frozenset[int], list[str]]:
        # ``echo:<node id>`` is served by that node alone, whatever its roles (ping)
        echo_of = node_echo_target(service)
        names = self.services.get(service) if echo_of is None else (echo_of,)
        if not names:
            raise UnknownServiceError(f"service {service!r} has no replicas")
        usable: set[int] = set()
        refusals: list[str] = []
        for name in sorted(set(names)):
            i = self.index.position.get(name)
            node = self.graph.nodes.get(name)
            if i is None or node is None:
                refusals.append(f"replica {name} is not in the graph")
            elif not self.index.roles[i] & SERVICE_HOST and echo_of is None:
                refusals.append(f"replica {name} has no service-host role")
            elif not tenant_allows(node, source.tenant, self.policy):
                refusals.append(f"replica {name} belongs to tenant {node.tenant}")
            else:
                usable.add(i)
        return frozenset(usable), refusals

    def _cone(self, service: str, tenant: str, replicas: frozenset[int]) -> dict[int, list[float]]:
        key = (service, tenant)
        cone = self._cones.get(key)
        if cone is not None:
            self._cones.move_to_end(key)
            return cone
        cone = build_cone(self.index, replicas, tenant)
        self._cones[key] = cone
        while len(self._cones) > self._cone_cache_size:
            self._cones.popitem(last=False)
        return cone

    # ---- alternates --------------------------------------------------------------------------

    def _alternate(
        self,
        src: int,
        tenant: str,
        arrival: Mapping[int, float],
        cone: Mapping[int, list[float]],
        routes: list[tuple[int, ...]],
    ) -> tuple[tuple[int, ...], int] | None:
        """The next route and the level of constraint it needed (0 strictest .. 3 loosest)."""
        index, w = self.index, self.weights
        relays = frozenset(v for path in routes for v in path[1:-1])
        domains = frozenset(index.domain_id[v] for v in relays)
        primary_domains = frozenset(index.domain_id[v] for v in routes[0][1:-1])
        direct = frozenset((path[0], path[-1]) for path in routes if len(path) == 2)
        levels = [
            Constraints(banned_nodes=relays, banned_domains=domains, banned_edges=direct),
            Constraints(
                banned_nodes=relays,
                banned_domains=primary_domains,
                banned_edges=direct,
                penalised_domains=domains - primary_domains,
                domain_penalty=w.shared_failure_domain,
            ),
            Constraints(
                banned_nodes=relays,
                banned_edges=direct,
                penalised_domains=domains,
                domain_penalty=w.shared_failure_domain,
            ),
        ]
        for level, constraints in enumerate(levels):
            if level == 1 and primary_domains == domains:
                continue  # the same search as level 0
            found = search(index, src, tenant, arrival, cone, constraints)
            if found is not None:
                return found[1], level
        # Last resort: cut one link of every earlier route (so the answer differs from each),
        # and make shared relays and domains pay.
        best: tuple[float, tuple[int, ...]] | None = None
        cuts = [list(itertools.pairwise(path)) for path in routes]
        for combination in itertools.islice(itertools.product(*cuts), MAX_EDGE_COMBINATIONS):
            constraints = Constraints(
                banned_edges=frozenset(combination),
                penalised_nodes=relays,
                node_penalty=w.reused_node,
                penalised_domains=domains,
                domain_penalty=w.shared_failure_domain,
            )
            found = search(index, src, tenant, arrival, cone, constraints)
            if found is not None and (best is None or found < best):
                best = found
        return None if best is None else (best[1], 3)

    # ---- building a route --------------------------------------------------------------------

    def _route(
        self, path: tuple[int, ...], alternate: tuple[list[tuple[int, ...]], int] | None
    ) -> PlannedRoute:
        index, graph = self.index, self.graph
        ids = [index.ids[i] for i in path]
        nodes = [graph.nodes[node_id] for node_id in ids]
        links: list[LinkObservation] = [graph.links[(a, b)] for a, b in itertools.pairwise(ids)]
        reasons = explain(nodes, links, self.weights)
        disjoint = True
        if alternate is not None:
            reason, disjoint = self._failure_domain_reason(path, *alternate)
            reasons.append(reason)
        return PlannedRoute(
            hops=tuple(ids),
            score=math.fsum(r.contribution for r in reasons),
            reasons=tuple(reasons),
            failure_domains=tuple(n.failure_domain for n in nodes[1:-1]),
            disjoint=disjoint,
        )

    def _failure_domain_reason(
        self, path: tuple[int, ...], earlier: list[tuple[int, ...]], level: int
    ) -> tuple[Reason, bool]:
        index, w = self.index, self.weights
        earlier_relays = {v for p in earlier for v in p[1:-1]}
        earlier_domains = {index.domain_id[v] for v in earlier_relays}
        relays = path[1:-1]
        shared_nodes = [v for v in relays if v in earlier_relays]
        shared_domains = [v for v in relays if index.domain_id[v] in earlier_domains]
        terms = [w.reused_node for _ in shared_nodes] if level == 3 else []
        terms += [w.shared_failure_domain for _ in shared_domains] if level >= 1 else []
        avoided = sorted(index.domain_names[d] for d in earlier_domains)
        hops = f"{self.policy.max_hops} hops"
        if not shared_nodes and not shared_domains:
            text = "disjoint from earlier routes: no shared relay" + (
                f", avoids failure domain(s) {', '.join(avoided)}" if avoided else ""
            )
            if level > 0:
                text += " (found after the strict search failed)"
            return Reason(factor=FAILURE_DOMAIN, contribution=0.0, explanation=text), True
        parts = []
        if shared_nodes:
            parts.append(
                f"shares relay(s) {', '.join(index.ids[v] for v in shared_nodes)} with an "
                f"earlier route (+{w.reused_node:g} each): no relay-disjoint alternate exists "
                f"within {hops} under this policy"
            )
        if shared_domains:
            names = sorted({index.domain_names[index.domain_id[v]] for v in shared_domains})
            why = (
                "the primary's domains are avoided, but no alternate avoids every earlier "
                "route's domains"
                if level == 1
                else f"no domain-disjoint alternate exists within {hops} under this policy"
            )
            parts.append(
                f"shares failure domain(s) {', '.join(names)} with an earlier route "
                f"(+{w.shared_failure_domain:g} per relay): {why}"
            )
        reason = Reason(
            factor=FAILURE_DOMAIN, contribution=math.fsum(terms), explanation="; ".join(parts)
        )
        return reason, False

    # ---- diagnostics -------------------------------------------------------------------------

    def _why_no_route(
        self, source: str, service: str, replicas: frozenset[int], refusals: list[str]
    ) -> str:
        index = self.index
        tenant = self.graph.nodes[source].tenant
        first: list[str] = []
        refused: list[str] = []
        for name in self.graph.out_links.get(source, ()):
            v = index.position[name]
            node = self.graph.nodes[name]
            if v in replicas:
                if index.roles[v] & ENTRY:
                    first.append(name)
                else:
                    refused.append(f"{name}: replica without the entry role cannot be dialled")
                continue
            reason = carrier_refusal(node, self.policy)
            if reason is None and not tenant_allows(node, tenant, self.policy):
                reason = f"belongs to tenant {node.tenant}"
            if reason is None and not index.roles[v] & (ENTRY | RELAY):
                reason = "cannot be a first hop (needs entry or relay)"
            if reason is None:
                first.append(name)
            else:
                refused.append(f"{name}: {reason}")
        parts = [
            f"no route from {source!r} to service {service!r} within "
            f"{self.policy.max_hops} hops under the policy",
            f"eligible first hops: {', '.join(first[:8]) or 'none'}",
        ]
        if refused:
            parts.append("refused neighbours: " + "; ".join(refused[:8]))
        parts.extend(refusals)
        return "; ".join(parts)


__all__ = [
    "FACTORS",
    "MAX_TRUST_TIER",
    "FabricGraph",
    "LinkObservation",
    "MobileFacts",
    "NoRouteError",
    "NodeFacts",
    "PlannedRoute",
    "PlanningError",
    "Reason",
    "Role",
    "RoutePlan",
    "RoutePlanner",
    "RoutePolicy",
    "ScoringWeights",
    "UnknownNodeError",
    "UnknownServiceError",
]
