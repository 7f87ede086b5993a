"""Planner properties over random graphs, checked against an independent brute-force search.

Two sources of graphs: adversarial random graphs (any role mix, tenants,
phones in every state, random links and policies) and small synthetic fleets
from :mod:`accessfabric.control.server.synthetic`.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accessfabric.control.server.planner import (
    FabricGraph,
    LinkObservation,
    MobileFacts,
    NodeFacts,
    NoRouteError,
    Role,
    RoutePlan,
    RoutePlanner,
    RoutePolicy,
    ScoringWeights,
)
from accessfabric.control.server.planning import scoring
from accessfabric.control.server.synthetic import generate
from tests.control.planner_graphs import Scenario, all_routes, route_ok

ROLE_MIXES = [
    (),
    (Role.ENTRY,),
    (Role.RELAY,),
    (Role.EXIT,),
    (Role.ENTRY, Role.RELAY),
    (Role.RELAY, Role.EXIT),
    (Role.SERVICE_HOST,),
    (Role.SERVICE_HOST, Role.ENTRY),
    (Role.SERVICE_HOST, Role.RELAY),
    (Role.OBSERVER,),
    (Role.STORAGE,),
    (Role.CONTROL_PLANE, Role.ROUTE_COORDINATOR),
    (Role.UPDATE_CACHE,),
    (Role.MOBILE_EDGE,),
    (Role.MOBILE_EDGE, Role.RELAY),
    (Role.MOBILE_EDGE, Role.ENTRY, Role.RELAY),
]

CARRIER_MIXES = [
    (Role.ENTRY,),
    (Role.RELAY,),
    (Role.RELAY,),
    (Role.EXIT,),
    (Role.ENTRY, Role.RELAY),
    (Role.SERVICE_HOST,),
    (Role.MOBILE_EDGE, Role.RELAY),
]

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    count = draw(st.integers(4, 14))
    domains = [f"d{i}" for i in range(draw(st.integers(1, 4)))]
    nodes = []
    for i in range(count):
        roles = draw(st.sampled_from(CARRIER_MIXES if draw(st.integers(0, 9)) < 6 else ROLE_MIXES))
        is_phone = Role.MOBILE_EDGE in roles or draw(st.integers(0, 9)) == 0
        phone = None
        if is_phone and draw(st.booleans()):
            phone = MobileFacts(
                battery_percent=draw(st.sampled_from([5.0, 29.0, 30.0, 55.0, 100.0])),
                charging=draw(st.booleans()),
                metered=draw(st.booleans()),
                relay_opt_in=draw(st.booleans()),
            )
        nodes.append(
            NodeFacts(
                node_id=f"n{i:02d}",
                roles=frozenset(roles),
                tenant=draw(st.sampled_from(["acme", "acme", "acme", "globex"])),
                region=draw(st.sampled_from(["eu", "us"])),
                failure_domain=draw(st.sampled_from(domains)),
                trust_tier=draw(st.integers(0, 3)),
                shared=draw(st.integers(0, 3)) == 0,
                mobile=phone,
                cpu_pressure=draw(st.sampled_from([0.0, 0.3, 0.9])),
                reliability=draw(st.sampled_from([1.0, 0.95, 0.6])),
                operator_cost=draw(st.sampled_from([0.0, 0.0, 1.0])),
            )
        )
    # the source is an ordinary client of tenant acme
    nodes[0] = NodeFacts(
        node_id="n00", roles=frozenset(), tenant="acme", region="eu", failure_domain="home"
    )
    # and the last node hosts a service, usually of tenant acme
    last = nodes[-1]
    host_roles = draw(st.sampled_from([(), (Role.ENTRY,), (Role.RELAY,)]))
    nodes[-1] = NodeFacts(
        node_id=last.node_id,
        roles=frozenset({Role.SERVICE_HOST, *host_roles}),
        tenant="acme" if draw(st.integers(0, 9)) else "globex",
        region=last.region,
        failure_domain=last.failure_domain,
        reliability=last.reliability,
    )
    density = draw(st.sampled_from([0.3, 0.5, 0.7]))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    links = []
    for a in nodes:
        for b in nodes:
            if a is not b and rng.random() < density:
                links.append(
                    LinkObservation(
                        src=a.node_id,
                        dst=b.node_id,
                        rtt_ms=float(rng.choice([1, 5, 5, 10, 30])),
                        jitter_ms=float(rng.choice([0, 1, 4])),
                        loss=rng.choice([0.0, 0.0, 0.01, 0.05]),
                        bandwidth_mbps=float(rng.choice([5, 50, 1000])),
                        queue_depth=float(rng.choice([0, 10])),
                        retransmit_rate=rng.choice([0.0, 0.02]),
                    )
                )
    hosts = [n.node_id for n in nodes[1:] if Role.SERVICE_HOST in n.roles]
    hosts.sort(key=lambda h: (nodes[int(h[1:])].tenant != "acme", h))
    replicas = tuple(hosts[: draw(st.integers(1, 3))]) or (nodes[-1].node_id,)
    policy = draw(
        st.sampled_from(
            [
                RoutePolicy(),
                RoutePolicy(max_hops=3),
                RoutePolicy(allow_low_battery_relays=True, allow_metered_relays=True),
                RoutePolicy(allow_mobile_relays=False, min_trust_tier=2),
                RoutePolicy(allow_shared_nodes=False, max_hops=5),
            ]
        )
    )
    return Scenario(FabricGraph.build(nodes, links), "n00", replicas, policy)


def _plan(s: Scenario) -> RoutePlan | None:
    planner = RoutePlanner(s.graph, {"svc": s.replicas}, policy=s.policy)
    try:
        return planner.plan(s.source, "svc")
    except NoRouteError:
        return None


def _score(s: Scenario, hops: tuple[str, ...]) -> float:
    nodes = [s.graph.nodes[h] for h in hops]
    links = [s.graph.links[(a, b)] for a, b in itertools.pairwise(hops)]
    return math.fsum(r.contribution for r in scoring.explain(nodes, links, ScoringWeights()))


def _disjoint(s: Scenario, route: tuple[str, ...], earlier: tuple[str, ...]) -> bool:
    relays = set(earlier[1:-1])
    domains = {s.graph.nodes[r].failure_domain for r in relays}
    return all(
        h not in relays and s.graph.nodes[h].failure_domain not in domains for h in route[1:-1]
    )


@PROPERTY_SETTINGS
@given(scenarios())
def test_every_route_obeys_roles_tenants_mobile_rules_and_hop_cap(s: Scenario) -> None:
    plan = _plan(s)
    if plan is None:
        assert not list(all_routes(s.graph, s.source, s.replicas, s.policy))
        return
    for route in plan.routes:
        assert route_ok(s.graph, route.hops, s.replicas, s.policy) is None, route.hops


@PROPERTY_SETTINGS
@given(scenarios())
def test_primary_is_the_cheapest_eligible_route(s: Scenario) -> None:
    plan = _plan(s)
    candidates = list(all_routes(s.graph, s.source, s.replicas, s.policy))
    if plan is None:
        assert not candidates
        return
    best = min(_score(s, c) for c in candidates)
    assert plan.primary.score == pytest.approx(best, rel=1e-9, abs=1e-9)


@PROPERTY_SETTINGS
@given(scenarios())
def test_as_many_distinct_routes_as_the_graph_has_up_to_three(s: Scenario) -> None:
    plan = _plan(s)
    candidates = set(all_routes(s.graph, s.source, s.replicas, s.policy))
    got = [] if plan is None else [r.hops for r in plan.routes]
    assert len(set(got)) == len(got)
    assert len(got) == min(3, len(candidates))
    if plan is not None and len(got) < 3:
        assert any("alternate" in note for note in plan.notes)


@PROPERTY_SETTINGS
@given(scenarios())
def test_first_alternate_avoids_the_primarys_relays_and_domains_when_possible(
    s: Scenario,
) -> None:
    plan = _plan(s)
    if plan is None or not plan.alternates:
        return
    primary, alternate = plan.primary.hops, plan.alternates[0]
    possible = any(
        c != primary and _disjoint(s, c, primary)
        for c in all_routes(s.graph, s.source, s.replicas, s.policy)
    )
    reason = [r for r in alternate.reasons if r.factor == scoring.FAILURE_DOMAIN]
    assert len(reason) == 1
    if possible:
        assert _disjoint(s, alternate.hops, primary)
        assert alternate.disjoint
        assert reason[0].contribution == 0.0
    else:
        assert not alternate.disjoint
        assert "shares" in reason[0].explanation
        assert "no " in reason[0].explanation and "exists" in reason[0].explanation
        assert reason[0].contribution > 0.0


@PROPERTY_SETTINGS
@given(scenarios())
def test_reasons_sum_to_the_score(s: Scenario) -> None:
    plan = _plan(s)
    if plan is None:
        return
    for route in plan.routes:
        assert math.fsum(r.contribution for r in route.reasons) == route.score
        assert all(r.factor in scoring.FACTORS and r.explanation for r in route.reasons)
        assert all(r.contribution >= 0.0 for r in route.reasons)
        assert [r.factor for r in route.reasons] == sorted(
            (r.factor for r in route.reasons), key=scoring.FACTORS.index
        )


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_output_is_deterministic_whatever_the_input_order(s: Scenario, rng: random.Random) -> None:
    first = _plan(s)
    nodes = list(s.graph.nodes.values())
    links = list(s.graph.links.values())
    rng.shuffle(nodes)
    rng.shuffle(links)
    shuffled = Scenario(FabricGraph.build(nodes, links), s.source, s.replicas, s.policy)
    assert _plan(shuffled) == first
    assert _plan(s) == first


@PROPERTY_SETTINGS
@given(
    st.sampled_from([0.0, 0.001, 0.01, 0.05]),
    st.sampled_from([0.0005, 0.002, 0.02, 0.1]),
    st.sampled_from([1.0, 20.0, 80.0]),
    st.booleans(),
)
def test_lower_loss_wins_when_rtts_tie(
    loss_a: float, loss_b: float, rtt: float, swap_names: bool
) -> None:
    if loss_a == loss_b:
        return
    names = ("zz", "aa") if swap_names else ("aa", "zz")
    nodes = [
        NodeFacts(node_id="src", roles=frozenset(), tenant="t", region="r", failure_domain="s"),
        *(
            NodeFacts(
                node_id=n, roles=frozenset({Role.RELAY}), tenant="t", region="r", failure_domain=n
            )
            for n in names
        ),
        NodeFacts(
            node_id="host",
            roles=frozenset({Role.SERVICE_HOST}),
            tenant="t",
            region="r",
            failure_domain="h",
        ),
    ]
    links = []
    for relay, loss in zip(names, (loss_a, loss_b), strict=True):
        links.append(LinkObservation(src="src", dst=relay, rtt_ms=rtt, loss=loss))
        links.append(LinkObservation(src=relay, dst="host", rtt_ms=rtt))
    plan = RoutePlanner(FabricGraph.build(nodes, links), {"svc": ["host"]}).plan("src", "svc")
    lower = names[0] if loss_a < loss_b else names[1]
    assert plan.primary.relays == (lower,)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([120, 240]))
def test_synthetic_fleets_obey_the_rules(seed: int, size: int) -> None:
    fleet = generate(size, seed=seed, regions=2, tenants=2)
    planner = RoutePlanner(fleet.graph, fleet.services)
    rng = random.Random(seed)
    policy = RoutePolicy()
    planned = 0
    for _ in range(8):
        source = rng.choice(fleet.clients)
        tenant = fleet.graph.nodes[source].tenant
        mine = [name for name in sorted(fleet.services) if name.startswith(f"{tenant}-")]
        if not mine:
            continue
        service = rng.choice(mine)
        try:
            plan = planner.plan(source, service)
        except NoRouteError:
            continue
        planned += 1
        replicas = fleet.services[service]
        for route in plan.routes:
            assert route_ok(fleet.graph, route.hops, replicas, policy) is None
            assert math.fsum(r.contribution for r in route.reasons) == route.score
            for hop in route.relays:
                n = fleet.graph.nodes[hop]
                assert not n.roles & {Role.OBSERVER, Role.STORAGE, Role.UPDATE_CACHE}
                if n.mobile is not None:
                    assert n.mobile.relay_opt_in and not n.mobile.metered
                    assert n.mobile.charging or n.mobile.battery_percent >= 30
        if len(plan.alternates) >= 1:
            first = plan.alternates[0]
            if first.disjoint:
                assert not set(first.failure_domains) & set(plan.primary.failure_domains)
    assert planned >= 0


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_cached_cones_never_change_an_answer(s: Scenario) -> None:
    """One planner asked from every node (shared cone cache) answers like fresh planners."""
    services = {"svc": s.replicas}
    shared = RoutePlanner(s.graph, services, policy=s.policy)

    def answer(planner: RoutePlanner, source: str) -> RoutePlan | str:
        try:
            return planner.plan(source, "svc")
        except NoRouteError as e:
            return str(e)

    for source in sorted(s.graph.nodes):
        fresh = RoutePlanner(s.graph, services, policy=s.policy)
        assert answer(shared, source) == answer(fresh, source)
