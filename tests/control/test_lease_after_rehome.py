"""A device's own newer heartbeat wins over its lost entry's older one (issue 17, ADR
0037): right after the device reports its new entry, its leases go through the new
entry, none through the old one (whose last heartbeat still lists the device)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from accessfabric.control.client.facts import MAX_PEERS
from accessfabric.control.server.plane import ControlConfig
from accessfabric.identity.keys import NodeKey
from tests.control.api_harness import Running, enroll_body, facts, running_plane

ECHO = {"service": "echo-svc", "traffic_class": "reliable"}


async def _enroll(cp: Running, key: NodeKey, role: str) -> None:
    status, reply = await cp.signed(
        key, "POST", "/v1/enroll", enroll_body(key, await cp.token("acme", [role]))
    )
    assert status == 200, reply


async def _beat(cp: Running, key: NodeKey, *peers: tuple[NodeKey, float], **kw: object) -> None:
    body = json.dumps(facts(*peers, **kw).to_json()).encode()  # type: ignore[arg-type]
    status, reply = await cp.signed(key, "POST", "/v1/heartbeat", body)
    assert status == 200, reply


def test_leases_follow_the_devices_newer_report(tmp_path: Path) -> None:
    async def main() -> None:
        # snapshot_max_age 0: the planner takes every heartbeat in at once (in production a
        # heartbeat reaches the plans within 1 s; the node waits that long: ADR 0037)
        async with running_plane(tmp_path, config=ControlConfig(snapshot_max_age=0.0)) as cp:
            device, old, new, host = (NodeKey.generate() for _ in range(4))
            await _enroll(cp, device, "mobile-edge")
            await _enroll(cp, old, "entry")
            await _enroll(cp, new, "entry")
            await _enroll(cp, host, "service-host")
            await cp.grant("acme", ["echo-svc"], roles=("mobile-edge",))
            status, reply = await cp.signed(host, "POST", "/v1/services/echo-svc/replicas", b"{}")
            assert status == 200, reply
            await _beat(cp, host, services=("echo-svc",))
            await _beat(cp, new, (host, 5.0))
            await _beat(cp, device, (old, 5.0))
            await _beat(cp, old, (host, 5.0), (device, 5.0))  # the entry's last heartbeat
            status, grant = await cp.signed(device, "POST", "/v1/leases/route", _body())
            assert status == 200, grant
            assert {r["hops"][1] for r in grant["routes"]} == {old.node_id}
            # The old entry dies; the device re-homes and says so at once.  The old
            # entry's heartbeat (listing the device) is still within unreachable_after.
            await asyncio.sleep(0.01)
            await _beat(cp, device, (new, 5.0))
            status, grant = await cp.signed(device, "POST", "/v1/leases/route", _body())
            assert status == 200, grant
            assert {r["hops"][1] for r in grant["routes"]} == {new.node_id}, grant["routes"]

    asyncio.run(main())


def _body() -> bytes:
    return json.dumps(ECHO).encode()


def test_a_hubs_full_peer_list_is_no_word_against_a_link(tmp_path: Path) -> None:
    """An entry with more sessions than a heartbeat has room for (MAX_PEERS) leaves some
    out; the service host beyond them reports host->entry only.  The entry heartbeating
    after the host must not take that link away (a reviewer's repro: ``no_route`` at every
    other heartbeat phase on a hub of 257 sessions)."""

    async def main() -> None:
        async with running_plane(tmp_path, config=ControlConfig(snapshot_max_age=0.0)) as cp:
            device, entry, host = (NodeKey.generate() for _ in range(3))
            others = [(NodeKey.generate(), 5.0) for _ in range(MAX_PEERS - 1)]
            await _enroll(cp, device, "mobile-edge")
            await _enroll(cp, entry, "entry")
            await _enroll(cp, host, "service-host")
            await cp.grant("acme", ["echo-svc"], roles=("mobile-edge",))
            status, reply = await cp.signed(host, "POST", "/v1/services/echo-svc/replicas", b"{}")
            assert status == 200, reply
            await _beat(cp, device, (entry, 5.0))
            await _beat(cp, host, (entry, 5.0), services=("echo-svc",))
            await asyncio.sleep(0.01)
            await _beat(cp, entry, (device, 5.0), *others)  # full: the host left out
            status, grant = await cp.signed(device, "POST", "/v1/leases/route", _body())
            assert status == 200, grant
            assert [r["hops"] for r in grant["routes"]] == [
                [device.node_id, entry.node_id, host.node_id]
            ]

    asyncio.run(main())
