"""``accessfabric bench control``: the control plane's figures, each beside a same-run baseline.

Route planner (this module today): for synthetic fleets of 1k, 10k and 100k
nodes (``--quick``: 1k and 10k), the time of :meth:`RoutePlanner.plan` per
route request -- primary plus two alternates, with reasons -- at p50 and p99,
beside plain Dijkstra on RTT alone (no roles, no policy, no alternates) from
the same source to the nearest replica of the same service over the same
graph, in the same run.

* Requests are (client, service of the client's tenant) pairs drawn with a
  fixed seed.  The first pass starts with an empty cone cache, so it includes
  building each service's cone the first time it is asked for (at 100k nodes
  there are 1,000 services, so most requests of that pass are cold); the
  second pass replays the same requests with warm cones.
* Building the fleet and the planner's index is not timed per route; the
  index build time is reported in the notes.  After building, the objects are
  moved out of the garbage collector's way with ``gc.freeze()`` -- what a
  control replica does after loading a snapshot -- and the collector stays on.

Control API (:mod:`accessfabric.bench.control_api`): signed route leases issued
per second and heartbeats ingested per second on one SQLite replica, each with
its own same-run baseline, run first and added to the same report.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import platform
import random
import sys
import time
from collections.abc import Sequence

from accessfabric.bench import control_api, control_etcd
from accessfabric.bench.report import BenchReport, BenchResult
from accessfabric.control.server.planner import NoRouteError, RoutePlanner
from accessfabric.control.server.synthetic import SyntheticFleet, generate
from accessfabric.percentile import percentile

FULL_SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)
SEED = 20261127


def _label(size: int) -> str:
    return f"{size // 1000}k"


def synthetic_requests(fleet: SyntheticFleet, count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    by_tenant: dict[str, list[str]] = {}
    for name in sorted(fleet.services):
        by_tenant.setdefault(name.split("-", 1)[0], []).append(name)
    requests: list[tuple[str, str]] = []
    while len(requests) < count:
        client = rng.choice(fleet.clients)
        services = by_tenant.get(fleet.graph.nodes[client].tenant)
        if services:
            requests.append((client, rng.choice(services)))
    return requests


class RttDijkstra:
    """The baseline: textbook Dijkstra on link RTT over every link, stopping at a replica."""

    def __init__(self, fleet: SyntheticFleet) -> None:
        self.adjacency: dict[str, list[tuple[str, float]]] = {}
        for (src, dst), link in fleet.graph.links.items():
            self.adjacency.setdefault(src, []).append((dst, link.rtt_ms))

    def route(self, source: str, replicas: Sequence[str]) -> list[str] | None:
        targets = set(replicas)
        dist = {source: 0.0}
        previous: dict[str, str] = {}
        heap = [(0.0, source)]
        adjacency = self.adjacency
        while heap:
            d, u = heapq.heappop(heap)
            if d > dist[u]:
                continue
            if u in targets:
                path = [u]
                while path[-1] != source:
                    path.append(previous[path[-1]])
                return path[::-1]
            for v, rtt in adjacency.get(u, ()):
                nd = d + rtt
                if nd < dist.get(v, float("inf")):
                    dist[v] = nd
                    previous[v] = u
                    heapq.heappush(heap, (nd, v))
        return None


def _measure(size: int, count: int) -> tuple[list[BenchResult], dict[str, str]]:
    started = time.perf_counter()
    fleet = generate(size, seed=SEED)
    generated = time.perf_counter()
    planner = RoutePlanner(fleet.graph, fleet.services)
    indexed = time.perf_counter()
    baseline = RttDijkstra(fleet)
    requests = synthetic_requests(fleet, count, SEED + size)
    gc.collect()
    gc.freeze()
    try:
        cold, warm, base = [], [], []
        planned = failed = alternates = disjoint = 0
        for client, service in requests:
            t0 = time.perf_counter()
            try:
                plan = planner.plan(client, service)
            except NoRouteError:
                failed += 1
            else:
                planned += 1
                alternates += len(plan.alternates)
                disjoint += sum(1 for route in plan.alternates if route.disjoint)
            t1 = time.perf_counter()
            baseline.route(client, fleet.services[service])
            t2 = time.perf_counter()
            cold.append(t1 - t0)
            base.append(t2 - t1)
        for client, service in requests:
            t0 = time.perf_counter()
            with contextlib.suppress(NoRouteError):
                planner.plan(client, service)
            warm.append(time.perf_counter() - t0)
    finally:
        gc.unfreeze()
    label = _label(size)
    ms = 1000.0
    base_p50, base_p99 = percentile(base, 0.5) * ms, percentile(base, 0.99) * ms
    results = [
        BenchResult(
            metric=f"planner {what} {label}",
            value=round(percentile(samples, quantile) * ms, 3),
            unit="ms",
            baseline_metric=f"RTT-only Dijkstra {baseline} {label}",
            baseline_value=round(baseline_value, 3),
        )
        for what, samples, quantile, baseline, baseline_value in (
            ("p50 per route", cold, 0.5, "p50", base_p50),
            ("p99 per route", cold, 0.99, "p99", base_p99),
            ("p99 warm cones", warm, 0.99, "p99", base_p99),
        )
    ]
    notes = {
        f"fleet {label}": f"{len(fleet.graph.nodes):,} nodes, {len(fleet.graph.links):,} links, "
        f"{fleet.regions} regions, {len(fleet.services):,} services; generated in "
        f"{generated - started:.1f} s, planner index built in {indexed - generated:.2f} s",
        f"routes {label}": f"{count} requests: {planned} planned, {failed} without a route "
        f"within 4 hops; {alternates / max(1, planned):.2f} alternates per plan, "
        f"{disjoint / max(1, alternates):.0%} of them relay- and domain-disjoint",
    }
    return results, notes


def run(quick: bool) -> BenchReport:
    """Leases/s and heartbeats/s (control API), then planner latency per route at each
    fleet size beside RTT-only Dijkstra."""
    report = BenchReport("control")
    for result in control_api.run_control_figures(quick):
        report.add(result)
    report.notes.update(control_api.LAST_NOTES)
    for result in control_etcd.run_etcd_figures(quick):  # issue 16: beside SQLite
        report.add(result)
    report.notes.update(control_etcd.LAST_NOTES)
    sizes = QUICK_SIZES if quick else FULL_SIZES
    count = 200 if quick else 400
    for size in sizes:
        results, notes = _measure(size, count)
        for result in results:
            report.add(result)
        report.notes.update(notes)
    report.notes.update(
        {
            "python": f"{platform.python_implementation()} {platform.python_version()} "
            f"({sys.executable})",
            "machine": f"{platform.machine()}, {platform.system()}",
            "method": "per route: RoutePlanner.plan (primary + 2 alternates + reasons); "
            "first pass from an empty cone cache, warm pass replays it; baseline: heapq "
            "Dijkstra on RTT over all links to the nearest replica, same requests; "
            "gc.freeze() after building, collector on",
            "target": "leases >= 2,000/s; heartbeats >= 5,000/s; "
            "planner p99 <= 20 ms per route at 100k nodes",
        }
    )
    return report
