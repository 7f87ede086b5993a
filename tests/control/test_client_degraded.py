"""The node-side client: cache on disk, degraded operation with the control plane stopped."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from pathlib import Path

import pytest

from accessfabric.control.client.client import (
    ControlClient,
    ControlRefused,
    ControlUnavailable,
    NoUsableLease,
    backoff_delay,
    heartbeat_forever,
)
from accessfabric.control.client.node_cache import NodeCache, write_atomically
from accessfabric.control.kernel.verify import verify_route_lease
from accessfabric.control.server.plane import ControlConfig
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass
from tests.control.api_harness import facts, running_plane
from tests.control.conftest import FakeClock


async def _three(cp: object, tmp_path: Path) -> tuple[ControlClient, NodeKey, NodeKey]:
    from tests.control.api_harness import Running

    assert isinstance(cp, Running)
    laptop, relay, host = (NodeKey.generate() for _ in range(3))
    clients = [cp.client(k, tmp_path / k.node_id) for k in (laptop, relay, host)]
    for client, roles in zip(clients, (["mobile-edge"], ["relay"], ["service-host"]), strict=True):
        await client.enroll(await cp.token("acme", roles))
    await clients[2].register_service("rdp")
    await clients[0].heartbeat(facts((relay, 10.0)))
    await clients[1].heartbeat(facts((host, 2.0)))
    await clients[2].heartbeat(facts(services=("rdp",)))
    for client in clients[1:]:
        await client.close()
    return clients[0], relay, host


def test_control_plane_stopped_cached_leases_work_until_expiry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(1_800_000_000.0)
    config = ControlConfig(route_lease_ttl=60)

    async def main() -> None:
        async with running_plane(tmp_path, clock=clock, config=config) as cp:
            laptop, relay, host = await _three(cp, tmp_path)
            fresh = await laptop.route_leases("rdp")
            assert laptop.status().reachable is True
            authority = cp.authority.public_key
            url = cp.url
        # the control plane is gone (server stopped, port closed)
        offline = ControlClient(
            url, laptop.key, authority, str(laptop.cache.directory), clock=clock, timeout=1
        )
        await laptop.close()
        async with offline:
            clock.advance(30)
            cached = await offline.route_leases("rdp")
            assert [r.lease.lease_id for r in cached] == [r.lease.lease_id for r in fresh]
            hop_view = verify_route_lease(
                cached[0].blob,
                authority,
                clock.now,
                hop=relay.node_id,
                service="rdp",
                traffic_class=TrafficClass.INTERACTIVE,
            )
            assert hop_view.hops[-1] == host.node_id
            status = offline.status()
            assert status.reachable is False and "cannot reach" in (status.last_error or "")
            assert status.cache_age_s == pytest.approx(30, abs=1)
            assert status.route_lease_expiries["rdp/interactive"] == pytest.approx(
                clock.now + 30, abs=1
            )
            assert "UNREACHABLE" in status.describe(clock.now)
            clock.advance(31)  # past the leases' expiry
            caplog.clear()
            with (
                caplog.at_level(logging.INFO, "accessfabric.control.client.client"),
                pytest.raises(NoUsableLease) as why,
            ):
                await offline.route_leases("rdp")
            message = str(why.value)
            assert "unreachable (no answer for 61 s; cannot reach" in message
            assert "expired 1 s ago" in message
            assert not caplog.records  # expired cached leases are expected, not news
            with pytest.raises(NoUsableLease, match="was ever cached"):
                await offline.route_leases("ssh")
            assert offline.status().consecutive_failures == 3
            assert offline.record() is not None  # the node record outlives route leases

    asyncio.run(main())


def test_heartbeat_reply_carries_revocation_and_the_client_takes_it(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            key = NodeKey.generate()
            client = cp.client(key, tmp_path / "node")
            async with client:
                record = await client.enroll(await cp.token("acme", ["relay", "exit"]))
                status, _ = await cp.admin(
                    "POST", f"/v1/admin/nodes/{key.node_id}/revoke-role", {"role": "exit"}
                )
                assert status == 200
                reply = await client.heartbeat(facts())
                assert reply["health"] == "degraded"  # still held revision 1 when it beat
                new = client.record()
                assert new is not None and new.revision == record.revision + 1
                assert {r.value for r in new.roles} == {"relay"}
                reply = await client.heartbeat(facts())
                assert reply["health"] == "healthy" and "record" not in reply["node_record"]
                with pytest.raises(ControlRefused) as refused:
                    await client.fetch_route_leases("nothing")
                assert (refused.value.status, refused.value.code) == (404, "unknown_service")

    asyncio.run(main())


def test_heartbeat_loop_backs_off_with_jitter_and_recovers(tmp_path: Path) -> None:
    async def main() -> None:
        client = ControlClient(
            "http://127.0.0.1:9", NodeKey.generate(), b"\x00" * 32, str(tmp_path), timeout=0.5
        )
        stop = asyncio.Event()
        task = asyncio.create_task(
            heartbeat_forever(client, facts, stop=stop, backoff_base=0.01, backoff_max=0.05)
        )
        await asyncio.sleep(0.4)
        stop.set()
        await asyncio.wait_for(task, 5)
        await client.close()
        status = client.status()
        assert status.reachable is False and status.consecutive_failures >= 3
        assert status.next_attempt_at is not None

    asyncio.run(main())
    rng = random.Random(1)
    delays = [backoff_delay(n, rng, base=1.0, cap=60.0) for n in range(10)]
    assert all(min(60, 2**n) / 2 <= d <= min(60, 2**n) for n, d in enumerate(delays))
    assert len(set(delays)) == len(delays)


def test_cache_writes_are_atomic_and_tolerate_garbage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = NodeCache(tmp_path)
    cache.write({"a": 1}, "routes", "x.json")
    assert cache.read("routes", "x.json") == {"a": 1}
    assert sorted(p.name for p in (tmp_path / "routes").iterdir()) == ["x.json"]
    (tmp_path / "routes" / "y.json").write_text("{torn")
    assert cache.read("routes", "y.json") is None
    assert cache.route_documents() == [{"a": 1}]

    target = tmp_path / "z.json"
    write_atomically(target, json.dumps({"v": 1}).encode())

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("accessfabric.control.client.node_cache.os.replace", crash)
    with pytest.raises(OSError):
        write_atomically(target, b'{"v": 2}')
    assert json.loads(target.read_text()) == {"v": 1}  # the old document, whole
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_unreachable_is_not_refused(tmp_path: Path) -> None:
    async def main() -> None:
        client = ControlClient(
            "http://127.0.0.1:9", NodeKey.generate(), b"\x00" * 32, str(tmp_path), timeout=0.5
        )
        async with client:
            with pytest.raises(ControlUnavailable):
                await client.enroll("aft1_x")

    asyncio.run(main())
