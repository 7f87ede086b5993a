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

from accessfabric.control.client.client import _merge_delta
from accessfabric.control.client.facts import peer_ids
from accessfabric.control.kernel.vocabulary import Role
from accessfabric.control.server import directory
from accessfabric.control.server.directory import build_directory
from accessfabric.control.server.heartbeats import HealthReport, HeartbeatTable
from accessfabric.control.server.leasing import SHARED_TENANT
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
    could = _old_could_show
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


def _old_could_show(
    scope: str, asking: RegisteredNode, node: RegisteredNode | None, tenant: str | None,
    heartbeats: HeartbeatTable,
) -> bool:  # fmt: skip
    """The rule removals and a ``mobile`` delta's ``ids`` were sent by: from the changed
    node's facts *now* (an entry that left the node's region, stopped measuring it or
    lost its entry role was kept in the node's copy: fixed, ADR 0043)."""
    me = asking.record
    tenant = node.record.tenant if node is not None else tenant
    if tenant not in (me.tenant, SHARED_TENANT):
        return False  # another partition: never in this view
    if scope == "tenant" or node is None:
        return True
    if scope == "mobile" and Role.ENTRY not in node.record.roles:
        return False  # a mobile view shows entries only
    state, own = heartbeats.get(node.node_id), heartbeats.get(me.node_id)
    if state is None or own is None:
        return True
    if node.node_id in peer_ids(own.facts.peers):
        return True
    if me.node_id in peer_ids(state.facts.peers):
        return True
    return (state.facts.region or "default") == (own.facts.region or "default")


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
        _beat(fleet, device, [(entry.node_id, 5.0)])
    counted = _CountedHealth(fleet, monkeypatch)
    held = {n.node_id: fleet.fetch(n) for n in (entry, observer)}
    assert counted.calls >= size  # a whole build looks at every node of the partition
    fleet.clock.advance(1)
    fleet.beat(devices[0], endpoints=("tcp+tls://10.9.9.9:443",))  # and stops measuring
    for node in (entry, observer):
        counted.calls = 0
        delta = fleet.fetch(node, held[node.node_id]["cursor"])
        assert counted.calls <= 1, (node.record.roles, counted.calls)  # O(1), not O(fleet)
        assert delta["delta"] is True
        assert delta == _from_scratch(fleet, node, held[node.node_id]["cursor"])
        held[node.node_id] = _merge_delta(held[node.node_id], delta)  # type: ignore[assignment]
    assert [e["node_id"] for e in delta["entries"]] == [devices[0].node_id]
    assert devices[0].node_id not in {e["node_id"] for e in held[entry.node_id]["entries"]}
    # the entry's own sessions move (it measures a device now): a delta of that device
    _beat(fleet, entry, [(devices[1].node_id, 7.0)])
    counted.calls = 0
    delta = fleet.fetch(entry, held[entry.node_id]["cursor"])
    assert counted.calls <= 1, counted.calls
    assert delta["delta"] is True
    assert [(e["node_id"], e["rtt_ms"]) for e in delta["entries"]] == [(devices[1].node_id, 7.0)]
    merged = _merge_delta(held[entry.node_id], delta)
    assert merged is not None
    whole = fleet.fetch(entry)
    assert _without(merged, "health") == _without(whole, "health")
    fleet.store.close()


def _beat(
    fleet: Fleet, node: RegisteredNode, measured: list[tuple[str, float]], **fields: Any
) -> None:
    """A heartbeat of ``node`` that measured ``measured`` (node id, RTT in ms)."""
    peers = [(_Peer(n), rtt) for n, rtt in measured]
    fleet.plane.ingest_heartbeat(node, heartbeat_facts(*peers, **fields))  # type: ignore[arg-type]


def _but(document: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in fields}


def _without(document: dict[str, Any], *fields: str) -> dict[str, dict[str, Any]]:
    return {
        e["node_id"]: {k: v for k, v in e.items() if k not in fields} for e in document["entries"]
    }


@pytest.mark.parametrize("seed", range(4))
def test_deltas_equal_a_from_scratch_build_over_random_changes(tmp_path: Path, seed: int) -> None:
    """Every document served equals what the whole-view build made before (the old
    algorithm, :func:`_from_scratch`) but for its removals and ids, and but when the asking
    node's own measured peers changed: that one used to be sent whole and is now a
    delta.  Always: each entry served is the from-scratch one, and the node's copy with
    the delta applied holds the from-scratch view (health and RTT values aside: they do
    not move the version, module docstring)."""
    rng = random.Random(seed)
    fleet = Fleet(tmp_path, FakeClock(1_800_000_000.0))
    roles = ["entry", "relay", "exit", "service-host", "mobile-edge", "observer"]
    nodes: list[RegisteredNode] = []
    facts: dict[str, dict[str, Any]] = {}

    def beat(node: RegisteredNode) -> None:
        fields = dict(facts[node.node_id])
        _beat(fleet, node, fields.pop("peers", []), **fields)

    def measure(node: RegisteredNode, among: list[RegisteredNode], most: int) -> None:
        others = [n.node_id for n in among if n is not node]
        picked = rng.sample(others, rng.randint(0, min(most, len(others))))
        facts[node.node_id]["peers"] = [(n, rng.choice([5.0, 9.0])) for n in picked]

    for _ in range(36):
        tenant = rng.choice(["acme", "other", "provider"])
        region = rng.choice(["eu", "us"])
        node = fleet.enroll(tenant, rng.choice(roles), region=region)
        nodes.append(node)
        facts[node.node_id] = {"region": region}
    for node in nodes:
        measure(node, nodes, 3)
        beat(node)
    watchers = [n for n in nodes if _scope_of(n) != "mobile"][:10] + nodes[:3]
    held = {w.node_id: fleet.fetch(w) for w in watchers}
    counts = {"incremental": 0, "own": 0}
    for step in range(80):
        live = [n for n in nodes if fleet.plane.registry.get(n.node_id) is not None]
        node = rng.choice(live)
        op = rng.choice(["endpoints", "region", "peers", "silence", "beat", "drain", "remove",
                         "revoke", "pressure", "my-peers", "rtt"])  # fmt: skip
        if op in ("my-peers", "rtt"):  # a watcher's own measured peers: its sessions
            node = rng.choice([w for w in watchers if w in live] or live)
        mine = facts[node.node_id]
        if op == "endpoints":
            mine["endpoints"] = (f"tcp+tls://10.0.{step}.1:443",)
        elif op == "region":
            mine["region"] = rng.choice(["eu", "us", "ap"])
        elif op in ("peers", "my-peers"):
            measure(node, live, 5)
        elif op == "rtt":
            mine["peers"] = [(n, rtt + 1.0) for n, rtt in mine.get("peers", [])]
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
        for watcher in rng.sample(watchers, 6):
            current = fleet.plane.registry.get(watcher.node_id)
            if current is None:
                continue
            copy = held[watcher.node_id]
            since = copy["cursor"] if rng.random() < 0.9 else None
            old = _from_scratch(fleet, current, since)
            served = fleet.fetch(current, since)
            whole = _from_scratch(fleet, current, None)
            where = (seed, step, op, watcher.node_id, _scope_of(current))
            if served["delta"] and not old["delta"]:
                counts["own"] += 1  # the asking node's own measured peers moved
                assert current.node_id in fleet.plane.heartbeats.changes.since(
                    since.rpartition(".")[0]  # type: ignore[union-attr]
                ), where
                assert {k: served[k] for k in ("version", "scope", "cursor", "placement")} == {
                    k: old[k] for k in ("version", "scope", "cursor", "placement")
                }, where
            else:  # removals and ids: now whenever the node's copy needs them (below)
                assert _but(served, "removed", "ids") == _but(old, "removed", "ids"), where
            fresh = _without(whole)
            for node_id, entry in _without(served).items():
                assert entry == fresh[node_id], where  # every entry served is current
            merged = _merge_delta(copy, served) if served["delta"] else served
            assert merged is not None, where
            assert _without(merged, "health", "rtt_ms") == _without(whole, "health", "rtt_ms"), (
                where
            )
            counts["incremental"] += served["delta"] and _scope_of(current) != "mobile"
            held[watcher.node_id] = merged
    assert counts["incremental"] > 20  # the incremental path was exercised, not only full builds
    assert counts["own"] > 5  # and so was the asking node's own change
    fleet.store.close()


def _scope_of(node: RegisteredNode) -> str:
    return directory._scope(node.record.roles)


def test_beyond_the_limit_the_least_recently_served_view_is_forgotten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More entries than ``SERVED_LIMIT`` fetching in turn: the ones served lately keep
    their deltas, only the least recently served is forgotten (not all at once)."""
    monkeypatch.setattr(directory, "SERVED_LIMIT", 3)
    fleet = Fleet(tmp_path, FakeClock(1_800_000_000.0))
    entries = [fleet.enroll("acme", "entry") for _ in range(4)]
    device = fleet.enroll("acme", "mobile-edge")
    _beat(fleet, device, [(e.node_id, 5.0) for e in entries])
    held = {e.node_id: fleet.fetch(e) for e in entries[:3]}
    fleet.clock.advance(1)
    again = fleet.fetch(entries[0], held[entries[0].node_id]["cursor"])
    assert again["delta"] is True
    held[entries[0].node_id] = again
    fleet.fetch(entries[3])  # a fourth: entries[1], served longest ago, is forgotten
    fleet.clock.advance(1)
    _beat(fleet, device, [(e.node_id, 6.0) for e in entries])
    order = (entries[0], entries[2], entries[1])  # the forgotten one last: its whole
    deltas = [fleet.fetch(e, held[e.node_id]["cursor"])["delta"] for e in order]
    assert deltas == [True, True, False]  # fetch then makes room by forgetting another
    fleet.store.close()
