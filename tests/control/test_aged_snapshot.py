"""A heartbeat-aged route snapshot answers a lease and is rebuilt after it, not on its
path (issue 17, ADR 0043 amendment 4); structural changes (a drain) and a source whose
links changed still rebuild it on the request's path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from accessfabric.control.server.coordinators import (
    AGED_SNAPSHOT_BOUND,
    SOURCE_REBUILD_INTERVAL,
    RouteCoordinator,
)
from accessfabric.control.server.leasing import SnapshotBehind
from accessfabric.control.server.plane import ControlConfig
from accessfabric.control.server.registry import RegisteredNode
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until
from tests.control.api_harness import Running, running_plane
from tests.control.test_api_leases import _beat, _enroll, _json

MAX_AGE = 0.4
"""The config's snapshot_max_age: a request dated 1.5 of it is aged, under the bound."""


class Partition:
    """A device, two relays and a service host of tenant acme."""

    def __init__(self) -> None:
        self.device, self.host = NodeKey.generate(), NodeKey.generate()
        self.left, self.right = NodeKey.generate(), NodeKey.generate()

    async def enroll(self, cp: Running) -> None:
        await _enroll(cp, self.device, ["mobile-edge"])
        await _enroll(cp, self.left, ["relay"])
        await _enroll(cp, self.right, ["relay"])
        await _enroll(cp, self.host, ["service-host"])
        status, reply = await cp.signed(self.host, "POST", "/v1/services/rdp/replicas", b"{}")
        assert status == 200, reply
        await self.beat(cp)
        await _beat(cp, self.host, services=("rdp",))

    async def beat(self, cp: Running, *relays: NodeKey) -> None:
        await _beat(cp, self.device, *((r, 5.0) for r in relays or (self.left, self.right)))
        await _beat(cp, self.left, (self.host, 5.0))
        await _beat(cp, self.right, (self.host, 6.0))

    def source(self, cp: Running) -> RegisteredNode:
        node = cp.plane.registry.get(self.device.node_id)
        assert node is not None
        return node


def _hops(cp: Running, source: RegisteredNode, now: float) -> set[str]:
    grant = cp.plane.leasing.issue(source, "rdp", TrafficClass.INTERACTIVE, now)
    return {hop for route in grant.routes for hop in route.lease.hops}


async def _aged(cp: Running, p: Partition) -> tuple[RouteCoordinator, float]:
    """acme's coordinator built, then a heartbeat moved (the device's, links unchanged)
    and the snapshot older than snapshot_max_age: a time to ask at, aged but in bound."""
    await cp.signed(p.device, "POST", "/v1/leases/route", _json({"service": "rdp"}))
    c = cp.plane.coordinators.get("acme")
    assert c is not None and c.builds == 1
    await p.beat(cp)
    assert cp.plane.coordinators.key("acme") != c.built_key
    clock = cp.plane.clock
    await until(lambda: clock() - c.built_at >= MAX_AGE, what="the snapshot ages")
    return c, c.built_at + 1.5 * MAX_AGE


@contextlib.asynccontextmanager
async def _aged_partition(
    tmp_path: Path,
) -> AsyncIterator[tuple[Running, Partition, RouteCoordinator, float]]:
    """A running plane with one enrolled partition whose snapshot has aged (``_aged``)."""
    async with running_plane(tmp_path, config=ControlConfig(snapshot_max_age=MAX_AGE)) as cp:
        p = Partition()
        await p.enroll(cp)
        c, at = await _aged(cp, p)
        yield cp, p, c, at


def test_an_aged_snapshot_answers_and_is_rebuilt_after(tmp_path: Path) -> None:
    async def main() -> None:
        async with _aged_partition(tmp_path) as (cp, p, c, at):
            planner = c.planner
            hops = _hops(cp, p.source(cp), at)
            assert p.device.node_id in hops
            assert (c.builds, c.planner) == (1, planner)  # not rebuilt on the request's path
            assert c.rebuild_pending
            await until(lambda: c.builds == 2, what="the rebuild follows the request")
            assert c.late_builds == 1 and not c.rebuild_pending and c.planner is not planner
            assert c.built_key == cp.plane.coordinators.key("acme")

            # past the hard bound the request rebuilds it itself, as before
            await p.beat(cp)
            late = c.built_at + (AGED_SNAPSHOT_BOUND + 0.1) * MAX_AGE
            _hops(cp, p.source(cp), late)
            assert (c.builds, c.late_builds, c.rebuild_pending) == (3, 1, False)

    asyncio.run(main())


def test_a_hundred_leases_on_an_aged_snapshot_make_one_rebuild(tmp_path: Path) -> None:
    async def main() -> None:
        async with _aged_partition(tmp_path) as (cp, p, c, at):
            source = p.source(cp)
            for _ in range(100):
                _hops(cp, source, at)
            assert c.builds == 1 and c.plans == 101
            await until(lambda: c.builds == 2, what="the coalesced rebuild")
            assert c.late_builds == 1 and not c.rebuild_pending
            # over HTTP, 50 at once on the fresh snapshot: no rebuild at all
            request = _json({"service": "rdp"})
            replies = await asyncio.gather(
                *(cp.signed(p.device, "POST", "/v1/leases/route", request) for _ in range(50))
            )
            assert all(status == 200 for status, _ in replies)
            assert c.builds == 2 or c.late_builds == c.builds - 1  # only ever rebuilt late

    asyncio.run(main())


def test_a_drained_node_is_in_no_lease_after_the_drain(tmp_path: Path) -> None:
    """A drain is structural: even with an aged snapshot's rebuild pending, the next lease
    is planned on a snapshot rebuilt on its path, without the drained relay."""

    async def main() -> None:
        async with _aged_partition(tmp_path) as (cp, p, c, at):
            source = p.source(cp)
            assert {p.left.node_id, p.right.node_id} <= _hops(cp, source, at)
            assert c.rebuild_pending and c.builds == 1
            cp.plane.drains.drain(p.left.node_id)  # acknowledged: the call returned
            hops = _hops(cp, source, at)
            assert p.left.node_id not in hops and p.right.node_id in hops
            assert c.builds == 2  # on the request's path
            await until(lambda: not c.rebuild_pending)
            assert c.late_builds == 0  # the scheduled one found it rebuilt
            status, grant = await cp.signed(p.device, "POST", "/v1/leases/route", _json(
                {"service": "rdp"}))  # fmt: skip
            assert status == 200, grant
            assert all(p.left.node_id not in r["hops"] for r in grant["routes"])

    asyncio.run(main())


def test_a_source_whose_links_changed_is_planned_on_a_snapshot_that_knows_them(
    tmp_path: Path,
) -> None:
    """A device that re-homed (its heartbeat names another first hop than the snapshot's)
    is planned on a snapshot that knows it: an aged one is rebuilt on its path; a fresh
    one, as for a device that just joined, once per SOURCE_REBUILD_INTERVAL (before, a
    fresh snapshot planned it on its old links: `eligible first hops: none` for a device
    whose first heartbeat came before its entry session)."""

    async def main() -> None:
        async with running_plane(tmp_path, config=ControlConfig(snapshot_max_age=MAX_AGE)) as cp:
            p = Partition()
            await p.enroll(cp)
            await cp.signed(p.device, "POST", "/v1/leases/route", _json({"service": "rdp"}))
            c = cp.plane.coordinators.get("acme")
            assert c is not None and c.builds == 1
            await _beat(cp, p.device, (p.right, 5.0))  # its session with `left` ended
            with pytest.raises(SnapshotBehind):
                cp.plane.leasing.issue(p.source(cp), "rdp", TrafficClass.INTERACTIVE,
                                       c.built_at + 0.01, may_wait=True)  # fmt: skip
            assert c.builds == 1
            hops = _hops(cp, p.source(cp), c.built_at + SOURCE_REBUILD_INTERVAL)
            assert c.builds == 2 and p.right.node_id in hops and p.left.node_id not in hops
            _hops(cp, p.source(cp), c.built_at + SOURCE_REBUILD_INTERVAL)
            assert c.builds == 2  # its links are in the snapshot now

            clock = cp.plane.clock
            await until(lambda: clock() - c.built_at >= MAX_AGE, what="the snapshot ages")
            await _beat(cp, p.device, (p.left, 5.0))  # and back, on an aged snapshot
            hops = _hops(cp, p.source(cp), c.built_at + 1.5 * MAX_AGE)
            assert c.builds == 3 and not c.rebuild_pending  # rebuilt on its path
            assert p.left.node_id in hops and p.right.node_id not in hops

    asyncio.run(main())
