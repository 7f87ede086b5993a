"""Route coordinators per partition (issue 17, ADR 0038): the control plane plans each
source's routes with its tenant's coordinator, whose snapshot holds that tenant's nodes
and the shared infrastructure only — real lease requests over HTTP on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from accessfabric.control.server.coordinators import SOURCE_REBUILD_INTERVAL
from accessfabric.control.server.leasing import SnapshotBehind
from accessfabric.control.server.plane import ControlConfig
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass
from tests.control.api_harness import Running, running_plane
from tests.control.test_api_leases import _beat, _enroll, _json


class Tenant:
    def __init__(self, name: str, service: str) -> None:
        self.name, self.service = name, service
        self.device, self.host = NodeKey.generate(), NodeKey.generate()

    @property
    def ids(self) -> set[str]:
        return {self.device.node_id, self.host.node_id}

    async def enroll(self, cp: Running) -> None:
        await _enroll(cp, self.device, ["mobile-edge"], self.name)
        await _enroll(cp, self.host, ["service-host"], self.name)
        path = f"/v1/services/{self.service}/replicas"
        status, reply = await cp.signed(self.host, "POST", path, b"{}")
        assert status == 200, reply

    async def lease(self, cp: Running) -> list[str]:
        request = _json({"service": self.service, "traffic_class": "interactive"})
        status, grant = await cp.signed(self.device, "POST", "/v1/leases/route", request)
        assert status == 200, grant
        return [hop for route in grant["routes"] for hop in route["hops"]]


def test_each_source_is_planned_by_its_partitions_coordinator(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            acme, globex = Tenant("acme", "rdp"), Tenant("globex", "ssh")
            relay = NodeKey.generate()  # shared infrastructure: carries both tenants
            await _enroll(cp, relay, ["relay"], "provider")
            for tenant in (acme, globex):
                await tenant.enroll(cp)
                await _beat(cp, tenant.device, (relay, 5.0))
                await _beat(cp, tenant.host, services=(tenant.service,))
            await _beat(cp, relay, (acme.host, 5.0), (globex.host, 5.0))
            coordinators = cp.plane.coordinators
            assert len(coordinators) == 0  # made on first use

            hops = await acme.lease(cp)
            assert set(hops) <= acme.ids | {relay.node_id} and relay.node_id in hops
            mine = coordinators.get("acme")
            assert mine is not None and mine.plans == 1
            assert mine.node_ids == acme.ids | {relay.node_id}  # its partition only
            assert coordinators.get("globex") is None  # nobody asked: not planned, not held

            hops = await globex.lease(cp)
            assert set(hops) <= globex.ids | {relay.node_id}
            theirs = coordinators.get("globex")
            assert theirs is not None and theirs.plans == 1
            assert theirs.node_ids == globex.ids | {relay.node_id}
            assert mine.plans == 1  # acme's coordinator did not plan globex's route
            await acme.lease(cp)
            assert (mine.plans, theirs.plans) == (2, 1)
            assert [row["tenant"] for row in coordinators.status()] == ["acme", "globex"]
            async with cp.http.get(cp.url + "/metrics") as response:
                text = await response.text()
            assert "accessfabric_control_route_coordinators 2.0" in text
            assert "accessfabric_control_route_plans_total 3.0" in text

    asyncio.run(main())


def test_an_enrollment_rebuilds_only_the_coordinators_whose_partition_changed(
    tmp_path: Path,
) -> None:
    """Another tenant's enrollment leaves acme's snapshot alone; a change of a shared node
    (it is in every partition) rebuilds it.  Heartbeat-only rebuilds are kept out of the
    count."""

    async def main() -> None:
        config = ControlConfig(snapshot_max_age=3600.0, max_route_coordinators=1)
        async with running_plane(tmp_path, config=config) as cp:
            acme, globex = Tenant("acme", "rdp"), Tenant("globex", "ssh")
            relay = NodeKey.generate()
            await _enroll(cp, relay, ["relay"], "provider")
            await acme.enroll(cp)
            await _beat(cp, acme.device, (relay, 5.0))
            await _beat(cp, acme.host, services=(acme.service,))
            await _beat(cp, relay, (acme.host, 5.0))
            coordinators = cp.plane.coordinators
            assert coordinators.max_coordinators == 1  # the config key reaches it
            await acme.lease(cp)
            mine = coordinators.get("acme")
            assert mine is not None and mine.builds == 1

            await _enroll(cp, NodeKey.generate(), ["relay"], "globex")  # not acme's partition
            await acme.lease(cp)
            assert mine.builds == 1

            # a new node is in no snapshot until it heartbeats (ADR 0043): no rebuild
            await _enroll(cp, NodeKey.generate(), ["relay"], "provider")
            await acme.lease(cp)
            assert mine.builds == 1

            cp.plane.registry.reissue(relay.node_id)  # a shared node changed: every one's
            await acme.lease(cp)
            assert mine.builds == 2

            await globex.enroll(cp)
            await _beat(cp, globex.device, (relay, 5.0))
            await _beat(cp, globex.host, services=(globex.service,))
            await _beat(cp, relay, (acme.host, 5.0), (globex.host, 5.0))
            await globex.lease(cp)  # beyond max_route_coordinators: acme's is dropped
            assert len(coordinators) == 1 and coordinators.get("acme") is None

    asyncio.run(main())


async def _two_tenants(cp: Running) -> tuple[Tenant, Tenant, NodeKey]:
    """acme and globex, each a device and a service host, both through a shared relay."""
    acme, globex = Tenant("acme", "rdp"), Tenant("globex", "ssh")
    relay = NodeKey.generate()
    await _enroll(cp, relay, ["relay"], "provider")
    for tenant in (acme, globex):
        await tenant.enroll(cp)
        await _beat(cp, tenant.device, (relay, 5.0))
        await _beat(cp, tenant.host, services=(tenant.service,))
    await _beat(cp, relay, (acme.host, 5.0), (globex.host, 5.0))
    return acme, globex, relay


def test_a_lease_burst_reuses_one_snapshot_through_enrollments_and_heartbeats(
    tmp_path: Path,
) -> None:
    """100 lease requests, between them heartbeats of the partition's nodes and new
    enrollments into it (a start-up storm): one snapshot build (ADR 0043).  Before, every
    enrollment in the partition rebuilt it at the next lease request."""

    async def main() -> None:
        config = ControlConfig(snapshot_max_age=3600.0)  # heartbeat-age rebuilds left out
        async with running_plane(tmp_path, config=config) as cp:
            acme, _, relay = await _two_tenants(cp)
            for index in range(100):
                hops = await acme.lease(cp)
                assert relay.node_id in hops
                if index % 10 == 0:  # a new device joins the partition
                    await _enroll(cp, NodeKey.generate(), ["mobile-edge"], "acme")
                if index % 10 == 5:
                    await _beat(cp, acme.device, (relay, 5.0))
            mine = cp.plane.coordinators.get("acme")
            assert mine is not None and mine.plans == 100
            assert mine.builds == 1

    asyncio.run(main())


def test_a_heartbeat_moves_only_its_partitions_generations(tmp_path: Path) -> None:
    """A heartbeat, a service change or a drain of tenant A never rebuilds tenant B's
    coordinator, even with no snapshot age to wait for (ADR 0043); the shared relay's
    heartbeat (it is in every partition) rebuilds both."""

    async def main() -> None:
        config = ControlConfig(snapshot_max_age=0.0)  # any change of the partition rebuilds
        async with running_plane(tmp_path, config=config) as cp:
            acme, globex, relay = await _two_tenants(cp)
            coordinators = cp.plane.coordinators
            await acme.lease(cp)
            await globex.lease(cp)
            mine, theirs = coordinators.get("acme"), coordinators.get("globex")
            assert mine is not None and theirs is not None
            assert (mine.builds, theirs.builds) == (1, 1)
            globex_key = coordinators.key("globex")

            await _beat(cp, acme.device, (relay, 5.0))
            await _beat(cp, acme.host, services=(acme.service,))
            cp.plane.services.deregister(acme.service, acme.host.node_id)
            status, reply = await cp.signed(
                acme.host, "POST", f"/v1/services/{acme.service}/replicas", b"{}"
            )
            assert status == 200, reply
            cp.plane.drains.drain(acme.device.node_id)
            cp.plane.drains.undrain(acme.device.node_id)
            assert coordinators.key("globex") == globex_key
            await globex.lease(cp)
            await acme.lease(cp)
            assert (mine.builds, theirs.builds) == (2, 1)

            await _beat(cp, relay, (acme.host, 5.0), (globex.host, 5.0))  # shared: both
            assert coordinators.key("globex") != globex_key
            await globex.lease(cp)
            await acme.lease(cp)
            assert (mine.builds, theirs.builds) == (3, 2)

    asyncio.run(main())


def test_a_device_that_just_joined_waits_for_the_next_rebuild(tmp_path: Path) -> None:
    """A source missing from the snapshot but heard of since it was built (it just
    joined) is not refused: its coordinator rebuilds, at most every
    SOURCE_REBUILD_INTERVAL; before that, a waiting caller is told how long to wait."""

    async def main() -> None:
        config = ControlConfig(snapshot_max_age=3600.0)
        async with running_plane(tmp_path, config=config) as cp:
            acme, _, relay = await _two_tenants(cp)
            await acme.lease(cp)
            mine = cp.plane.coordinators.get("acme")
            assert mine is not None and mine.builds == 1
            newcomer = Tenant("acme", acme.service)
            newcomer.device = NodeKey.generate()
            await _enroll(cp, newcomer.device, ["mobile-edge"], "acme")
            await _beat(cp, newcomer.device, (relay, 5.0))
            node = cp.plane.registry.get(newcomer.device.node_id)
            assert node is not None
            soon = mine.built_at + SOURCE_REBUILD_INTERVAL / 4
            with pytest.raises(SnapshotBehind) as behind:
                cp.plane.leasing.issue(node, acme.service, TrafficClass.INTERACTIVE, soon,
                                       may_wait=True)  # fmt: skip
            assert behind.value.wait == pytest.approx(SOURCE_REBUILD_INTERVAL * 3 / 4, abs=1e-4)
            assert mine.builds == 1
            hops = await newcomer.lease(cp)  # over HTTP: the handler waits, then plans
            assert hops[0] == newcomer.device.node_id and relay.node_id in hops
            assert mine.builds == 2
            await acme.lease(cp)
            await newcomer.lease(cp)
            assert mine.builds == 2  # it is in the snapshot now

    asyncio.run(main())


def test_a_rebuild_remakes_only_the_nodes_heard_of_since(tmp_path: Path) -> None:
    """A coordinator's rebuild reuses the facts and links it made of every node whose
    record, heartbeat and drain state did not change; the node that heartbeated since,
    and the one drained, are made anew (ADR 0043)."""

    async def main() -> None:
        config = ControlConfig(snapshot_max_age=0.0)
        async with running_plane(tmp_path, config=config) as cp:
            acme, _, relay = await _two_tenants(cp)
            await acme.lease(cp)
            mine = cp.plane.coordinators.get("acme")
            assert mine is not None and mine.builds == 1
            made = {node_id: hit[3] for node_id, hit in mine.memo.items()}
            assert set(made) == acme.ids | {relay.node_id}

            await _beat(cp, acme.device, (relay, 7.0))
            await acme.lease(cp)
            assert mine.builds == 2
            again = {node_id: hit[3] for node_id, hit in mine.memo.items()}
            assert again[acme.device.node_id] is not made[acme.device.node_id]
            assert again[acme.host.node_id] is made[acme.host.node_id]
            assert again[relay.node_id] is made[relay.node_id]
            link = mine.memo[acme.device.node_id][4][0]
            assert (link.dst, link.rtt_ms) == (relay.node_id, 7.0)

            cp.plane.drains.drain(acme.host.node_id)
            await acme.lease(cp)  # a drain in the partition: rebuilt at once
            assert mine.builds == 3
            drained = mine.memo[acme.host.node_id][3]
            assert drained is not made[acme.host.node_id] and drained.draining

    asyncio.run(main())
