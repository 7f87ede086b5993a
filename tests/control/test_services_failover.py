"""Service replicas: leader/follower failover through a CAS on the epoch; routes follow."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.rejections import LeaseRejected, RejectReason
from accessfabric.control.kernel.verify import verify_service_lease
from accessfabric.control.kernel.vocabulary import Role, ServiceMode
from accessfabric.control.server.plane import ControlConfig
from accessfabric.control.server.services import ServiceDirectory, ServiceError
from accessfabric.control.server.store import SqliteStore
from accessfabric.identity.keys import NodeKey
from tests.control.api_harness import Running, enroll_body, facts, running_plane
from tests.control.conftest import FakeClock

HOST = frozenset({Role.SERVICE_HOST})
LF = ServiceMode.LEADER_FOLLOWER


def _directory(store: SqliteStore, clock: FakeClock) -> ServiceDirectory:
    return ServiceDirectory(store, Authority(NodeKey.generate()), clock=clock, replica_ttl=15)


def test_leader_expiry_elects_the_follower_with_a_higher_epoch(
    store: SqliteStore, clock: FakeClock
) -> None:
    services = _directory(store, clock)
    a, b = NodeKey.generate().node_id, NodeKey.generate().node_id
    view = services.register("db", a, HOST, "acme", LF)
    assert view.leader == a
    first_epoch = view.epoch
    clock.advance(1)
    view = services.register("db", b, HOST, "acme", LF)
    assert view.leader == a and [r.active for r in view.replicas] == [True, False]
    for _ in range(4):  # b keeps heartbeating, a is silent
        clock.advance(5)
        services.renew(b, ("db",))
    view = services.reconcile("db")
    assert view.leader == b
    assert view.epoch == first_epoch + 1
    assert [r.node_id for r in view.replicas] == [b]


def test_service_leases_of_the_old_leader_are_fenced_and_expired(
    store: SqliteStore, clock: FakeClock
) -> None:
    authority = Authority(NodeKey.generate())
    services = ServiceDirectory(store, authority, clock=clock, replica_ttl=15)
    a, b = NodeKey.generate().node_id, NodeKey.generate().node_id
    services.register("db", a, HOST, "acme", LF)
    services.register("db", b, HOST, "acme", LF)
    (old_blob,) = services.issue(services.reconcile("db"), max_ttl=60)
    old = verify_service_lease(old_blob, authority.public_key, clock.now, service="db")
    assert old.replica == a
    assert old.expires_ms <= (clock.now + 15) * 1000  # never outlives the replica lease
    for _ in range(4):
        clock.advance(5)
        services.renew(b, ("db",))
    (new_blob,) = services.issue(services.reconcile("db"), max_ttl=60)
    new = verify_service_lease(new_blob, authority.public_key, clock.now, service="db")
    assert (new.replica, new.epoch) == (b, old.epoch + 1)
    assert new.fencing_token > old.fencing_token
    with pytest.raises(LeaseRejected) as refused:
        verify_service_lease(old_blob, authority.public_key, clock.now, min_epoch=new.epoch)
    assert refused.value.reason is RejectReason.EXPIRED  # expired before b could be elected
    with pytest.raises(LeaseRejected) as refused:
        verify_service_lease(
            old_blob, authority.public_key, old.issued_ms / 1000, min_epoch=new.epoch
        )
    assert refused.value.reason is RejectReason.STALE_EPOCH


def test_registration_rules(store: SqliteStore, clock: FakeClock) -> None:
    services = _directory(store, clock)
    a = NodeKey.generate().node_id
    with pytest.raises(ServiceError, match="service-host"):
        services.register("db", a, frozenset({Role.RELAY}), "acme", LF)
    services.register("db", a, HOST, "acme", LF)
    with pytest.raises(ServiceError) as conflict:
        services.register("db", a, HOST, "acme", ServiceMode.ACTIVE_ACTIVE)
    assert conflict.value.code == "mode_conflict"
    with pytest.raises(ServiceError) as conflict:
        services.register("db", NodeKey.generate().node_id, HOST, "globex", LF)
    assert conflict.value.code == "tenant_conflict"


def test_active_active_serves_every_live_replica(store: SqliteStore, clock: FakeClock) -> None:
    services = _directory(store, clock)
    a, b = NodeKey.generate().node_id, NodeKey.generate().node_id
    services.register("web", a, HOST, "acme", ServiceMode.ACTIVE_ACTIVE)
    view = services.register("web", b, HOST, "acme", ServiceMode.ACTIVE_ACTIVE)
    assert {r.node_id for r in view.active} == {a, b} and view.leader is None
    assert len(services.issue(view, max_ttl=60)) == 2
    clock.advance(16)
    assert services.active_map() == {}


def test_routes_follow_the_new_leader(tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)
    config = ControlConfig(replica_ttl=15, heartbeat_interval=10)

    async def main() -> None:
        async with running_plane(tmp_path, clock=clock, config=config) as cp:
            laptop, relay, first, second = (NodeKey.generate() for _ in range(4))
            for key, roles in (
                (laptop, ["mobile-edge"]),
                (relay, ["relay"]),
                (first, ["service-host"]),
                (second, ["service-host"]),
            ):
                status, _ = await cp.signed(
                    key, "POST", "/v1/enroll", enroll_body(key, await cp.token("acme", roles))
                )
                assert status == 200
            body = json.dumps({"mode": "leader-follower"}).encode()
            _, reply = await cp.signed(first, "POST", "/v1/services/db/replicas", body)
            assert reply["me"] == "leader"
            clock.advance(0.5)
            _, reply = await cp.signed(second, "POST", "/v1/services/db/replicas", body)
            assert reply["me"] == "follower"

            async def beat(*keys: NodeKey) -> None:
                for key in keys:
                    document = {
                        laptop.node_id: facts((relay, 10.0)),
                        relay.node_id: facts((first, 2.0), (second, 2.0)),
                        first.node_id: facts(services=("db",)),
                        second.node_id: facts(services=("db",)),
                    }[key.node_id].to_json()
                    status, _ = await cp.signed(
                        key, "POST", "/v1/heartbeat", json.dumps(document).encode()
                    )
                    assert status == 200

            await beat(laptop, relay, first, second)
            request = json.dumps({"service": "db"}).encode()
            _, grant = await cp.signed(laptop, "POST", "/v1/leases/route", request)
            before = grant["routes"][0]
            assert before["hops"][-1] == first.node_id
            for _ in range(4):  # the leader stops heartbeating
                clock.advance(5)
                await beat(laptop, relay, second)
            cp.plane.tick()
            _, leases = await cp.signed(second, "GET", "/v1/services/db/leases")
            assert leases["leader"] == second.node_id and leases["me"] == "leader"
            (blob,) = leases["leases"]
            lease = verify_service_lease(
                base64.b64decode(blob), cp.authority.public_key, clock.now, service="db"
            )
            assert lease.replica == second.node_id
            _, grant = await cp.signed(laptop, "POST", "/v1/leases/route", request)
            after = grant["routes"][0]
            assert after["hops"][-1] == second.node_id
            assert (after["route_id"], after["epoch"]) == (before["route_id"], before["epoch"] + 1)

    asyncio.run(main())


def _agent(cp: Running, tmp_path: Path, name: str, token: str) -> subprocess.Popen[str]:
    key = tmp_path / f"{name}.key"
    NodeKey.generate().save(key)
    command = [
        sys.executable,
        "-m",
        "accessfabric.control.server.cli",
        "control",
        "agent",
        "--server",
        cp.url,
        "--authority",
        cp.authority.public_key_text,
        "--key",
        str(key),
        "--state",
        str(tmp_path / f"{name}.state"),
        "--token",
        token,
        "--service",
        "db",
        "--service-mode",
        "leader-follower",
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_line(process: subprocess.Popen[str], prefix: str, timeout: float = 15.0) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith(prefix):
            return line.strip()
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no line starting {prefix!r} from the agent")


@pytest.mark.slow
def test_killing_the_leader_process_promotes_the_follower(tmp_path: Path) -> None:
    config = ControlConfig(heartbeat_interval=0.3, replica_ttl=1.5)

    async def main() -> None:
        async with running_plane(tmp_path, config=config) as cp:
            token = await cp.token("acme", ["service-host"], uses=2)
            leader = _agent(cp, tmp_path, "one", token)
            follower = None
            try:
                line = await asyncio.to_thread(_wait_line, leader, "serving db")
                assert line.endswith("as leader")
                follower = _agent(cp, tmp_path, "two", token)
                line = await asyncio.to_thread(_wait_line, follower, "serving db")
                assert line.endswith("as follower")
                view = cp.plane.services.view("db")
                assert view is not None
                old_leader, old_epoch = view.leader, view.epoch
                leader.kill()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    view = cp.plane.services.view("db")
                    if view is not None and view.leader not in (None, old_leader):
                        break
                    await asyncio.sleep(0.1)
                assert view is not None and view.leader not in (None, old_leader)
                assert view.epoch == old_epoch + 1
                assert [r.node_id for r in view.replicas] == [view.leader]
            finally:
                for process in (leader, follower):
                    if process is not None:
                        process.kill()
                        process.wait(timeout=10)
                        if process.stdout is not None:
                            process.stdout.close()

    asyncio.run(main())
