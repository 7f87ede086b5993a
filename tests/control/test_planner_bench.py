"""The control benchmark suite is registered and reports planner figures beside its baseline."""

from __future__ import annotations

from accessfabric.bench import SUITES, load_suite
from accessfabric.bench.control import RttDijkstra, _measure
from accessfabric.control.server.synthetic import generate


def test_control_suite_is_registered() -> None:
    assert SUITES["control"] == "accessfabric.bench.control"
    assert callable(load_suite("control"))


def test_one_size_reports_p50_p99_and_warm_beside_dijkstra() -> None:
    results, notes = _measure(1000, 30)
    assert [r.metric for r in results] == [
        "planner p50 per route 1k",
        "planner p99 per route 1k",
        "planner p99 warm cones 1k",
    ]
    assert all(r.unit == "ms" and r.value > 0 and r.baseline_value > 0 for r in results)
    assert all(r.baseline_metric.startswith("RTT-only Dijkstra") for r in results)
    assert "30 requests" in notes["routes 1k"]


def test_baseline_reaches_a_replica() -> None:
    fleet = generate(400, seed=5, regions=2)
    dijkstra = RttDijkstra(fleet)
    replicas = sorted(fleet.services.items())[0][1]
    path = dijkstra.route(fleet.clients[0], replicas)
    assert path is not None and path[0] == fleet.clients[0] and path[-1] in replicas
