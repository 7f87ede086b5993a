"""Control figures on etcd: leases/s, heartbeats/s and p99 lease latency with 1 and 2 replicas.

A real 3-member etcd cluster on loopback (:class:`LocalEtcdCluster`, members on the same
machine as the replicas) holds the fleet; each replica is a separate **process** with its
own :class:`ControlPlane` over its own :class:`EtcdStore` (spawned, so two replicas really
use two CPUs).  The same worker runs once on SQLite in the same run: that is the baseline
of every etcd row, so the etcd/SQLite ratio is what the report shows.

* Leases: the fleet of ``control_api`` (laptops, 4 relays in 4 failure domains, 2 service
  hosts); each replica issues for its half of the laptops (``RouteLeasing.issue``: plan,
  slot epochs and fencing token from the store, one signed lease per route); per-request
  latency gives the p99.
* Heartbeats: ``AF-MAC`` heartbeats of the replica's own nodes (nodes stick to one
  replica), window + MAC + replay + facts + health + soft-state write-behind to the store
  (ADR 0019) on the 0.5 s tick.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accessfabric.bench import control_api
from accessfabric.bench.report import BenchResult
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.vocabulary import Role, ServiceMode
from accessfabric.control.server.plane import ControlConfig, ControlPlane
from accessfabric.control.server.store.base import Store
from accessfabric.control.server.store.etcd_cluster import LocalEtcdCluster, etcd_binary
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.identity.keys import NodeKey
from accessfabric.percentile import percentile
from accessfabric.wire.registry import TrafficClass

CONFIG = ControlConfig(replica_ttl=600.0)
"""Replica leases outlive the run: the figure is issuing, not keepalives."""


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """How a worker process opens the shared store."""

    sqlite_path: str | None = None
    etcd_endpoints: tuple[str, ...] = ()
    namespace: str = ""

    def open(self) -> Store:
        if self.sqlite_path is not None:
            return SqliteStore(self.sqlite_path)
        from accessfabric.control.server.store.etcd import EtcdStore

        return EtcdStore(list(self.etcd_endpoints), namespace=self.namespace)


def _key_bytes(key: NodeKey) -> bytes:
    return key.private_key.private_bytes_raw()


def _setup_fleet(spec: StoreSpec, authority_path: Path, sources: int) -> dict[str, list[bytes]]:
    """Enroll the fleet once (in the parent); the private keys of every node, by kind."""
    store = spec.open()
    plane = ControlPlane(store, Authority.load(authority_path), config=CONFIG)
    relays = [NodeKey.generate() for _ in range(4)]
    hosts = [NodeKey.generate() for _ in range(2)]
    laptops = [NodeKey.generate() for _ in range(sources)]
    for key in relays:
        control_api._enroll(plane, key, ["entry", "relay"])
    for key in hosts:
        control_api._enroll(plane, key, ["service-host"])
        roles = frozenset({Role.SERVICE_HOST})
        plane.services.register("rdp", key.node_id, roles, "acme", ServiceMode.ACTIVE_ACTIVE)
    for key in laptops:
        control_api._enroll(plane, key, ["mobile-edge"])
    store.close()
    return {
        "relays": [_key_bytes(k) for k in relays],
        "hosts": [_key_bytes(k) for k in hosts],
        "laptops": [_key_bytes(k) for k in laptops],
    }


def _lease_worker(
    spec: StoreSpec,
    authority_path: str,
    fleet: dict[str, list[bytes]],
    share: tuple[int, int],
    start_at: float,
    seconds: float,
    results: Any,
) -> None:
    """One replica: load the registry, take the fleet's heartbeats, issue leases."""
    store = spec.open()
    plane = ControlPlane(store, Authority.load(authority_path), config=CONFIG)
    plane.load()
    relays = [NodeKey.from_seed(raw) for raw in fleet["relays"]]
    hosts = [NodeKey.from_seed(raw) for raw in fleet["hosts"]]
    laptops = [NodeKey.from_seed(raw) for raw in fleet["laptops"]]
    for index, key in enumerate(relays):
        facts = control_api._facts([(h, 2.0 + index) for h in hosts], domain=f"dc-{index}")
        plane.heartbeats.record(key.node_id, facts)
    for key in hosts:
        plane.heartbeats.record(key.node_id, control_api._facts([], service="rdp"))
    for index, key in enumerate(laptops):
        peers = [(r, 5.0 + ((index + i) % 4) * 3) for i, r in enumerate(relays)]
        plane.heartbeats.record(key.node_id, control_api._facts(peers))
    part, parts = share
    mine = [k for i, k in enumerate(laptops) if i % parts == part]
    nodes = [node for k in mine if (node := plane.registry.get(k.node_id)) is not None]
    plane.leasing.issue(nodes[0], "rdp", TrafficClass.INTERACTIVE)  # warm the planner
    time.sleep(max(0.0, start_at - time.time()))
    latencies: list[float] = []
    issued = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for node in nodes[:50]:
            begun = time.perf_counter()
            grant = plane.leasing.issue(node, "rdp", TrafficClass.INTERACTIVE)
            latencies.append(time.perf_counter() - begun)
            issued += len(grant.routes)
        nodes = nodes[50:] + nodes[:50]
    elapsed = time.perf_counter() - started
    store.close()
    results.put(("leases", issued / elapsed, latencies))


def _heartbeat_worker(
    spec: StoreSpec,
    authority_path: str,
    count_nodes: int,
    rounds: int,
    start_at: float,
    results: Any,
) -> None:
    """One replica ingesting MAC heartbeats of its own ``count_nodes`` nodes."""
    store = spec.open()
    plane = ControlPlane(store, Authority.load(authority_path), config=CONFIG)
    keys = [NodeKey.generate() for _ in range(count_nodes)]
    for key in keys:
        control_api._enroll(plane, key, ["relay"])
    requests = control_api._heartbeat_requests(plane, keys, rounds, mac=True)
    time.sleep(max(0.0, start_at - time.time()))
    elapsed = asyncio.run(control_api._ingest_run(plane, requests))
    store.close()
    results.put(("heartbeats", len(requests) / elapsed, []))


def _run_workers(
    target: Any, argument_sets: list[tuple[Any, ...]]
) -> list[tuple[float, list[float]]]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=target, args=(*args, results)) for args in argument_sets]
    for process in processes:
        process.start()
    collected = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    return [(rate, latencies) for _, rate, latencies in collected]


def _p99_ms(latencies: list[float]) -> float:
    return percentile(latencies, 0.99) * 1000 if latencies else 0.0


def _figures(spec: StoreSpec, directory: Path, replicas: int, quick: bool) -> dict[str, float]:
    sources = 100 if quick else 400
    seconds = 1.5 if quick else 4.0
    count_nodes = 500 if quick else 2_000
    rounds = 4 if quick else 5
    authority_path = directory / f"authority-{time.monotonic_ns()}.key"
    Authority.create(authority_path)
    fleet = _setup_fleet(spec, authority_path, sources)
    start_at = time.time() + 4.0  # every worker has spawned and loaded by then
    leases = _run_workers(
        _lease_worker,
        [
            (spec, str(authority_path), fleet, (part, replicas), start_at, seconds)
            for part in range(replicas)
        ],
    )
    start_at = time.time() + 4.0 + count_nodes / 400
    beats = _run_workers(
        _heartbeat_worker,
        [(spec, str(authority_path), count_nodes // replicas, rounds, start_at)] * replicas,
    )
    return {
        "leases": sum(rate for rate, _ in leases),
        "p99_ms": _p99_ms([value for _, latencies in leases for value in latencies]),
        "heartbeats": sum(rate for rate, _ in beats),
    }


LAST_NOTES: dict[str, str] = {}


def run_etcd_figures(quick: bool) -> list[BenchResult]:
    """The etcd rows of ``accessfabric bench control`` beside SQLite of the same run; no
    rows (and a note saying why) when etcd is not installed."""
    LAST_NOTES.clear()
    if etcd_binary() is None:
        LAST_NOTES["etcd"] = "not measured: etcd is not installed (apt-get install etcd-server)"
        return []
    rows: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="af-bench-etcd-") as tmp:
        directory = Path(tmp)
        sqlite = _figures(StoreSpec(sqlite_path=str(directory / "base.db")), directory, 1, quick)
        with LocalEtcdCluster(directory / "etcd", size=3) as cluster:
            figures = {
                replicas: _figures(
                    StoreSpec(
                        etcd_endpoints=tuple(cluster.endpoints), namespace=f"/bench-{replicas}"
                    ),
                    directory,
                    replicas,
                    quick,
                )
                for replicas in (1, 2)
            }
    measured = (  # figure, metric, unit, decimals
        ("leases", "route leases issued/s", "leases/s", 1),
        ("heartbeats", "heartbeats ingested/s", "beats/s", 1),
        ("p99_ms", "p99 route lease request latency", "ms", 2),
    )
    for replicas, etcd in figures.items():
        label = f"etcd, {replicas} replica{'s' if replicas > 1 else ''}"
        rows.extend(
            BenchResult(
                metric=f"{metric} ({label})",
                value=round(etcd[figure], decimals),
                unit=unit,
                baseline_metric="same, SQLite, 1 replica",
                baseline_value=round(sqlite[figure], decimals),
            )
            for figure, metric, unit, decimals in measured
        )
    two = figures[2]
    LAST_NOTES["etcd"] = (
        "3 etcd members on loopback on the same machine as the replicas (each replica a "
        "spawned process with its own EtcdStore); targets summed over 2 replicas: leases "
        f">= {control_api.LEASE_TARGET:,.0f}/s "
        f"{'met' if two['leases'] >= control_api.LEASE_TARGET else 'NOT met'}, heartbeats "
        f">= {control_api.HEARTBEAT_TARGET:,.0f}/s "
        f"{'met' if two['heartbeats'] >= control_api.HEARTBEAT_TARGET else 'NOT met'}"
    )
    return rows


if __name__ == "__main__":
    for row in run_etcd_figures(quick=True):
        print(row)
    for name, note in LAST_NOTES.items():
        print(f"{name}: {note}")
