"""Nodes use every control replica: sticky, fail over at once, jittered pause per replica."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

from accessfabric.control.client.replica_set import ReplicaSet, replica_summary
from accessfabric.control.server.store.etcd_cluster import LocalEtcdCluster
from accessfabric.identity.keys import NodeKey
from tests.control.api_harness import facts
from tests.control.replica_harness import running_replicas
from tests.etcd_cluster import restart_dead_members, revoke_all_leases, unique_namespace


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_replica_set_sticks_pauses_failed_replicas_with_jitter_and_comes_back() -> None:
    clock = Clock()
    replicas = ReplicaSet(["http://a", "http://b", "http://c"], clock=clock, rng=random.Random(7))
    first = replicas.order()[0]
    replicas.succeeded(first)
    assert all(replicas.order()[0] is first for _ in range(20))  # sticky
    replicas.failed(first, "connection refused")
    order = replicas.order()
    assert order[0] is not first and order[-1] is first  # paused: tried last
    pause = first.skip_until - clock.now
    assert 0.5 <= pause <= 1.0
    replicas.succeeded(order[0])
    replicas.failed(first, "again")
    assert 1.0 <= first.skip_until - clock.now <= 2.0  # doubles, jittered
    clock.now = first.skip_until + 0.01
    assert first in replicas.order()[:2]  # back in rotation after its pause
    summary = replica_summary(replicas.to_json())
    assert "failed (again)" in summary and "(answering)" in summary


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens: connection refused


def test_client_fails_over_between_etcd_replicas_and_reports_which_failed(
    etcd_cluster: LocalEtcdCluster, tmp_path: Path
) -> None:
    restart_dead_members(etcd_cluster)
    endpoints = etcd_cluster.endpoints

    async def main() -> None:
        async with running_replicas([endpoints, endpoints[::-1]], unique_namespace()) as (a, b):
            key = NodeKey.generate()
            token = await a.token("acme", ["relay"])
            dead = _dead_url()
            client = a.client(key, tmp_path / "cache")
            client.replicas = ReplicaSet([dead, a.url, b.url], clock=client.now)
            client.replicas.current = client.replicas.replicas[0]  # start on the dead one
            try:
                await client.enroll(token)
                used = client.base_url
                assert used in (a.url, b.url)
                for _ in range(5):
                    await client.heartbeat(facts())
                    assert client.base_url == used  # sticky
                status = client.status()
                states = {r["url"]: r["state"] for r in status.replicas}
                assert states[dead] == "failed" and states[used] == "ok"
                assert f"via {used}" in status.describe()
                # the answering replica stops: the next heartbeat goes to the other one
                serving, other = (a, b) if used == a.url else (b, a)
                # The other replica may not have the enrollment from its etcd watch yet
                # (five heartbeats on one connection take milliseconds): it reads the node
                # from etcd then (read-through, ADR 0042) instead of refusing unknown_node.
                await serving.server.stop()
                await client.heartbeat(facts())
                assert client.base_url == other.url
                states = {r["url"]: r["state"] for r in client.status().replicas}
                assert states[serving.url] == "failed" and states[other.url] == "ok"
            finally:
                await client.close()

    try:
        asyncio.run(main())
    finally:
        revoke_all_leases(etcd_cluster.endpoints)
