"""Route leases the API issued, refused at a hop when forged, expired or fenced by an epoch."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from accessfabric.control.client.requestsig import NODE_HEADER, RequestSigner
from accessfabric.control.kernel.fence import EpochFence
from accessfabric.control.kernel.rejections import LeaseRejected, RejectReason
from accessfabric.control.kernel.verify import verify_route_lease
from accessfabric.control.server.api.verifier import BatchVerifier
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass
from tests.control.api_harness import Running, enroll_body, facts, running_plane
from tests.control.conftest import FakeClock

RDP = {"service": "rdp", "traffic_class": "interactive"}


async def _enroll(cp: Running, key: NodeKey, roles: list[str], tenant: str = "acme") -> None:
    status, reply = await cp.signed(
        key, "POST", "/v1/enroll", enroll_body(key, await cp.token(tenant, roles))
    )
    assert status == 200, reply


async def _beat(cp: Running, key: NodeKey, *peers: tuple[NodeKey, float], **kw: object) -> None:
    body = facts(*peers, **kw).to_json()  # type: ignore[arg-type]
    status, reply = await cp.signed(key, "POST", "/v1/heartbeat", _json(body))
    assert status == 200, reply


def _json(document: object) -> bytes:
    import json

    return json.dumps(document).encode()


class Fleet:
    def __init__(self) -> None:
        self.laptop, self.fast, self.slow, self.host = (NodeKey.generate() for _ in range(4))

    async def enroll(self, cp: Running, tenant: str = "acme") -> None:
        await _enroll(cp, self.laptop, ["mobile-edge"], tenant)
        await _enroll(cp, self.fast, ["relay"], tenant)
        await _enroll(cp, self.slow, ["relay"], tenant)
        await _enroll(cp, self.host, ["service-host"], tenant)
        status, reply = await cp.signed(self.host, "POST", "/v1/services/rdp/replicas", b"{}")
        assert status == 200, reply

    async def beat(self, cp: Running, *, fast_alive: bool = True) -> None:
        await _beat(cp, self.laptop, (self.fast, 5.0), (self.slow, 40.0))
        if fast_alive:
            await _beat(cp, self.fast, (self.host, 5.0), domain="dc-a")
        await _beat(cp, self.slow, (self.host, 5.0), domain="dc-b")
        await _beat(cp, self.host, services=("rdp",))


def test_issued_leases_verify_at_every_hop_and_carry_reasons(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            fleet = Fleet()
            await fleet.enroll(cp)
            await fleet.beat(cp)
            status, grant = await cp.signed(fleet.laptop, "POST", "/v1/leases/route", _json(RDP))
            assert status == 200, grant
            primary, alternate = grant["routes"]
            assert primary["rank"] == "primary"
            assert primary["hops"] == [fleet.laptop.node_id, fleet.fast.node_id, fleet.host.node_id]
            assert alternate["hops"][1] == fleet.slow.node_id
            assert primary["reasons"] and primary["score"] < alternate["score"]
            assert primary["route_id"] != alternate["route_id"]
            for route in grant["routes"]:
                blob = base64.b64decode(route["lease"])
                for hop in route["hops"]:
                    lease = verify_route_lease(
                        blob,
                        cp.authority.public_key,
                        cp.plane.clock(),
                        hop=hop,
                        service="rdp",
                        traffic_class=TrafficClass.INTERACTIVE,
                    )
                    assert lease.epoch == route["epoch"] == 1
                with pytest.raises(LeaseRejected) as refused:
                    verify_route_lease(
                        blob, cp.authority.public_key, cp.plane.clock(), service="ssh"
                    )
                assert refused.value.reason is RejectReason.SERVICE_NOT_ALLOWED
                with pytest.raises(LeaseRejected) as refused:
                    verify_route_lease(
                        blob,
                        cp.authority.public_key,
                        cp.plane.clock(),
                        traffic_class=TrafficClass.BULK,
                    )
                assert refused.value.reason is RejectReason.CLASS_NOT_ALLOWED

    asyncio.run(main())


def test_forged_and_expired_leases_are_refused_at_the_hop(tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)

    async def main() -> None:
        async with running_plane(tmp_path, clock=clock) as cp:
            fleet = Fleet()
            await fleet.enroll(cp)
            await fleet.beat(cp)
            _, grant = await cp.signed(fleet.laptop, "POST", "/v1/leases/route", _json(RDP))
            blob = base64.b64decode(grant["routes"][0]["lease"])
            hop = fleet.fast.node_id
            forged = bytearray(blob)
            forged[-80] ^= 1  # a bit of the body (the fencing token)
            other_authority = NodeKey.generate().public_key_bytes
            for bad, key in ((bytes(forged), cp.authority.public_key), (blob, other_authority)):
                with pytest.raises(LeaseRejected) as refused:
                    verify_route_lease(bad, key, clock.now, hop=hop)
                assert refused.value.reason is RejectReason.FORGED
            expires = grant["routes"][0]["expires_ms"] / 1000
            verify_route_lease(blob, cp.authority.public_key, expires - 0.01, hop=hop)
            with pytest.raises(LeaseRejected) as refused:
                verify_route_lease(blob, cp.authority.public_key, expires, hop=hop)
            assert refused.value.reason is RejectReason.EXPIRED

    asyncio.run(main())


def test_a_new_route_epoch_fences_the_old_lease(tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)

    async def main() -> None:
        async with running_plane(tmp_path, clock=clock) as cp:
            fleet = Fleet()
            await fleet.enroll(cp)
            await fleet.beat(cp)
            _, first = await cp.signed(fleet.laptop, "POST", "/v1/leases/route", _json(RDP))
            old = first["routes"][0]
            # a renewal over the same path keeps the epoch (and the fencing token)
            _, again = await cp.signed(fleet.laptop, "POST", "/v1/leases/route", _json(RDP))
            assert (again["routes"][0]["epoch"], again["routes"][0]["fencing_token"]) == (
                old["epoch"],
                old["fencing_token"],
            )
            # the fast relay goes silent: the primary moves to the slow relay, epoch + 1
            clock.advance(60)
            await fleet.beat(cp, fast_alive=False)
            _, second = await cp.signed(fleet.laptop, "POST", "/v1/leases/route", _json(RDP))
            new = second["routes"][0]
            assert new["route_id"] == old["route_id"]
            assert new["hops"][1] == fleet.slow.node_id
            assert new["epoch"] == old["epoch"] + 1
            assert new["fencing_token"] > old["fencing_token"]
            # the service host is on both paths: once it has seen the new epoch, the old
            # lease (signed, unexpired) is refused as stale
            fence = EpochFence(new["route_id"])
            key, hop = cp.authority.public_key, fleet.host.node_id
            fence.admit(verify_route_lease(base64.b64decode(new["lease"]), key, clock.now, hop=hop))
            with pytest.raises(LeaseRejected) as refused:
                verify_route_lease(
                    base64.b64decode(old["lease"]), key, clock.now, hop=hop, min_epoch=fence.epoch
                )
            assert refused.value.reason is RejectReason.STALE_EPOCH

    asyncio.run(main())


def test_a_route_lease_names_the_tenant_of_its_source(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            fleet = Fleet()
            await fleet.enroll(cp, tenant="initech")
            await fleet.beat(cp)
            status, grant = await cp.signed(fleet.laptop, "POST", "/v1/leases/route", _json(RDP))
            assert status == 200, grant
            for route in grant["routes"]:
                blob = base64.b64decode(route["lease"])
                lease = verify_route_lease(blob, cp.authority.public_key, cp.plane.clock())
                assert lease.tenant == "initech"

    asyncio.run(main())


def test_other_tenants_are_never_on_a_route(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            laptop, foreign, host = (NodeKey.generate() for _ in range(3))
            await _enroll(cp, laptop, ["mobile-edge"])
            await _enroll(cp, foreign, ["relay"], tenant="globex")
            await _enroll(cp, host, ["service-host"])
            await cp.signed(host, "POST", "/v1/services/rdp/replicas", b"{}")
            await _beat(cp, laptop, (foreign, 1.0))
            await _beat(cp, foreign, (host, 1.0))
            await _beat(cp, host)
            status, reply = await cp.signed(laptop, "POST", "/v1/leases/route", _json(RDP))
            assert (status, reply["error"]["code"]) == (409, "no_route")
            # the source's route coordinator holds only its partition (ADR 0038): the
            # refusal does not even name the other tenant's relay
            assert "eligible first hops: none" in reply["error"]["message"]
            assert foreign.node_id not in reply["error"]["message"]
            _, directory = await cp.signed(laptop, "GET", "/v1/directory")
            assert directory["entries"] == []

    asyncio.run(main())


def test_a_lease_request_is_verified_on_the_loop_not_behind_the_verifier_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device waits for its route lease to open a stream: its request's signature is
    checked at once on the loop, not in the verifier's next batch on its threads (whose
    answer comes back a loop turn later: tens of ms in a fleet's start, issue 17).
    With the batch stalled, a lease is still answered — and still only to its signer."""

    async def main() -> None:
        async with running_plane(tmp_path) as cp:
            fleet = Fleet()
            await fleet.enroll(cp)
            await fleet.beat(cp)
            # From here on a batched check never comes back.
            monkeypatch.setattr(BatchVerifier, "_flush", lambda self, loop: None)
            status, grant = await asyncio.wait_for(
                cp.signed(fleet.laptop, "POST", "/v1/leases/route", _json(RDP)), 10
            )
            assert status == 200, grant
            assert grant["routes"][0]["hops"][0] == fleet.laptop.node_id
            # Signed by another key in the laptop's name: refused, as before.
            forger = RequestSigner(NodeKey.generate(), clock=cp.plane.clock)
            headers = forger.headers("POST", "/v1/leases/route", _json(RDP))
            headers[NODE_HEADER] = fleet.laptop.node_id
            status, reply = await asyncio.wait_for(
                cp.signed(fleet.laptop, "POST", "/v1/leases/route", _json(RDP), headers=headers),
                10,
            )
            assert status == 401, reply
            # The laptop's own signature replayed, and one outside the time window: refused,
            # as the batched check refuses them.
            own = RequestSigner(fleet.laptop, clock=cp.plane.clock)
            headers = own.headers("POST", "/v1/leases/route", _json(RDP))
            for expected in (200, 401):
                status, reply = await asyncio.wait_for(
                    cp.signed(
                        fleet.laptop, "POST", "/v1/leases/route", _json(RDP), headers=headers
                    ),
                    10,
                )
                assert status == expected, reply
            stale = RequestSigner(fleet.laptop, clock=lambda: cp.plane.clock() - 3600)
            headers = stale.headers("POST", "/v1/leases/route", _json(RDP))
            status, reply = await asyncio.wait_for(
                cp.signed(fleet.laptop, "POST", "/v1/leases/route", _json(RDP), headers=headers),
                10,
            )
            assert status == 401, reply

    asyncio.run(main())
