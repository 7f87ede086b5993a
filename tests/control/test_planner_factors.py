"""Each scoring factor pushes the score the right way, alone and through the planner."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from accessfabric.control.server.planner import (
    FabricGraph,
    LinkObservation,
    NodeFacts,
    Role,
    RoutePlanner,
    ScoringWeights,
)
from accessfabric.control.server.planning import scoring
from tests.control.planner_graphs import both, client, diamond, link, mobile, node

W = ScoringWeights()

LINK_FACTORS = [
    # (factor, field, worse, better)
    (scoring.RTT, "rtt_ms", 40.0, 10.0),
    (scoring.JITTER, "jitter_ms", 9.0, 1.0),
    (scoring.LOSS, "loss", 0.05, 0.001),
    (scoring.BANDWIDTH, "bandwidth_mbps", 5.0, 500.0),
    (scoring.LINK_QUEUE, "queue_depth", 80.0, 2.0),
    (scoring.RETRANSMITS, "retransmit_rate", 0.04, 0.0),
]

NODE_FACTORS = [
    (scoring.NODE_PRESSURE, "cpu_pressure", 0.9, 0.1),
    (scoring.NODE_PRESSURE, "memory_pressure", 0.9, 0.1),
    (scoring.NODE_PRESSURE, "queue_pressure", 0.9, 0.1),
    (scoring.RELIABILITY, "reliability", 0.8, 0.999),
    (scoring.TRUST, "trust_tier", 1, 3),
    (scoring.OPERATOR_COST, "operator_cost", 2.0, 0.0),
]


def _contribution(reasons: tuple[scoring.Reason, ...], factor: str) -> float:
    return math.fsum(r.contribution for r in reasons if r.factor == factor)


@pytest.mark.parametrize(("factor", "field", "worse", "better"), LINK_FACTORS)
def test_link_factor_direction(factor: str, field: str, worse: float, better: float) -> None:
    base = LinkObservation(src="a", dst="b", rtt_ms=10.0)
    bad = dataclasses.replace(base, **{field: worse})
    good = dataclasses.replace(base, **{field: better})
    assert scoring.link_cost(bad, W) > scoring.link_cost(good, W)
    # and the planner takes the better link, charging the worse one more on the alternate
    plan = RoutePlanner(
        diamond(a_link={field: worse}, b_link={field: better}), {"svc": ["host"]}
    ).plan("src", "svc")
    assert plan.primary.hops == ("src", "B", "host")
    assert plan.alternates[0].hops == ("src", "A", "host")
    assert _contribution(plan.alternates[0].reasons, factor) > _contribution(
        plan.primary.reasons, factor
    )


@pytest.mark.parametrize(("factor", "field", "worse", "better"), NODE_FACTORS)
def test_node_factor_direction(factor: str, field: str, worse: float, better: float) -> None:
    a = node("A", Role.RELAY, **{field: worse})
    b = node("B", Role.RELAY, **{field: better})
    assert scoring.hop_cost(a, W) > scoring.hop_cost(b, W)
    plan = RoutePlanner(diamond(a, b), {"svc": ["host"]}).plan("src", "svc")
    assert plan.primary.hops == ("src", "B", "host")
    assert _contribution(plan.alternates[0].reasons, factor) > _contribution(
        plan.primary.reasons, factor
    )


def test_replica_facts_count_too() -> None:
    """Pressure, reliability, trust and cost of the replica itself steer replica choice."""
    nodes = [
        client(),
        node("R", Role.RELAY),
        node("h1", Role.SERVICE_HOST, reliability=0.7, cpu_pressure=0.9),
        node("h2", Role.SERVICE_HOST),
    ]
    links = [link("src", "R"), link("R", "h1"), link("R", "h2")]
    plan = RoutePlanner(FabricGraph.build(nodes, links), {"svc": ["h1", "h2"]}).plan("src", "svc")
    assert plan.primary.replica == "h2"


def test_more_reliability_is_better() -> None:
    scores = [
        scoring.hop_cost(node("x", Role.RELAY, reliability=r), W) for r in (0.5, 0.9, 0.99, 1.0)
    ]
    assert scores == sorted(scores, reverse=True)


def test_more_bandwidth_is_better_and_saturates() -> None:
    terms = [scoring.bandwidth_term(bw, W) for bw in (0.0, 1.0, 10.0, 100.0, 10_000.0)]
    assert terms == sorted(terms, reverse=True)
    assert terms[0] == pytest.approx(W.bandwidth_ms)
    assert terms[-1] < 0.2


def test_mobile_relay_costs_more_than_a_fixed_relay() -> None:
    phone = node("A", Role.MOBILE_EDGE, Role.RELAY, mobile=mobile(95.0, charging=True))
    plan = RoutePlanner(diamond(phone, node("B", Role.RELAY)), {"svc": ["host"]}).plan("src", "svc")
    assert plan.primary.hops == ("src", "B", "host")
    assert _contribution(plan.alternates[0].reasons, scoring.MOBILE_RELAY) == W.mobile_relay


def test_lower_battery_is_worse_unless_charging() -> None:
    low = node("A", Role.MOBILE_EDGE, Role.RELAY, mobile=mobile(40.0))
    high = node("B", Role.MOBILE_EDGE, Role.RELAY, mobile=mobile(90.0))
    assert scoring.mobile_term(low, W) > scoring.mobile_term(high, W)
    plan = RoutePlanner(diamond(low, high), {"svc": ["host"]}).plan("src", "svc")
    assert plan.primary.hops == ("src", "B", "host")
    charging = node("C", Role.MOBILE_EDGE, Role.RELAY, mobile=mobile(40.0, charging=True))
    assert scoring.mobile_term(charging, W) == W.mobile_relay


def test_fewer_hops_is_better_at_equal_link_cost() -> None:
    nodes = [client(), node("A", Role.RELAY), node("B", Role.RELAY), node("C", Role.RELAY)]
    nodes.append(node("host", Role.SERVICE_HOST))
    zero = {"rtt": 0.0, "bandwidth_mbps": 1e9}
    links = [
        link("src", "A", **zero),
        link("A", "host", **zero),
        link("src", "B", **zero),
        link("B", "C", **zero),
        link("C", "host", **zero),
    ]
    plan = RoutePlanner(FabricGraph.build(nodes, links), {"svc": ["host"]}).plan("src", "svc")
    assert plan.primary.hops == ("src", "A", "host")
    longer = plan.alternates[0]
    assert _contribution(longer.reasons, scoring.HOPS) == 2 * W.per_hop


def test_same_region_replica_is_preferred() -> None:
    nodes = [
        client(region="eu"),
        node("R", Role.RELAY),
        node("far", Role.SERVICE_HOST, region="us"),
        node("near", Role.SERVICE_HOST, region="eu"),
    ]
    links = [link("src", "R"), link("R", "far"), link("R", "near")]
    plan = RoutePlanner(FabricGraph.build(nodes, links), {"svc": ["far", "near"]}).plan(
        "src", "svc"
    )
    assert plan.primary.replica == "near"
    far = plan.alternates[0]
    assert far.replica == "far"
    assert _contribution(far.reasons, scoring.LOCALITY) == W.other_region


def test_weights_of_zero_switch_a_factor_off() -> None:
    graph = diamond(a_link={"loss": 0.2}, b_link={"rtt": 11.0})
    loss_blind = ScoringWeights(loss_per_percent=0.0)
    plan = RoutePlanner(graph, {"svc": ["host"]}, weights=loss_blind).plan("src", "svc")
    assert plan.primary.hops == ("src", "A", "host")
    assert all(r.factor != scoring.LOSS for r in plan.primary.reasons)


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(ScoringWeights)])
def test_every_weight_is_documented_and_validated(name: str) -> None:
    source = Path(scoring.__file__).read_text(encoding="utf-8")
    assert f"    {name}: float = " in source
    with pytest.raises(ValueError):
        ScoringWeights(**{name: -1.0})  # type: ignore[arg-type]


def test_reason_lines_read_well() -> None:
    plan = RoutePlanner(diamond(), {"svc": ["host"]}).plan("src", "svc")
    text = plan.primary.describe()
    assert text.splitlines()[0].startswith("src -> A -> host  score ")
    assert "rtt" in text and "RTT 20.0 ms over 2 link(s)" in text


def test_bidirectional_links_are_separate_observations() -> None:
    graph = FabricGraph.build(
        [client(), node("A", Role.RELAY), node("host", Role.SERVICE_HOST)],
        [*both("src", "A"), link("A", "host", 5.0), link("host", "A", 500.0)],
    )
    assert graph.links[("A", "host")].rtt_ms == 5.0
    assert graph.links[("host", "A")].rtt_ms == 500.0


def test_node_facts_are_validated() -> None:
    with pytest.raises(ValueError):
        node("x", reliability=1.5)
    with pytest.raises(ValueError):
        node("x", trust_tier=9)
    with pytest.raises(ValueError):
        LinkObservation(src="a", dst="b", rtt_ms=-1.0)
    with pytest.raises(ValueError):
        LinkObservation(src="a", dst="b", rtt_ms=1.0, loss=2.0)
    assert isinstance(node("x"), NodeFacts)
