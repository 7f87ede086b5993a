"""Control replicas on a real 3-member etcd: shared writes, exactly-once tokens, soft state.

Two replicas (in-process ``ControlServer``s, each with its own etcd client) share one
namespace of the session's cluster.  What one replica writes, the other learns through its
etcd watch; a single-use token raced on both is redeemed once; heartbeats are shared only
when due (ADR 0019).  The partition of a replica from etcd is in ``test_etcd_faults.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from accessfabric.control.client.heartbeat_mac import ControlMacKey, node_session_key
from accessfabric.control.client.requestsig import RequestSigner
from accessfabric.control.server.store.etcd_cluster import LocalEtcdCluster
from accessfabric.identity.keys import NodeKey
from tests.control.api_harness import Running, enroll_body, facts
from tests.control.replica_harness import running_replicas
from tests.etcd_cluster import restart_dead_members, revoke_all_leases, unique_namespace

HEARTBEAT = "/v1/heartbeat"


async def _enroll(cp: Running, roles: list[str]) -> tuple[NodeKey, ControlMacKey, int]:
    key = NodeKey.generate()
    token = await cp.token("acme", roles)
    status, reply = await cp.signed(key, "POST", "/v1/enroll", enroll_body(key, token))
    assert status == 200, reply
    control = ControlMacKey.from_json(reply["mac_key"], cp.authority.public_key)
    return key, control, int(reply["node_record"]["revision"])


async def _mac_heartbeat(
    cp: Running, signer: RequestSigner, key: NodeKey, control: ControlMacKey, revision: int
) -> tuple[int, Any]:
    body = json.dumps(facts().to_json()).encode()
    session = node_session_key(key.sealing_private_key(), key.node_id, revision, control)
    headers = signer.mac_headers("POST", HEARTBEAT, body, session, revision)
    async with cp.http.post(cp.url + HEARTBEAT, data=body, headers=headers) as response:
        return response.status, json.loads(await response.read())


async def _until(predicate: Any, limit: float, what: str) -> float:
    """Seconds until ``await predicate()`` is true; fails after ``limit``."""
    start = time.monotonic()
    while not await predicate():
        assert time.monotonic() - start < limit, f"{what} not within {limit} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def test_role_revoked_on_one_replica_is_refused_by_the_other_within_a_second(
    etcd_cluster: LocalEtcdCluster,
) -> None:
    restart_dead_members(etcd_cluster)
    endpoints = etcd_cluster.endpoints

    async def main() -> None:
        async with running_replicas([endpoints, endpoints[::-1]], unique_namespace()) as (a, b):
            key, control, revision = await _enroll(a, ["entry", "relay"])
            signer = RequestSigner(key)

            async def b_knows_node() -> bool:
                return b.plane.registry.get(key.node_id) is not None

            await _until(b_knows_node, 1.0, "enrollment through A seen by B")
            status, reply = await _mac_heartbeat(b, signer, key, control, revision)
            assert status == 200, reply

            status, reply = await a.admin(
                "POST", f"/v1/admin/nodes/{key.node_id}/revoke-role", {"role": "entry"}
            )
            assert status == 200, reply

            async def b_refuses_old_record() -> bool:
                status, reply = await _mac_heartbeat(b, signer, key, control, revision)
                if status == 200:
                    return False
                assert (status, reply["error"]["code"]) == (401, "stale_mac_key"), reply
                return True

            elapsed = await _until(b_refuses_old_record, 1.0, "revocation through A at B")
            assert elapsed < 1.0
            status, listing = await b.admin("GET", "/v1/admin/nodes")
            assert status == 200
            (node,) = [n for n in listing["nodes"] if n["node_id"] == key.node_id]
            assert node["roles"] == ["relay"]
            # the replaced record is what B hands out now
            status, reply = await b.signed(key, "POST", HEARTBEAT, b"{}")
            assert status == 200, reply
            assert reply["node_record"]["revision"] == revision + 1
            assert reply["node_record"]["roles"] == ["relay"]

    try:
        asyncio.run(main())
    finally:
        revoke_all_leases(etcd_cluster.endpoints)


def test_single_use_token_raced_on_two_replicas_succeeds_exactly_once(
    etcd_cluster: LocalEtcdCluster,
) -> None:
    """100 races of one single-use token, one enrollment through each replica at once.

    A replica may answer 503 when the loaded machine makes etcd slower than its deadline;
    such a race shows no double success either, but is run again with a new token so
    that 100 races are decided by the store."""
    restart_dead_members(etcd_cluster)
    endpoints = etcd_cluster.endpoints

    async def main() -> tuple[list[list[int]], list[list[int]]]:
        decided: list[list[int]] = []
        unavailable: list[list[int]] = []
        async with running_replicas([endpoints, endpoints[::-1]], unique_namespace()) as (a, b):
            while len(decided) < 100 and len(unavailable) < 100:
                token = await a.token("acme", ["relay"], uses=1)
                keys = [NodeKey.generate(), NodeKey.generate()]
                replies = await asyncio.gather(
                    a.signed(keys[0], "POST", "/v1/enroll", enroll_body(keys[0], token)),
                    b.signed(keys[1], "POST", "/v1/enroll", enroll_body(keys[1], token)),
                )
                statuses = sorted(status for status, _ in replies)
                (unavailable if 503 in statuses else decided).append(statuses)
        return decided, unavailable

    try:
        decided, unavailable = asyncio.run(main())
    finally:
        revoke_all_leases(etcd_cluster.endpoints)
    assert len(decided) == 100, f"only {len(decided)} races decided; 503s: {unavailable}"
    for statuses in decided:
        assert statuses.count(200) == 1, statuses
        assert all(status in (200, 401, 403, 409) for status in statuses), statuses
    for statuses in unavailable:
        assert statuses.count(200) <= 1, statuses


def test_heartbeats_are_soft_state_shared_only_when_due(etcd_cluster: LocalEtcdCluster) -> None:
    """ADR 0019: ten heartbeats of one relay are at most one etcd write per 1.25 intervals;
    the other replica still sees the relay live; an end node is not written per heartbeat."""
    restart_dead_members(etcd_cluster)
    endpoints = etcd_cluster.endpoints
    from accessfabric.control.server.plane import ControlConfig

    config = ControlConfig(heartbeat_interval=10.0)

    async def main() -> None:
        async with running_replicas(
            [endpoints, endpoints[::-1]], unique_namespace(), config=config
        ) as (a, b):
            relay, _, _ = await _enroll(a, ["relay"])
            phone, _, _ = await _enroll(a, ["mobile-edge"])
            for _ in range(10):
                for key in (relay, phone):
                    status, reply = await a.signed(
                        key, "POST", HEARTBEAT, json.dumps(facts().to_json()).encode()
                    )
                    assert status == 200, reply
                await asyncio.sleep(0.02)

            async def b_sees_relay_live() -> bool:
                return b.plane.heartbeats.get(relay.node_id) is not None

            await _until(b_sees_relay_live, 2.0, "relay liveness shared with B")
            relay_entry = a.plane.store.get("/heartbeats/" + relay.node_id)
            assert relay_entry is not None and relay_entry.version == 1
            phone_entry = a.plane.store.get("/heartbeats/" + phone.node_id)
            # first sight is a material change (written once), repeats are not
            assert phone_entry is not None and phone_entry.version == 1
            status, reply = await a.signed(
                phone,
                "POST",
                HEARTBEAT,
                json.dumps(facts(region="us").to_json()).encode(),
            )
            assert status == 200

            async def phone_move_shared() -> bool:
                state = b.plane.heartbeats.get(phone.node_id)
                return state is not None and state.facts.region == "us"

            await _until(phone_move_shared, 2.0, "a material change shared with B")

    try:
        asyncio.run(main())
    finally:
        revoke_all_leases(etcd_cluster.endpoints)


def test_a_node_removed_through_one_replica_is_gone_from_every_replica_within_a_second(
    etcd_cluster: LocalEtcdCluster,
) -> None:
    """``control remove-node`` through A: B and C (other etcd clients) drop the node's
    record and heartbeat state from their watches, refuse its signed requests, stop
    listing it; its persisted heartbeat leaves the store, so no replica that loads the
    store later (a restart, a resync) brings it back."""
    restart_dead_members(etcd_cluster)
    endpoints = etcd_cluster.endpoints
    orders = [endpoints, endpoints[::-1], endpoints[1:] + endpoints[:1]]

    async def main() -> None:
        async with running_replicas(orders, unique_namespace()) as (a, b, c):
            key, control, revision = await _enroll(a, ["relay"])
            signer = RequestSigner(key)

            async def everyone_knows() -> bool:
                return all(r.plane.registry.get(key.node_id) for r in (b, c))

            await _until(everyone_knows, 2.0, "enrollment through A seen by B and C")
            status, reply = await _mac_heartbeat(b, signer, key, control, revision)
            assert status == 200, reply
            b.plane.heartbeats.flush(force=True)  # shared now, as a due heartbeat would be

            async def everyone_heard() -> bool:
                return all(r.plane.heartbeats.get(key.node_id) for r in (a, b, c))

            await _until(everyone_heard, 2.0, "the heartbeat through B seen by A and C")

            status, reply = await a.admin("DELETE", f"/v1/admin/nodes/{key.node_id}")
            assert status == 200 and reply["removed"], reply

            async def everyone_forgot() -> bool:
                return not any(
                    r.plane.registry.get(key.node_id) or r.plane.heartbeats.get(key.node_id)
                    for r in (a, b, c)
                )

            assert await _until(everyone_forgot, 1.0, "the removal through A at B and C") < 1.0
            for replica in (b, c):
                status, reply = await replica.signed(key, "POST", HEARTBEAT, b"{}")
                assert (status, reply["error"]["code"]) == (401, "unknown_node"), reply
                status, listing = await replica.admin("GET", "/v1/admin/nodes")
                assert status == 200
                assert key.node_id not in {n["node_id"] for n in listing["nodes"]}
            assert a.plane.store.get(f"/heartbeats/{key.node_id}") is None
            b.plane.heartbeats.load()  # what a restarted or resynced replica reads
            assert b.plane.heartbeats.get(key.node_id) is None

    try:
        asyncio.run(main())
    finally:
        revoke_all_leases(etcd_cluster.endpoints)
