"""Exit and service-host pools (issue 17): several nodes serving one service (or one VPN
target) share its sources the way session placement shares devices over entries —
evenly among equals, each source's choice stable, a lost replica's sources spread over
all the others — while a replica that is really better still wins."""

from __future__ import annotations

from collections import Counter

from accessfabric.control.server.planner import (
    FabricGraph,
    LinkObservation,
    NodeFacts,
    RoutePlanner,
)
from accessfabric.control.server.planning.model import Role

SOURCES = [f"laptop-{i:03d}" for i in range(90)]
EXITS = ["exit-a", "exit-b", "exit-c"]


def _node(node_id: str, *roles: Role) -> NodeFacts:
    return NodeFacts(node_id=node_id, roles=frozenset(roles), tenant="acme", region="eu",
                     failure_domain=f"dc/{node_id}")  # fmt: skip


def planner(exits: list[str], rtt: dict[str, float] | None = None) -> RoutePlanner:
    rtt = rtt or {}
    nodes = [_node(s, Role.MOBILE_EDGE) for s in SOURCES] + [_node("entry", Role.ENTRY)]
    nodes += [_node(e, Role.EXIT, Role.SERVICE_HOST) for e in exits]
    links = []
    for a, b, ms in [*((s, "entry", 5.0) for s in SOURCES),
                     *(("entry", e, rtt.get(e, 10.0)) for e in exits)]:  # fmt: skip
        links += [
            LinkObservation(src=a, dst=b, rtt_ms=ms),
            LinkObservation(src=b, dst=a, rtt_ms=ms),
        ]
    return RoutePlanner(FabricGraph.build(nodes, links), {"vpn": exits})


def primaries(p: RoutePlanner) -> dict[str, str]:
    return {s: p.plan(s, "vpn").primary.hops[-1] for s in SOURCES}


def test_a_pool_of_equal_exits_shares_its_sources_evenly_and_stably() -> None:
    chosen = primaries(planner(EXITS))
    counts = Counter(chosen.values())
    assert set(counts) == set(EXITS)
    assert min(counts.values()) >= 20, counts  # 30 each on average
    assert primaries(planner(EXITS)) == chosen  # the same source, the same exit

    # exit-c goes: only its sources move, and they spread over both others
    without = primaries(planner(EXITS[:2]))
    assert all(without[s] == chosen[s] for s in SOURCES if chosen[s] != "exit-c")
    moved = Counter(without[s] for s in SOURCES if chosen[s] == "exit-c")
    assert set(moved) == {"exit-a", "exit-b"}, moved


def test_a_really_better_exit_still_wins() -> None:
    chosen = primaries(planner(EXITS, rtt={"exit-b": 4.0}))
    assert set(chosen.values()) == {"exit-b"}
