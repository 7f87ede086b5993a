"""Three nodes enroll, heartbeat, get a directory and route leases that verify at each hop."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from accessfabric.control.kernel.verify import verify_node_record, verify_route_lease
from accessfabric.wire.registry import TrafficClass
from tests.control.api_harness import facts, running_plane


def test_three_nodes_enroll_heartbeat_and_get_leases(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            (laptop, relay, host), clients = await cp.enroll_laptop_relay_host(tmp_path)
            await clients["laptop"].heartbeat(facts((relay, 20.0)))
            await clients["relay"].heartbeat(facts((laptop, 20.0), (host, 5.0)))
            await clients["host"].heartbeat(facts((relay, 5.0), services=("rdp",)))
            await clients["host"].register_service("rdp")
            routes = await clients["laptop"].route_leases("rdp", TrafficClass.INTERACTIVE)
            assert routes[0].lease.hops == (laptop.node_id, relay.node_id, host.node_id)
            now = cp.plane.clock()
            for hop in routes[0].lease.hops:
                verify_route_lease(
                    routes[0].blob,
                    cp.authority.public_key,
                    now,
                    hop=hop,
                    service="rdp",
                    traffic_class=TrafficClass.INTERACTIVE,
                )
            directory = await clients["laptop"].directory()
            assert directory["scope"] == "mobile"
            assert [e["node_id"] for e in directory["entries"]] == [relay.node_id]
            # least knowledge hides the host, but its route brings its verified record:
            # the laptop can seal end to end to it (docs/sealing.md)
            destination = routes[0].destination
            assert destination is not None and destination.node_id == host.node_id
            assert destination.sealing_public_key == host.sealing_public_key_bytes
            for entry in directory["entries"]:
                verify_node_record(base64.b64decode(entry["record"]), cp.authority.public_key, now)
            status, listing = await cp.admin("GET", "/v1/admin/nodes")
            assert status == 200
            assert {n["health"] for n in listing["nodes"]} == {"healthy"}
            assert sorted(n["roles"] for n in listing["nodes"]) == [
                ["entry", "relay"],
                ["mobile-edge"],
                ["service-host"],
            ]
            for client in clients.values():
                await client.close()

    asyncio.run(main())
