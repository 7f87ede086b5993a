"""The console's read endpoints: admin only, fed by heartbeat ``traffic`` facts and the
control plane's own state (events, rates, routes with score reasons)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from accessfabric.control.client.client import ControlRefused
from accessfabric.control.client.facts import (
    ClassBytes,
    FactsError,
    RelayUsage,
    RouteReport,
    StreamReport,
    parse_facts,
)
from accessfabric.wire.registry import TrafficClass
from tests.control.api_harness import facts, running_plane

PATHS = ("fleet", "routes", "service-leases", "traffic", "relays", "streams", "events", "tenants")


def test_console_endpoints(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            for path in PATHS:
                async with cp.http.get(f"{cp.url}/v1/admin/{path}") as response:
                    assert response.status == 401, path  # nothing without the admin token
            (laptop, relay, host), clients = await cp.enroll_laptop_relay_host(tmp_path)
            await clients["relay"].heartbeat(facts((laptop, 20.0), (host, 5.0)))
            await clients["host"].heartbeat(facts((relay, 5.0), services=("rdp",)))
            await clients["host"].register_service("rdp")
            await clients["laptop"].heartbeat(facts((relay, 20.0)))
            routes = await clients["laptop"].route_leases("rdp", TrafficClass.INTERACTIVE)
            hops = routes[0].lease.hops
            for sent in (1_000, 51_000):  # two samples: 50 kB in between
                report = RouteReport(
                    route_id=routes[0].lease.route_id, service="rdp",
                    traffic_class="interactive", rank=0, hops=hops, healthy=True,
                    srtt_ms=20.0, bytes=sent, last_switch="", recovery_ms=None,
                )  # fmt: skip
                stream = StreamReport(
                    peer=relay.node_id, service="rdp", traffic_class="interactive",
                    state="open", credit=0, bytes_in=0, bytes_out=sent, queued=10,
                    unacked=0, rtt_ms=20.0, blocked="credit",
                )  # fmt: skip
                await clients["laptop"].heartbeat(
                    facts(
                        (relay, 20.0),
                        class_bytes=(ClassBytes("interactive", sent, 0),),
                        route_reports=(report,),
                        stream_reports=(stream,),
                    )
                )
                await asyncio.sleep(0.05)
            await clients["relay"].heartbeat(
                facts((laptop, 20.0), (host, 5.0),
                      relay_usage=(RelayUsage("acme", "interactive", 3, 1, 900, 100),))
            )  # fmt: skip
            failed_over = report._replace(last_switch="session_lost", recovery_ms=42.0)
            await clients["laptop"].heartbeat(
                facts(
                    (relay, 20.0),
                    route_reports=(failed_over,),
                    stream_reports=(stream,),
                    class_bytes=(ClassBytes("interactive", 51_000, 0),),
                )
            )

            status, fleet = await cp.admin("GET", "/v1/admin/fleet")
            assert status == 200
            by_id = {n["node_id"]: n for n in fleet["nodes"]}
            assert by_id[host.node_id]["facts"]["services"] == ["rdp"]
            assert by_id[relay.node_id]["facts"]["transports"] == ["tcp_tls"]

            _, listed = await cp.admin("GET", "/v1/admin/routes")
            (group,) = listed["routes"]
            assert group["source"] == laptop.node_id and group["service"] == "rdp"
            assert group["held"][0]["hops"] == list(hops)
            primary = group["planned"][0]
            assert primary["hops"] == list(hops)
            assert {r["factor"] for r in primary["reasons"]} >= {"rtt"}

            _, traffic = await cp.admin("GET", "/v1/admin/traffic")
            rates = traffic["nodes"][laptop.node_id]
            assert rates and rates[0]["bps"]["interactive"] > 0
            (route_rates,) = traffic["routes"]
            assert route_rates["samples"][0]["bps"]["interactive"] > 0

            _, streams = await cp.admin("GET", "/v1/admin/streams")
            (node,) = streams["nodes"]
            assert node["streams"][0]["blocked"] == "credit"

            _, relays = await cp.admin("GET", "/v1/admin/relays")
            assert relays["relays"][0]["usage"][0]["bytes_from_source"] == 900

            _, tenants = await cp.admin("GET", "/v1/admin/tenants")
            acme = tenants["tenants"]["acme"]
            assert acme["nodes"] == 3
            assert acme["bytes"]["interactive"] == {"in": 51_000, "out": 0}
            assert acme["relayed_bytes"] == 1000

            _, leases = await cp.admin("GET", "/v1/admin/service-leases")
            (rdp,) = leases["services"]
            assert 0 < rdp["replicas"][0]["lease_expires_in_s"] <= rdp["replica_ttl_s"]

            status, revoked = await cp.admin(
                "POST", f"/v1/admin/nodes/{relay.node_id}/revoke-role", {"role": "entry"}
            )
            assert status == 200, revoked

            async def kinds() -> set[str]:
                _, events = await cp.admin("GET", "/v1/admin/events")
                return {e["kind"] for e in events["events"]}

            for _ in range(100):  # the tick notices the revocation within ~1 s
                if "role_revoked" in await kinds():
                    break
                await asyncio.sleep(0.05)
            assert {"token_created", "route_failover", "role_revoked"} <= await kinds()
            status, _ = await cp.admin("GET", "/v1/admin/events?after=soon")
            assert status == 400

    asyncio.run(main())


@pytest.mark.parametrize(
    ("traffic", "field"),
    [
        ({"classes": [{"class": "warp", "in": 1}]}, "traffic.classes[0].class"),
        ({"classes": [{"class": "bulk", "in": -1}]}, "traffic.classes[0].in"),
        ({"routes": [{"hops": ["nope"]}]}, "traffic.routes[0].hops[0]"),
        ({"routes": [{}] * 65}, "traffic.routes"),
        ({"streams": [{"blocked": "moon"}]}, "traffic.streams[0].blocked"),
        ({"relay": [{"tenant": "A B"}]}, "traffic.relay[0].tenant"),
    ],
)
def test_traffic_facts_are_bounded(traffic: dict[str, object], field: str) -> None:
    with pytest.raises(FactsError) as error:
        parse_facts({"traffic": traffic})
    assert str(error.value).startswith(field)


def test_traffic_facts_round_trip() -> None:
    original = facts(class_bytes=(ClassBytes("bulk", 5, 7),))
    assert parse_facts(original.to_json()).class_bytes == original.class_bytes


def test_route_tests_are_handed_over_in_heartbeats_and_hops_need_the_source(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            (laptop, relay, host), clients = await cp.enroll_laptop_relay_host(tmp_path)
            path = f"/v1/admin/nodes/{laptop.node_id}/route-tests"
            async with cp.http.post(cp.url + path, json={"service": "rdp"}) as response:
                assert response.status == 401  # admin only
            status, test = await cp.admin("POST", path, {"service": "rdp"})
            assert status == 201 and test["state"] == "queued", test
            reply = await clients["relay"].heartbeat(facts((laptop, 20.0), (host, 7.5)))
            assert "route_tests" not in reply  # only the node it was queued for gets it
            reply = await clients["laptop"].heartbeat(facts((relay, 20.0)))
            assert reply["route_tests"] == [
                {"test_id": test["test_id"], "service": "rdp", "traffic_class": "interactive"}
            ]
            assert "route_tests" not in await clients["laptop"].heartbeat(facts((relay, 20.0)))
            done = {"routes": [{"rank": 0, "ok": True, "hops": []}], "error": ""}
            result_path = f"/v1/route-tests/{test['test_id']}"
            with pytest.raises(ControlRefused) as refused:  # not the relay's test
                await clients["relay"].request("POST", result_path, done)
            assert (refused.value.status, refused.value.code) == (404, "unknown_test")
            await clients["laptop"].request("POST", result_path, done)
            _, shown = await cp.admin("GET", f"/v1/admin/route-tests/{test['test_id']}")
            assert shown["state"] == "done" and shown["result"]["routes"][0]["ok"] is True
            for _ in range(4):  # at most 4 under way per node
                await cp.admin("POST", path, {"service": "rdp"})
            status, refused = await cp.admin("POST", path, {"service": "rdp"})
            assert status == 409 and refused["error"]["code"] == "too_many_tests"

            # per-hop RTTs: each link as its ends reported it; only for the lease's source
            await clients["host"].heartbeat(facts((relay, 5.0), services=("rdp",)))
            await clients["host"].register_service("rdp")
            routes = await clients["laptop"].route_leases("rdp", TrafficClass.INTERACTIVE)
            lease = base64.b64encode(routes[0].blob).decode()
            hops = await clients["laptop"].request(
                "POST", "/v1/leases/route/hops", {"lease": lease}
            )
            assert hops["hops"] == [laptop.node_id, relay.node_id, host.node_id]
            rtts = [(x["hop"], x["rtt_ms"], x["measured_by"]) for x in hops["links"]]
            assert rtts == [(1, 20.0, laptop.node_id), (2, 7.5, relay.node_id)]
            with pytest.raises(ControlRefused) as refused:
                await clients["relay"].request("POST", "/v1/leases/route/hops", {"lease": lease})
            assert (refused.value.status, refused.value.code) == (403, "not_source")
            for client in clients.values():
                await client.close()

    asyncio.run(main())
