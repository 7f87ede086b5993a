"""A replica does not count its own outage against the nodes (ADR 0061).

While a replica's store is lost it answers 503 and takes no heartbeat; when the store is
back, every node that was live when it stopped has one unreachable window from then on
for its next heartbeat to land, so a route lease asked for at once still finds the
service host (the race of the etcd-leader-kill fault test).  A starting replica does the
same for the nodes live when the store last heard of anyone.  A node that really died is
unreachable one window later, and one that was unreachable before stays so.

A fake clock drives the table and the plane; :class:`BreakableStore` is the store's
watch and quorum read as :class:`ReplicaSync` sees them, broken and healed by the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.vocabulary import ServiceMode
from accessfabric.control.server.heartbeats import HealthRules, HeartbeatTable
from accessfabric.control.server.leasing import LeaseRefused
from accessfabric.control.server.plane import ControlConfig, ControlPlane
from accessfabric.control.server.registry import RegisteredNode
from accessfabric.control.server.replication import ReplicaSync
from accessfabric.control.server.store.base import Change, StoreUnavailableError
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until
from tests.control.api_harness import facts
from tests.control.conftest import FakeClock

INTERVAL = 1.0
WINDOW = 4.5 * INTERVAL
"""Silent this long, a node is unreachable (the fault test's 1 s policy)."""
CONFIG = ControlConfig(heartbeat_interval=INTERVAL, replica_ttl=600.0)


def _table(tmp_path: Path, clock: FakeClock, name: str = "c.db") -> HeartbeatTable:
    store = SqliteStore(tmp_path / name, clock=clock)
    return HeartbeatTable(store, clock=clock, rules=HealthRules.for_interval(INTERVAL))


def test_no_node_ages_while_paused_and_each_live_one_has_one_window_after(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_000.0)
    table = _table(tmp_path, clock)
    table.record("dead", facts(), clock.now - 10.0)  # unreachable before the outage
    table.record("host", facts(), clock.now)
    table.record("late", facts(), clock.now - 4.0)  # 0.5 s left when the outage begins
    assert not table.live("dead", clock.now)
    version = table.visibility(clock.now)
    table.pause()
    clock.advance(20.0)  # the store is gone for 20 s: no heartbeat can land
    assert table.live("host", clock.now) and table.live("late", clock.now)
    assert table.visibility(clock.now) == version  # nobody turned unreachable meanwhile
    table.resume()
    resumed = clock.now
    for node in ("host", "late"):
        report = table.health(node, clock.now)
        assert report.health.value == "healthy", report  # the outage is not theirs
        assert report.age is not None and report.age >= 20.0  # the real age is shown
    assert not table.live("dead", clock.now)
    assert table.health("dead", clock.now).health.value == "unreachable"
    clock.advance(WINDOW - 0.01)
    assert table.live("host", clock.now) and table.live("late", clock.now)
    assert table.visibility(clock.now) == version
    table.record("host", facts(), clock.now)  # the host's heartbeat lands: its own again
    clock.now = resumed + WINDOW  # the grace is one window, never more
    assert not table.live("late", clock.now)
    assert table.health("late", clock.now).health.value == "unreachable"
    assert table.visibility(clock.now) == version + 1  # "late" left the directories
    assert table.live("host", clock.now)
    clock.advance(WINDOW)
    assert not table.live("host", clock.now)  # silent a window after its heartbeat


def test_an_outage_during_the_grace_of_the_last_keeps_a_node_that_was_live(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_000.0)
    table = _table(tmp_path, clock)
    table.record("host", facts(), clock.now)
    table.pause()
    clock.advance(10.0)
    table.resume()
    clock.advance(2.0)  # live by its grace only (12 s since its heartbeat)
    table.pause()
    clock.advance(10.0)
    table.resume()
    assert table.live("host", clock.now)
    clock.advance(WINDOW)
    assert not table.live("host", clock.now)


def test_a_load_keeps_a_newer_heartbeat_than_the_persisted_digest(tmp_path: Path) -> None:
    """The replica's reload after an outage read each node's digest over the heartbeat in
    memory, up to a persist interval older: the node aged by that much at once."""
    clock = FakeClock(1_000.0)
    table = _table(tmp_path, clock)
    table.record("host", facts(), clock.now)
    table.flush(force=True)
    table.record("host", facts(), clock.now + 3.0)  # not persisted yet
    table.load()
    state = table.get("host")
    assert state is not None and state.received_at == clock.now + 3.0


def test_a_starting_replica_gives_the_nodes_live_when_the_store_last_heard_one_window(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_000.0)
    before = _table(tmp_path, clock)
    before.record("gone", facts(), clock.now - 30.0)  # unreachable when the plane stopped
    before.record("host", facts(), clock.now - 2.0)
    before.record("relay", facts(), clock.now)
    before.flush(force=True)
    clock.advance(60.0)  # the control plane is down for a minute
    table = _table(tmp_path, clock)
    assert table.load() == 3
    started = clock.now
    assert table.live("host", clock.now) and table.live("relay", clock.now)
    assert not table.live("gone", clock.now)
    clock.now = started + WINDOW - 0.01
    assert table.live("host", clock.now)
    clock.now = started + WINDOW
    assert not table.live("host", clock.now) and not table.live("relay", clock.now)


class BreakableStore:
    """The store's watch and quorum read as :class:`ReplicaSync` uses them: ``down``
    breaks the watch and fails every read until ``up``."""

    def __init__(self) -> None:
        self._broken = asyncio.Event()
        self._down = False
        self.revision_value = 0

    def down(self) -> None:
        self._down = True
        self._broken.set()

    def up(self) -> None:
        self._down = False
        self._broken = asyncio.Event()

    def fail_reads(self) -> None:
        """Quorum reads fail; the watch is left open (silent): the loss is not found yet."""
        self._down = True

    def revision(self) -> int:
        if self._down:
            raise StoreUnavailableError("etcd has no leader")
        return self.revision_value

    async def watch(self, prefix: str, since: int) -> AsyncIterator[Change]:
        await self._broken.wait()
        raise StoreUnavailableError("the watch stream broke")
        yield  # pragma: no cover - makes this an async generator


def _enroll(plane: ControlPlane, key: NodeKey, role: str) -> RegisteredNode:
    token = plane.registry.tokens.create("acme", [role], 3600).token
    return plane.registry.enroll(token, key.public_key_bytes, key.sealing_public_key_bytes)


def test_a_replica_whose_store_came_back_leases_before_the_hosts_next_heartbeat(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_800_000_000.0)
    store = SqliteStore(tmp_path / "control.db", clock=clock)
    plane = ControlPlane(store, Authority(NodeKey.generate()), config=CONFIG, clock=clock)
    plane.load()
    laptop, relay, host = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    source = _enroll(plane, laptop, "mobile-edge")
    _enroll(plane, relay, "relay")
    served = _enroll(plane, host, "service-host")
    plane.services.register(
        "rdp", served.node_id, served.record.roles, "acme", ServiceMode.ACTIVE_ACTIVE
    )
    plane.heartbeats.record(laptop.node_id, facts((relay, 20.0)))
    plane.heartbeats.record(relay.node_id, facts((laptop, 20.0), (host, 5.0)))
    plane.heartbeats.record(host.node_id, facts((relay, 5.0), services=("rdp",)))

    def hops() -> tuple[str, ...]:
        return plane.leasing.issue(source, "rdp", TrafficClass.INTERACTIVE).routes[0].lease.hops

    assert hops() == (laptop.node_id, relay.node_id, host.node_id)
    breakable = BreakableStore()

    async def main() -> None:
        sync = plane.sync = ReplicaSync(plane, breakable)
        sync.start(0)
        try:
            breakable.down()
            await until(lambda: not sync.synced, what="the replica notices its store is gone")
            assert plane.unavailable_reason() is not None  # it answers 503 meanwhile
            clock.advance(8.0)  # no leader for 8 s: the nodes' heartbeats are refused
            breakable.up()
            await until(lambda: sync.synced, what="the replica serves again")
        finally:
            await sync.stop()

    asyncio.run(main())
    # the host's and the relay's heartbeats have not landed yet: the lease still has a route
    assert hops() == (laptop.node_id, relay.node_id, host.node_id)
    clock.advance(WINDOW)  # the relay and the host stay silent a whole window after it
    plane.heartbeats.record(laptop.node_id, facts((relay, 20.0)))
    with pytest.raises(LeaseRefused) as refused:
        hops()
    assert refused.value.code == "no_route", refused.value  # the host is not in the graph


class FailingWatch(BreakableStore):
    """A watch that ends with an error no store raises (grpc.aio's ``InvalidStateError``
    when a finished stream is written to, before the store translated it)."""

    def __init__(self) -> None:
        super().__init__()
        self.watches = 0

    async def watch(self, prefix: str, since: int) -> AsyncIterator[Change]:
        self.watches += 1
        if self.watches == 1:
            await asyncio.sleep(0.01)
            raise asyncio.InvalidStateError("RPC already finished.")
        await asyncio.Event().wait()  # the second watch follows quietly
        yield  # pragma: no cover - makes this an async generator


def test_a_watch_failing_unexpectedly_marks_the_replica_lost_and_it_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, such an error ended the replica's sync task while ``synced`` stayed true:
    the replica served on and never followed the store again."""
    clock = FakeClock(1_800_000_000.0)
    store = SqliteStore(tmp_path / "control.db", clock=clock)
    plane = ControlPlane(store, Authority(NodeKey.generate()), config=CONFIG, clock=clock)
    plane.load()
    failing = FailingWatch()

    async def main() -> None:
        sync = plane.sync = ReplicaSync(plane, failing)
        sync.start(0)
        try:
            await until(lambda: failing.watches == 2, what="the replica watches again")
            assert sync.synced and sync._task is not None and not sync._task.done()
        finally:
            await sync.stop()

    asyncio.run(main())
    assert "replica sync failed" in caplog.text


def test_a_loss_found_late_counts_from_the_last_quorum_read_that_succeeded(
    tmp_path: Path,
) -> None:
    """Two failed probes take up to 5 s: the nodes' heartbeats (here: their digests, which
    the other replicas could not write) stopped when the store did, not when the replica
    found out.  A host silent for 5 s when the loss is found was live when it began."""
    clock = FakeClock(1_800_000_000.0)
    store = SqliteStore(tmp_path / "control.db", clock=clock)
    plane = ControlPlane(store, Authority(NodeKey.generate()), config=CONFIG, clock=clock)
    plane.load()
    host = NodeKey.generate()
    _enroll(plane, host, "service-host")
    plane.heartbeats.record(host.node_id, facts())
    breakable = BreakableStore()

    async def main() -> None:
        sync = plane.sync = ReplicaSync(plane, breakable)
        sync.start(0)
        try:
            await until(lambda: sync.store_ok_at is not None, what="a quorum read succeeds")
            breakable.fail_reads()
            clock.advance(5.0)  # the store is gone; the replica has not found out yet
            breakable.down()
            await until(lambda: not sync.synced, what="the replica finds its store gone")
            clock.advance(3.0)
            breakable.up()
            await until(lambda: sync.synced, what="the replica serves again")
        finally:
            await sync.stop()

    asyncio.run(main())
    assert plane.heartbeats.live(host.node_id, clock.now)
    clock.advance(WINDOW)
    assert not plane.heartbeats.live(host.node_id, clock.now)
