"""Incremental directory deltas (issue 17, ADR 0043): an entry (``neighbours`` scope) or an
observer (``tenant`` scope) that refetches after one change costs the control plane the
changed node's evaluation, not a rebuild of its whole view; and what it is served is what
a from-scratch build of its view would have sent."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from accessfabric.control.server import directory
from accessfabric.control.server.directory import build_directory
from accessfabric.control.server.heartbeats import HealthReport
from accessfabric.control.server.registry import RegisteredNode, record_json
from tests.control.api_harness import facts as heartbeat_facts
from tests.control.conftest import FakeClock
from tests.control.test_directory_delta import Fleet


@dataclass(frozen=True)
class _Peer:
    node_id: str


def _from_scratch(fleet: Fleet, node: RegisteredNode, since: str | None) -> dict[str, Any]:
    """The document as it was made before deltas were incremental: the asking node's
    whole view built from scratch (:func:`build_directory`), then cut to what changed."""
    p = fleet.plane
    now = fleet.clock()
    built = build_directory(node, p.registry, p.heartbeats, now, p.config.policy, p.drains)
    log = p.heartbeats.changes
    drained = p.drains.digest()
    head = {"version": built.version, "scope": built.scope,
            "cursor": f"{log.cursor()}.{drained}", "placement": list(built.placement)}  # fmt: skip
    changed = None
    if since is not None:
        position, _, since_drained = since.rpartition(".")
        changed = log.since(position) if since_drained == drained else None
    if changed is None or node.node_id in changed:
        return {**head, "delta": False, "node_record": record_json(node),
                "entries": [e.to_json() for e in built.entries]}  # fmt: skip
    shown = {e.node.node_id: e for e in built.entries}
    document = {**head, "delta": True, "since": since,
                "entries": [shown[n].to_json() for n in sorted(changed) if n in shown]}  # fmt: skip
    could = directory._could_show  # the rule for a removal notice, unchanged
    if built.scope == "mobile":
        if any(could(built.scope, node, p.registry.get(n), t, p.heartbeats)
               for n, t in changed.items()):  # fmt: skip
            document["ids"] = sorted(shown)
        return document
    document["removed"] = sorted(
        n for n, t in changed.items()
        if n not in shown and could(built.scope, node, p.registry.get(n), t, p.heartbeats)
    )  # fmt: skip
    return document


class _CountedHealth:
    """Counts the heartbeat table's health evaluations (one per node a build looks at)."""

    def __init__(self, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        table = fleet.plane.heartbeats
        health = table.health

        def counted(node_id: str, now: float, record_revision: int = 0) -> HealthReport:
            self.calls += 1
            return health(node_id, now, record_revision)

        monkeypatch.setattr(table, "health", counted)


@pytest.mark.parametrize("size", [60, 400])
def test_an_entry_refetching_after_one_change_evaluates_one_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    fleet = Fleet(tmp_path, FakeClock(1_800_000_000.0))
    entry = fleet.enroll("acme", "entry")
    observer = fleet.enroll("acme", "observer")
    devices = [fleet.enroll("acme", "mobile-edge") for _ in range(size // 2)]
    for _ in range(size // 2):
        fleet.enroll("other", "mobile-edge")
    for device in devices:  # every device measured the entry: all are its neighbours
        _beat(fleet, device, [entry.node_id])
    held = {n.node_id: fleet.fetch(n) for n in (entry, observer)}
    counted = _CountedHealth(fleet, monkeypatch)
    full = fleet.fetch(observer)
    assert counted.calls >= size // 2  # a whole build looks at every node of the partition
    fleet.clock.advance(1)
    fleet.beat(devices[0], endpoints=("tcp+tls://10.9.9.9:443",))
    for node in (entry, observer):
        counted.calls = 0
        delta = fleet.fetch(node, held[node.node_id]["cursor"])
        assert counted.calls <= 1, (node.record.roles, counted.calls)  # O(1), not O(fleet)
        assert delta["delta"] is True
        assert delta == _from_scratch(fleet, node, held[node.node_id]["cursor"])
    assert [e["node_id"] for e in delta["entries"]] == [devices[0].node_id]
    assert full["delta"] is False
    fleet.store.close()


def _beat(fleet: Fleet, node: RegisteredNode, measured: list[str], **fields: Any) -> None:
    """A heartbeat of ``node`` that measured ``measured`` (5 ms each)."""
    peers = [(_Peer(n), 5.0) for n in measured]
    fleet.plane.ingest_heartbeat(node, heartbeat_facts(*peers, **fields))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(4))
def test_deltas_equal_a_from_scratch_build_over_random_changes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    fleet = Fleet(tmp_path, FakeClock(1_800_000_000.0))
    roles = ["entry", "relay", "exit", "service-host", "mobile-edge", "observer"]
    nodes: list[RegisteredNode] = []
    facts: dict[str, dict[str, Any]] = {}

    def beat(node: RegisteredNode) -> None:
        fields = dict(facts[node.node_id])
        _beat(fleet, node, fields.pop("peers", []), **fields)

    for _ in range(36):
        tenant = rng.choice(["acme", "other", "provider"])
        region = rng.choice(["eu", "us"])
        node = fleet.enroll(tenant, rng.choice(roles), region=region)
        nodes.append(node)
        facts[node.node_id] = {"region": region}
    for node in nodes:
        measured = rng.sample([n.node_id for n in nodes if n is not node], rng.randint(0, 3))
        facts[node.node_id]["peers"] = measured
        beat(node)
    watchers = [n for n in nodes if _scope_of(n) != "mobile"][:10] + nodes[:3]
    held = {w.node_id: fleet.fetch(w) for w in watchers}
    incremental = 0
    for step in range(60):
        live = [n for n in nodes if fleet.plane.registry.get(n.node_id) is not None]
        node = rng.choice(live)
        op = rng.choice(["endpoints", "region", "peers", "silence", "beat", "drain", "remove",
                         "revoke", "pressure"])  # fmt: skip
        mine = facts[node.node_id]
        if op == "endpoints":
            mine["endpoints"] = (f"tcp+tls://10.0.{step}.1:443",)
        elif op == "region":
            mine["region"] = rng.choice(["eu", "us", "ap"])
        elif op == "peers":
            others = [n.node_id for n in live if n is not node]
            mine["peers"] = rng.sample(others, rng.randint(0, 4))
        elif op == "pressure":
            mine["cpu"] = rng.choice([0.1, 0.95])
        if op == "silence":  # every node but a few goes quiet for a while; some turn unreachable
            fleet.clock.advance(rng.choice([5.0, 30.0, 50.0]))
            for other in rng.sample(live, len(live) // 2):
                beat(other)
        elif op == "drain":
            if fleet.plane.drains.is_draining(node.node_id):
                fleet.plane.drains.undrain(node.node_id)
            else:
                fleet.plane.drains.drain(node.node_id)
        elif op == "remove" and node not in watchers:
            fleet.plane.registry.remove(node.node_id)
            fleet.plane.heartbeats.remove(node.node_id)
        elif op == "revoke":
            current = fleet.plane.registry.get(node.node_id)
            if current is not None and current.record.roles:  # a new record, revision + 1
                fleet.plane.revoke_role(node.node_id, sorted(current.record.roles)[0])
        else:
            fleet.clock.advance(rng.choice([0.0, 1.0]))
            beat(node)
        for watcher in rng.sample(watchers, 5):
            current = fleet.plane.registry.get(watcher.node_id)
            if current is None:
                continue
            since = held[watcher.node_id]["cursor"] if rng.random() < 0.9 else None
            served = fleet.fetch(current, since)
            assert served == _from_scratch(fleet, current, since), (seed, step, op)
            incremental += served["delta"] and _scope_of(current) != "mobile"
            held[watcher.node_id] = served
    assert incremental > 20  # the incremental path was exercised, not only full builds
    fleet.store.close()


def _scope_of(node: RegisteredNode) -> str:
    return directory._scope(node.record.roles)
