"""Route coordinators per partition (issue 17, ADR 0038): the control plane plans each
source's routes with its tenant's coordinator, whose snapshot holds that tenant's nodes
and the shared infrastructure only — real lease requests over HTTP on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

from accessfabric.control.server.plane import ControlConfig
from accessfabric.identity.keys import NodeKey
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
    """Another tenant's enrollment leaves acme's snapshot alone; a shared node's (it is in
    every partition) rebuilds it.  Heartbeat-only rebuilds are kept out of the count."""

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

            await _enroll(cp, NodeKey.generate(), ["relay"], "provider")  # shared: every one's
            await acme.lease(cp)
            assert mine.builds == 2

            await globex.enroll(cp)
            await _beat(cp, globex.device, (relay, 5.0))
            await _beat(cp, globex.host, services=(globex.service,))
            await _beat(cp, relay, (acme.host, 5.0), (globex.host, 5.0))
            await globex.lease(cp)  # beyond max_route_coordinators: acme's is dropped
            assert len(coordinators) == 1 and coordinators.get("acme") is None

    asyncio.run(main())
