"""``accessfabric bench directory``: the peer directory and the planner on synthetic fleets.

For each size (``--quick``: 1k and 10k nodes; full: 10k and 100k; the environment
variable ``ACCESSFABRIC_BENCH_DIRECTORY_SIZES``, e.g. ``100000,1000000``, overrides) a
synthetic fleet (:mod:`accessfabric.control.server.synthetic`, no sockets) is loaded into the
control plane's own :class:`NodeRegistry` (a signed record per node) and
:class:`HeartbeatTable` (each node's facts: region, endpoints, the links it measured),
and measured:

* **directory memory**: RSS growth of loading the registry and heartbeat table, per node
  and in all — beside the bytes of the signed records alone (the data itself);
* **delta bytes per change**: a shared entry that devices measured changes its
  endpoints; the JSON bytes of the delta a device that measured it gets, beside the bytes
  of that device's whole directory; a tenant's service host changes; the bytes of the
  delta a device of *another* tenant gets (its partition: nothing);
* **directory fetch time**: building one device's delta right after the change (the
  control plane builds its view, then sends what changed), beside building its whole
  directory right after a second change;
* **planner p99**: :meth:`RoutePlanner.plan` per route (primary + 2 alternates),
  400 requests from an empty cone cache, beside the same at the smallest size of the run.

Records are signed by the authority as enrollment would (no store writes: the registry
is filled through its own ``_sign``/``_remember``, what a replica's load does after
reading the store).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from accessfabric.bench.control import SEED, synthetic_requests
from accessfabric.bench.report import BenchReport, BenchResult
from accessfabric.control.client.facts import HeartbeatFacts, PeerMeasurement
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.control.server.directory import directory_document
from accessfabric.control.server.heartbeats import HealthRules, HeartbeatTable
from accessfabric.control.server.planner import NoRouteError, RoutePlanner
from accessfabric.control.server.registry import NodeRegistry, RegisteredNode
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.control.server.synthetic import SyntheticFleet, generate
from accessfabric.identity.keys import NodeKey
from accessfabric.percentile import percentile

SIZES_ENV = "ACCESSFABRIC_BENCH_DIRECTORY_SIZES"
FULL_SIZES = (10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)
REQUESTS = 400
NOW = 1_800_000_000.0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _label(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k"


def _bytes(document: dict[str, Any]) -> int:
    return len(json.dumps(document, separators=(",", ":")).encode())


class Loaded:
    """A synthetic fleet in the control plane's registry and heartbeat table."""

    def __init__(self, fleet: SyntheticFleet, work: Path) -> None:
        self.store = SqliteStore(work / "control.db", clock=lambda: NOW)
        self.registry = NodeRegistry(self.store, Authority(NodeKey.generate()),
                                     clock=lambda: NOW)  # fmt: skip
        self.heartbeats = HeartbeatTable(self.store, clock=lambda: NOW,
                                         rules=HealthRules.for_interval(3600))  # fmt: skip
        self.registry.on_change = self.heartbeats.changes.note
        self.ids: dict[str, str] = {}
        self.record_bytes = 0
        for name, facts in fleet.graph.nodes.items():
            roles = facts.roles or frozenset({Role.MOBILE_EDGE})
            record, blob = self.registry._sign(
                public_key=secrets.token_bytes(32), sealing_public_key=secrets.token_bytes(32),
                roles=roles, tenant=facts.tenant, scopes=frozenset(), trust_tier=facts.trust_tier,
                revision=1, now=NOW,
            )  # fmt: skip
            self.registry._remember(RegisteredNode(record=record, blob=blob, enrolled_at=NOW), 1)
            self.ids[name] = record.node_id
            self.record_bytes += len(blob)
        self.peers: dict[str, list[PeerMeasurement]] = {}
        for (src, dst), link in fleet.graph.links.items():
            self.peers.setdefault(src, []).append(PeerMeasurement(self.ids[dst], link.rtt_ms))
        for name, facts in fleet.graph.nodes.items():
            self.beat(name, facts.region, self._endpoints(name, 0))
        self.peers.clear()

    def _endpoints(self, name: str, generation: int) -> tuple[str, ...]:
        if "client" in name:
            return ()
        return (f"tcp+tls://{name}.example:{443 + generation}",)

    def beat(self, name: str, region: str, endpoints: tuple[str, ...]) -> None:
        node_id = self.ids[name]
        state = self.heartbeats.get(node_id)
        peers = tuple(self.peers.get(name, ())) if state is None else state.facts.peers
        facts = HeartbeatFacts(software_version="bench", transports=("tcp_tls",),
                               endpoints=endpoints, peers=peers, region=region)  # fmt: skip
        self.heartbeats.record(node_id, facts, NOW)

    def document(self, name: str, since: str | None = None) -> dict[str, Any]:
        node = self.registry.get(self.ids[name])
        assert node is not None
        return directory_document(node, self.registry, self.heartbeats, NOW, None, since)


def _watchers(fleet: SyntheticFleet) -> tuple[str, str, str, str]:
    """(device, shared entry it measured, device of another tenant, that tenant's host
    changed next: a service host of a tenant other than the second device's)."""
    graph = fleet.graph
    device = next(c for c in fleet.clients
                  if any(dst.split("-")[1] == "entry" for (src, dst) in graph.links
                         if src == c))  # fmt: skip
    entry = sorted(dst for (src, dst) in graph.links if src == device and "-entry-" in dst)[0]
    tenant = graph.nodes[device].tenant
    stranger = next(c for c in fleet.clients if graph.nodes[c].tenant != tenant)
    theirs = (graph.nodes[stranger].tenant, "provider")
    host = next(n for n, f in graph.nodes.items() if "-host-" in n and f.tenant not in theirs)
    return device, entry, stranger, host


def _measure(size: int, work: Path) -> dict[str, Any]:
    gc.collect()
    started = time.perf_counter()
    fleet = generate(size, seed=SEED)
    generated = time.perf_counter()
    gc.collect()
    rss_graph = _rss_bytes()
    loaded = Loaded(fleet, work)
    gc.collect()
    rss_loaded = _rss_bytes()
    load_s = time.perf_counter() - generated
    device, entry, stranger, host = _watchers(fleet)
    nodes = fleet.graph.nodes
    held = {n: loaded.document(n) for n in (device, stranger)}
    loaded.beat(entry, nodes[entry].region, loaded._endpoints(entry, 1))  # one change
    t0 = time.perf_counter()
    delta = loaded.document(device, held[device]["cursor"])
    t1 = time.perf_counter()
    loaded.beat(entry, nodes[entry].region, loaded._endpoints(entry, 2))  # as cold again
    t2 = time.perf_counter()
    whole = loaded.document(device)
    t3 = time.perf_counter()
    assert delta["delta"] is True and [e["node_id"] for e in delta["entries"]] == [
        loaded.ids[entry]
    ], delta
    cursor = loaded.document(stranger)["cursor"]
    loaded.beat(host, nodes[host].region, loaded._endpoints(host, 1))  # another tenant's
    other = loaded.document(stranger, cursor)
    assert other["delta"] is True and other["entries"] == [] and "ids" not in other, other
    planner = RoutePlanner(fleet.graph, fleet.services)
    requests = synthetic_requests(fleet, REQUESTS, SEED + size)
    gc.freeze()
    try:
        times = []
        for client, service in requests:
            t = time.perf_counter()
            with contextlib.suppress(NoRouteError):
                planner.plan(client, service)
            times.append(time.perf_counter() - t)
    finally:
        gc.unfreeze()
    loaded.store.close()
    return {
        "size": len(nodes),
        "generate_s": generated - started,
        "load_s": load_s,
        "graph_rss": rss_graph,
        "directory_rss": rss_loaded - rss_graph,
        "record_bytes": loaded.record_bytes,
        "delta_bytes": _bytes(delta),
        "whole_bytes": _bytes(whole),
        "other_tenant_delta_bytes": _bytes(other),
        "delta_ms": (t1 - t0) * 1000,
        "whole_ms": (t3 - t2) * 1000,
        "planner_p99_ms": percentile(times, 0.99) * 1000,
        "planner_p50_ms": percentile(times, 0.5) * 1000,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _sizes(quick: bool) -> tuple[int, ...]:
    raw = os.environ.get(SIZES_ENV, "")
    if raw:
        return tuple(int(part) for part in raw.split(",") if part.strip())
    return QUICK_SIZES if quick else FULL_SIZES


def run(quick: bool) -> BenchReport:
    report = BenchReport("directory")
    runs = []
    with tempfile.TemporaryDirectory(prefix="af-bench-directory-") as tmp:
        for i, size in enumerate(_sizes(quick)):
            work = Path(tmp) / str(i)
            work.mkdir()
            runs.append(_measure(size, work))
    first = runs[0]
    mib = 1024 * 1024
    for m in runs:
        label, n, base = _label(m["size"]), m["size"], _label(first["size"])
        figures = [
            (f"directory memory {label}", round(m["directory_rss"] / mib, 1), "MiB",
             f"signed records alone {label}", round(m["record_bytes"] / mib, 1)),
            (f"directory bytes per node {label}", round(m["directory_rss"] / n), "B",
             f"signed record per node {label}", round(m["record_bytes"] / n)),
            (f"delta bytes per change {label}", m["delta_bytes"], "B",
             f"whole directory {label}", m["whole_bytes"]),
            (f"other tenant's delta {label}", m["other_tenant_delta_bytes"], "B",
             f"delta bytes per change {base}", first["delta_bytes"]),
            (f"delta fetch {label}", round(m["delta_ms"], 2), "ms",
             f"whole fetch {label}", round(m["whole_ms"], 2)),
            (f"planner p99 {label}", round(m["planner_p99_ms"], 2), "ms",
             f"planner p99 {base}", round(first["planner_p99_ms"], 2)),
        ]  # fmt: skip
        for metric, value, unit, baseline_metric, baseline_value in figures:
            report.add(
                BenchResult(
                    metric=metric,
                    value=value,
                    unit=unit,
                    baseline_metric=baseline_metric,
                    baseline_value=baseline_value,
                )
            )
        report.notes[f"fleet {label}"] = (
            f"{n:,} nodes; generated in {m['generate_s']:.1f} s, loaded into registry and "
            f"heartbeat table in {m['load_s']:.1f} s; synthetic graph RSS "
            f"{m['graph_rss'] / mib:.0f} MiB; planner p50 {m['planner_p50_ms']:.2f} ms; "
            f"peak RSS {m['max_rss_mib']:.0f} MiB"
        )
    last = runs[-1]
    per_node = last["directory_rss"] / last["size"]
    report.notes["1M extrapolated"] = (
        f"{per_node * 1_000_000 / 1024**3:.2f} GiB of directory at 1M nodes from "
        f"{per_node:.0f} B/node measured at {_label(last['size'])}"
    )
    report.notes["python"] = (
        f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"
    )
    report.notes["target"] = (
        "directory memory <= 2 GiB and planner p99 <= 20 ms at 1M nodes; "
        "delta bytes per change independent of fleet size"
    )
    return report
