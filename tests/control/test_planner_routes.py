"""Planner behaviour on hand-made graphs: policy rules, failure domains, errors, caching."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import pytest

from accessfabric.control.server.planner import (
    FabricGraph,
    NoRouteError,
    Role,
    RoutePlanner,
    RoutePolicy,
    UnknownNodeError,
    UnknownServiceError,
)
from accessfabric.control.server.planning import scoring
from accessfabric.control.server.synthetic import generate
from tests.control.planner_graphs import client, diamond, link, mobile, node

CHEAP = {"rtt": 1.0}
DEAR = {"rtt": 90.0}


def _primary(graph: FabricGraph, policy: RoutePolicy | None = None) -> tuple[str, ...]:
    return RoutePlanner(graph, {"svc": ["host"]}, policy=policy).plan("src", "svc").primary.hops


def test_other_tenants_relay_is_never_used_but_a_shared_one_is() -> None:
    foreign = node("A", Role.RELAY, tenant="globex")
    assert _primary(diamond(foreign, a_link=CHEAP, b_link=DEAR)) == ("src", "B", "host")
    shared = node("A", Role.RELAY, tenant="provider", shared=True)
    assert _primary(diamond(shared, a_link=CHEAP, b_link=DEAR)) == ("src", "A", "host")
    no_sharing = RoutePolicy(allow_shared_nodes=False)
    assert _primary(diamond(shared, a_link=CHEAP, b_link=DEAR), no_sharing) == ("src", "B", "host")


def test_another_tenants_replica_is_refused_with_a_reason() -> None:
    graph = FabricGraph.build(
        [client(), node("R", Role.RELAY), node("host", Role.SERVICE_HOST, tenant="globex")],
        [link("src", "R"), link("R", "host")],
    )
    with pytest.raises(NoRouteError, match="replica host belongs to tenant globex"):
        RoutePlanner(graph, {"svc": ["host"]}).plan("src", "svc")


@pytest.mark.parametrize(
    ("phone", "allowing"),
    [
        (mobile(90.0, opt_in=False), None),
        (mobile(20.0), RoutePolicy(allow_low_battery_relays=True)),
        (mobile(29.9), RoutePolicy(allow_low_battery_relays=True)),
        (mobile(90.0, metered=True), RoutePolicy(allow_metered_relays=True)),
    ],
)
def test_phone_relays_follow_opt_in_battery_and_metered_rules(
    phone: object, allowing: RoutePolicy | None
) -> None:
    a = node("A", Role.MOBILE_EDGE, Role.RELAY, mobile=phone)
    graph = diamond(a, a_link=CHEAP, b_link=DEAR)
    assert _primary(graph) == ("src", "B", "host")
    if allowing is not None:
        assert _primary(graph, allowing) == ("src", "A", "host")


def test_a_charging_phone_on_low_battery_may_relay() -> None:
    a = node("A", Role.MOBILE_EDGE, Role.RELAY, mobile=mobile(10.0, charging=True))
    assert _primary(diamond(a, a_link=CHEAP, b_link=DEAR)) == ("src", "A", "host")


def test_a_mobile_edge_without_device_facts_never_relays() -> None:
    a = node("A", Role.MOBILE_EDGE, Role.RELAY)
    assert _primary(diamond(a, a_link=CHEAP, b_link=DEAR)) == ("src", "B", "host")


def test_mobile_relays_can_be_switched_off_fleet_wide() -> None:
    a = node("A", Role.MOBILE_EDGE, Role.RELAY, mobile=mobile(90.0, charging=True))
    off = RoutePolicy(allow_mobile_relays=False)
    assert _primary(diamond(a, a_link=CHEAP, b_link=DEAR), off) == ("src", "B", "host")


@pytest.mark.parametrize(
    "role",
    [
        Role.OBSERVER,
        Role.STORAGE,
        Role.CONTROL_PLANE,
        Role.ROUTE_COORDINATOR,
        Role.UPDATE_CACHE,
        Role.MOBILE_EDGE,
    ],
)
def test_nodes_without_carrier_roles_never_relay(role: Role) -> None:
    a = node("A", role)
    assert _primary(diamond(a, a_link=CHEAP, b_link=DEAR)) == ("src", "B", "host")


def test_trust_floor() -> None:
    a = node("A", Role.RELAY, trust_tier=1)
    graph = diamond(a, a_link=CHEAP, b_link=DEAR)
    assert _primary(graph) == ("src", "A", "host")
    assert _primary(graph, RoutePolicy(min_trust_tier=2)) == ("src", "B", "host")


def test_positions_exit_is_never_first_and_entry_never_in_the_middle() -> None:
    nodes = [
        client(),
        node("X", Role.EXIT),
        node("E", Role.ENTRY),
        node("E2", Role.ENTRY),
        node("R", Role.RELAY),
        node("host", Role.SERVICE_HOST),
    ]
    links = [
        link("src", "X", 1.0),
        link("X", "host", 1.0),  # src -> exit -> host: exit cannot be dialled first
        link("src", "E", 5.0),
        link("E", "E2", 1.0),
        link("E2", "host", 1.0),  # entry in the middle: refused
        link("E", "R", 20.0),
        link("R", "host", 20.0),
    ]
    planner = RoutePlanner(FabricGraph.build(nodes, links), {"svc": ["host"]})
    assert [r.hops for r in planner.plan("src", "svc").routes] == [("src", "E", "R", "host")]
    # an exit after a relay is fine
    links += [link("R", "X", 1.0)]
    planner = RoutePlanner(FabricGraph.build(nodes, links), {"svc": ["host"]})
    assert planner.plan("src", "svc").primary.hops == ("src", "E", "R", "X", "host")


def test_direct_to_a_replica_only_when_it_accepts_sessions() -> None:
    def plan_for(*roles: Role) -> list[tuple[str, ...]]:
        nodes = [client(), node("R", Role.RELAY), node("host", Role.SERVICE_HOST, *roles)]
        links = [link("src", "host", 1.0), link("src", "R"), link("R", "host")]
        planner = RoutePlanner(FabricGraph.build(nodes, links), {"svc": ["host"]})
        return [r.hops for r in planner.plan("src", "svc").routes]

    assert plan_for() == [("src", "R", "host")]
    assert plan_for(Role.ENTRY) == [("src", "host"), ("src", "R", "host")]


def test_hop_cap() -> None:
    chain = ["src", "a", "b", "c", "d", "host"]
    nodes = [client(), *(node(n, Role.RELAY) for n in chain[1:-1]), node("host", Role.SERVICE_HOST)]
    links = [link(x, y) for x, y in itertools.pairwise(chain)]
    graph = FabricGraph.build(nodes, links)
    with pytest.raises(NoRouteError, match="within 4 hops"):
        RoutePlanner(graph, {"svc": ["host"]}).plan("src", "svc")
    plan = RoutePlanner(graph, {"svc": ["host"]}, policy=RoutePolicy(max_hops=5)).plan("src", "svc")
    assert plan.primary.hops == tuple(chain)
    with pytest.raises(ValueError):
        RoutePolicy(max_hops=0)


def _two_sites(shared_domain: bool) -> FabricGraph:
    """Three parallel relays; the cheapest two share a site unless told otherwise."""
    nodes = [
        client(),
        node("A", Role.RELAY, domain="aws/eu-1a"),
        node("B", Role.RELAY, domain="aws/eu-1a" if shared_domain else "hetzner/fsn"),
        node("C", Role.RELAY, domain="aws/eu-1a" if shared_domain else "ovh/gra"),
        node("host", Role.SERVICE_HOST),
    ]
    links = []
    for relay, rtt in (("A", 1.0), ("B", 2.0), ("C", 3.0)):
        links += [link("src", relay, rtt), link(relay, "host", rtt)]
    return FabricGraph.build(nodes, links)


def test_alternates_take_other_failure_domains_and_say_so() -> None:
    plan = RoutePlanner(_two_sites(False), {"svc": ["host"]}).plan("src", "svc")
    assert [r.relays for r in plan.routes] == [("A",), ("B",), ("C",)]
    assert all(r.disjoint for r in plan.alternates)
    for alternate in plan.alternates:
        (reason,) = [r for r in alternate.reasons if r.factor == scoring.FAILURE_DOMAIN]
        assert reason.contribution == 0.0
        assert "disjoint" in reason.explanation and "aws/eu-1a" in reason.explanation
    assert plan.notes == ()


def test_when_every_relay_shares_a_site_the_reason_says_so() -> None:
    w = scoring.ScoringWeights()
    plan = RoutePlanner(_two_sites(True), {"svc": ["host"]}).plan("src", "svc")
    assert [r.relays for r in plan.routes] == [("A",), ("B",), ("C",)]
    for alternate in plan.alternates:
        assert not alternate.disjoint
        (reason,) = [r for r in alternate.reasons if r.factor == scoring.FAILURE_DOMAIN]
        assert reason.contribution == w.shared_failure_domain
        assert "shares failure domain(s) aws/eu-1a" in reason.explanation
        assert "no domain-disjoint alternate exists within 4 hops" in reason.explanation


def test_disjoint_alternate_is_preferred_over_a_cheaper_shared_one() -> None:
    nodes = [
        client(),
        node("A", Role.RELAY, domain="site-1"),
        node("A2", Role.RELAY, domain="site-1"),
        node("Z", Role.RELAY, domain="site-2"),
        node("host", Role.SERVICE_HOST),
    ]
    links = []
    for relay, rtt in (("A", 1.0), ("A2", 1.5), ("Z", 40.0)):
        links += [link("src", relay, rtt), link(relay, "host", rtt)]
    plan = RoutePlanner(FabricGraph.build(nodes, links), {"svc": ["host"]}).plan("src", "svc")
    assert [r.relays for r in plan.routes] == [("A",), ("Z",), ("A2",)]
    assert plan.alternates[0].disjoint and not plan.alternates[1].disjoint


def test_a_shared_first_hop_is_reused_only_as_a_last_resort() -> None:
    nodes = [
        client(),
        node("E", Role.ENTRY, domain="d1"),
        node("R1", Role.RELAY, domain="d2"),
        node("R2", Role.RELAY, domain="d3"),
        node("host", Role.SERVICE_HOST),
    ]
    links = [link("src", "E"), link("E", "R1"), link("E", "R2"), link("R1", "host")]
    links += [link("R2", "host", 15.0)]
    plan = RoutePlanner(FabricGraph.build(nodes, links), {"svc": ["host"]}).plan("src", "svc")
    assert [r.hops for r in plan.routes] == [("src", "E", "R1", "host"), ("src", "E", "R2", "host")]
    (reason,) = [r for r in plan.alternates[0].reasons if r.factor == scoring.FAILURE_DOMAIN]
    assert "shares relay(s) E" in reason.explanation
    assert "no relay-disjoint alternate exists" in reason.explanation
    assert plan.notes == ("only 1 alternate(s): no further eligible route within 4 hops",)


def test_errors_are_typed_and_explain_themselves() -> None:
    graph = diamond(node("A", Role.OBSERVER), node("B", Role.RELAY, tenant="globex"))
    planner = RoutePlanner(graph, {"svc": ["host"], "empty": []})
    with pytest.raises(UnknownNodeError, match="nobody"):
        planner.plan("nobody", "svc")
    with pytest.raises(UnknownServiceError, match="nothing"):
        planner.plan("src", "nothing")
    with pytest.raises(UnknownServiceError):
        planner.plan("src", "empty")
    with pytest.raises(NoRouteError) as caught:
        planner.plan("src", "svc")
    message = str(caught.value)
    assert "A: has no entry, relay or exit role" in message
    assert "B: belongs to tenant globex" in message


def test_stale_and_dangling_observations_are_dropped() -> None:
    nodes = [client(), node("A", Role.RELAY), node("host", Role.SERVICE_HOST)]
    old = link("src", "A", observed_at=100.0)
    new = link("src", "A", 7.0, observed_at=900.0)
    graph = FabricGraph.build(
        nodes,
        [old, new, link("A", "host", observed_at=0.0), link("A", "ghost"), link("A", "A")],
        now=1000.0,
        max_link_age_s=300.0,
    )
    assert graph.links[("src", "A")].rtt_ms == 7.0
    assert ("A", "host") not in graph.links
    assert graph.dropped_links == 4
    with pytest.raises(ValueError, match="duplicate"):
        FabricGraph.build([client(), client()], [])


def test_cone_cache_is_bounded() -> None:
    fleet = generate(400, seed=3, regions=2, tenants=1)
    planner = RoutePlanner(fleet.graph, fleet.services, cone_cache_size=2)
    for service in sorted(fleet.services)[:5]:
        with contextlib.suppress(NoRouteError):
            planner.plan(fleet.clients[0], service)
    assert len(planner._cones) == 2


def test_synthetic_fleets_are_reproducible_and_sparse() -> None:
    a, b = generate(1000, seed=7), generate(1000, seed=7)
    assert a.graph == b.graph and a.services == b.services
    assert generate(1000, seed=8).graph != a.graph
    degree = len(a.graph.links) / len(a.graph.nodes)
    assert 3 < degree < 20
    roles = {r for n in a.graph.nodes.values() for r in n.roles}
    assert {Role.ENTRY, Role.RELAY, Role.EXIT, Role.SERVICE_HOST, Role.MOBILE_EDGE} <= roles
    with pytest.raises(ValueError):
        generate(50, regions=4)


def test_a_nodes_echo_is_routed_to_that_node_only_whatever_its_roles() -> None:
    """``echo:<id>`` (``accessfabric ping``): the only replica is the node itself — a relay
    here, no service-host role needed — even when the service map names another node;
    another tenant's node is refused like any replica."""
    graph = FabricGraph.build(
        [client(), node("R", Role.RELAY), node("E", Role.ENTRY),
         node("host", Role.SERVICE_HOST), node("far", Role.ENTRY, tenant="globex")],
        [link("src", "R"), link("R", "E"), link("R", "host"), link("R", "far")],
    )  # fmt: skip
    services = {"echo:E": ["host"]}  # a registration could never say so: it is ignored
    planner = RoutePlanner(graph, services)
    assert planner.plan("src", "echo:E").primary.hops == ("src", "R", "E")
    assert planner.plan("src", "echo:host").primary.hops == ("src", "R", "host")
    with pytest.raises(NoRouteError, match="replica far belongs to tenant globex"):
        planner.plan("src", "echo:far")
    with pytest.raises(NoRouteError, match="replica nobody is not in the graph"):
        planner.plan("src", "echo:nobody")


def test_no_node_registers_another_nodes_echo(tmp_path: Path) -> None:
    from accessfabric.control.kernel.authority import Authority
    from accessfabric.control.kernel.vocabulary import Role as RecordRole
    from accessfabric.control.kernel.vocabulary import ServiceMode
    from accessfabric.control.server.services import ServiceDirectory, ServiceError
    from accessfabric.control.server.store.sqlite import SqliteStore
    from accessfabric.identity.keys import NodeKey

    store = SqliteStore(tmp_path / "s.db")
    services = ServiceDirectory(store, Authority(NodeKey.generate()))
    victim = NodeKey.generate().node_id
    with pytest.raises(ServiceError, match="names a node's built-in echo") as refused:
        services.register(
            f"echo:{victim}", NodeKey.generate().node_id,
            frozenset({RecordRole.SERVICE_HOST}), "acme", ServiceMode.ACTIVE_ACTIVE,
        )  # fmt: skip
    assert refused.value.code == "reserved_service"
    store.close()
