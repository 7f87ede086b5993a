"""Fault tests of issue 16 on real processes: 3 etcd members, 2 ``control serve`` replicas.

The five "nodes" are ``ControlClient``s in the test process (each with both replica URLs),
heartbeating and asking for route leases in a steady stream; each client verifies every
lease it gets with the pinned authority key, so a wrong answer would fail the request.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from accessfabric.control.client.client import ControlClient, ControlRefused, ControlUnavailable
from accessfabric.control.client.facts import HeartbeatFacts
from accessfabric.control.server.store.etcd import EtcdStore
from accessfabric.control.server.store.etcd_cluster import LocalEtcdCluster
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass
from tests.control.api_harness import facts
from tests.control.etcd_processes import ReplicaProcesses, start_replicas
from tests.control.test_api_cli import _env, _line, _start, processes  # noqa: F401
from tests.etcd_cluster import restart_dead_members, revoke_all_leases

ROLES = {
    "laptop-1": ["mobile-edge"],
    "laptop-2": ["mobile-edge"],
    "relay": ["entry", "relay"],
    "host-1": ["service-host"],
    "host-2": ["service-host"],
}


@dataclass
class Outcome:
    at: float
    kind: str  # heartbeat or lease
    ok: bool
    url: str
    error: str = ""
    began: float = 0.0


@dataclass
class Node:
    name: str
    key: NodeKey
    client: ControlClient
    facts: HeartbeatFacts | None = None
    outcomes: list[Outcome] = field(default_factory=list)


async def _token(http: aiohttp.ClientSession, replicas: ReplicaProcesses, roles: list[str]) -> str:
    async with http.post(
        replicas.urls[0] + "/v1/admin/tokens",
        json={"tenant": "acme", "roles": roles, "ttl_s": 600},
        headers={"Authorization": f"Bearer {replicas.admin_token}"},
    ) as response:
        assert response.status == 201, await response.text()
        return str((await response.json())["token"])


async def _fleet(replicas: ReplicaProcesses, tmp_path: Path) -> dict[str, Node]:
    nodes: dict[str, Node] = {}
    async with aiohttp.ClientSession() as http:
        for name, roles in ROLES.items():
            key = NodeKey.generate()
            client = ControlClient(replicas.urls, key, replicas.authority_key, str(tmp_path / name))
            await client.enroll(await _token(http, replicas, roles))
            nodes[name] = Node(name, key, client)
    ids = {name: node.key.node_id for name, node in nodes.items()}
    by_name = {name: node.key for name, node in nodes.items()}
    peers = {
        "laptop-1": [("relay", 20.0)],
        "laptop-2": [("relay", 25.0)],
        "relay": [("laptop-1", 20.0), ("laptop-2", 25.0), ("host-1", 5.0), ("host-2", 6.0)],
        "host-1": [("relay", 5.0)],
        "host-2": [("relay", 6.0)],
    }
    for name, node in nodes.items():
        services = ("rdp",) if name.startswith("host") else ()
        node.facts = facts(*((by_name[p], rtt) for p, rtt in peers[name]), services=services)
        await node.client.heartbeat(node.facts)
        if services:
            await node.client.register_service("rdp")
    assert ids  # every node enrolled and heartbeated once
    for name in ("laptop-1", "laptop-2"):
        # a fresh node's facts reach the other replica on its next tick (ADR 0019)
        deadline = time.monotonic() + 5.0
        while True:
            try:
                routes = await nodes[name].client.fetch_route_leases(
                    "rdp", TrafficClass.INTERACTIVE
                )
                break
            except ControlRefused:
                assert time.monotonic() < deadline, "no route within 5 s of set-up"
                await asyncio.sleep(0.1)
        assert routes and routes[0].lease.hops[1] == ids["relay"]
    return nodes


async def _stream(node: Node, period: float, stop: asyncio.Event) -> None:
    """Heartbeat (and for laptops: fetch fresh route leases) every ``period`` until ``stop``."""
    assert node.facts is not None
    while not stop.is_set():
        started = time.monotonic()
        for kind in ("heartbeat", "lease") if node.name.startswith("laptop") else ("heartbeat",):
            began = time.monotonic()
            try:
                if kind == "heartbeat":
                    await node.client.heartbeat(node.facts)
                else:
                    await node.client.fetch_route_leases("rdp", TrafficClass.INTERACTIVE)
            except ControlUnavailable as exc:
                node.outcomes.append(Outcome(time.monotonic(), kind, False, "", str(exc), began))
            except ControlRefused as exc:  # a wrong answer: no test may see one
                node.outcomes.append(
                    Outcome(time.monotonic(), kind, False, "", f"REFUSED {exc}", began)
                )
            else:
                node.outcomes.append(
                    Outcome(time.monotonic(), kind, True, node.client.base_url, "", began)
                )
        await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))


async def _close(nodes: dict[str, Node]) -> None:
    for node in nodes.values():
        await node.client.close()


@pytest.mark.slow
def test_sigkill_of_the_etcd_leader_leases_again_within_five_seconds(
    etcd_cluster: LocalEtcdCluster,
    tmp_path: Path,
    processes: list[subprocess.Popen[str]],  # noqa: F811
) -> None:
    restart_dead_members(etcd_cluster)
    replicas = start_replicas(etcd_cluster, tmp_path, processes)

    async def main() -> tuple[float, dict[str, Node]]:
        nodes = await _fleet(replicas, tmp_path)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_stream(node, 0.2, stop)) for node in nodes.values()]
        try:
            await asyncio.sleep(1.0)
            leader = etcd_cluster.leader()
            assert leader is not None
            killed_at = time.monotonic()
            await asyncio.to_thread(etcd_cluster.kill, leader)
            await asyncio.sleep(6.0)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await _close(nodes)
        return killed_at, nodes

    try:
        killed_at, nodes = asyncio.run(main())
    finally:
        restart_dead_members(etcd_cluster)
        revoke_all_leases(etcd_cluster.endpoints)
    outcomes = [o for node in nodes.values() for o in node.outcomes]
    refused = [o.error for o in outcomes if o.error.startswith("REFUSED")]
    assert not refused, refused
    leases_after = sorted(o.at for o in outcomes if o.kind == "lease" and o.ok and o.at > killed_at)
    assert leases_after, "no route lease issued after the etcd leader was killed"
    assert leases_after[0] - killed_at < 5.0
    # leases keep coming after the new leader settles, for both laptops
    for name in ("laptop-1", "laptop-2"):
        late = [o for o in nodes[name].outcomes if o.kind == "lease" and o.at > killed_at + 5.0]
        assert late and all(o.ok for o in late), [o.error for o in late if not o.ok]


@pytest.mark.slow
def test_sigkill_of_a_control_replica_moves_every_node_within_one_interval(
    etcd_cluster: LocalEtcdCluster,
    tmp_path: Path,
    processes: list[subprocess.Popen[str]],  # noqa: F811
) -> None:
    restart_dead_members(etcd_cluster)
    interval = 1.0
    replicas = start_replicas(etcd_cluster, tmp_path, processes, heartbeat_interval="1s")

    async def main() -> tuple[float, str, dict[str, Node]]:
        nodes = await _fleet(replicas, tmp_path)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_stream(node, interval, stop)) for node in nodes.values()]
        try:
            await asyncio.sleep(1.5)
            # kill the replica most nodes stick to
            counts = {url: 0 for url in replicas.urls}
            for node in nodes.values():
                counts[node.client.base_url] += 1
            victim_url = max(counts, key=lambda url: counts[url])
            victim = replicas.processes[replicas.urls.index(victim_url)]
            victim.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            victim.wait(timeout=10)
            await asyncio.sleep(3 * interval)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            for name in ("laptop-1", "laptop-2"):  # their routes are still usable
                routes = nodes[name].client.cached_route_leases("rdp", TrafficClass.INTERACTIVE)
                assert routes, f"{name} lost its routes"
            await _close(nodes)
        return killed_at, victim_url, nodes

    try:
        killed_at, victim_url, nodes = asyncio.run(main())
    finally:
        revoke_all_leases(etcd_cluster.endpoints)
    survivor = next(url for url in replicas.urls if url != victim_url)
    for node in nodes.values():
        after = [o for o in node.outcomes if o.kind == "heartbeat" and o.began > killed_at]
        assert after, node.name
        assert all(o.ok for o in after), [o.error for o in after if not o.ok]
        assert after[0].url == survivor
        in_flight = [o for o in node.outcomes if o.at > killed_at]  # also those begun before
        assert all(o.ok for o in in_flight), [o.error for o in in_flight if not o.ok]
        # the node's first heartbeat after the kill starts within one interval (its
        # schedule; 0.2 s for the loaded loop) and goes through the survivor at once
        assert after[0].began - killed_at < interval + 0.2, (node.name, after[0].began)
        status = node.client.status()
        states = {r["url"]: r["state"] for r in status.replicas}
        if any(o.url == victim_url for o in node.outcomes):  # it had been talking to it
            assert states[survivor] == "ok"


@pytest.mark.slow
def test_leader_follower_failover_on_etcd_elects_exactly_one_new_leader(
    etcd_cluster: LocalEtcdCluster,
    tmp_path: Path,
    processes: list[subprocess.Popen[str]],  # noqa: F811
) -> None:
    restart_dead_members(etcd_cluster)
    ttl = 2.0
    replicas = start_replicas(
        etcd_cluster, tmp_path, processes, heartbeat_interval="0.5s", replica_ttl="2s"
    )
    store = EtcdStore(etcd_cluster.endpoints, namespace=replicas.namespace)
    env = _env(
        ACCESSFABRIC_CONTROL_URL=",".join(replicas.urls),
        ACCESSFABRIC_ADMIN_TOKEN=replicas.admin_token,
    )
    try:
        agents: dict[str, subprocess.Popen[str]] = {}

        async def tokens() -> list[str]:
            async with aiohttp.ClientSession() as http:
                return [await _token(http, replicas, ["service-host"]) for _ in range(2)]

        for name, token in zip(("host-a", "host-b"), asyncio.run(tokens()), strict=True):
            key = NodeKey.generate()
            key.save(tmp_path / f"{name}.key")
            agent = _start(
                "agent", "--key", str(tmp_path / f"{name}.key"),
                "--authority", replicas.authority_text,
                "--state", str(tmp_path / f"{name}.state"), "--token", token,
                "--service", "rdp", "--service-mode", "leader-follower", env=env,
            )  # fmt: skip
            processes.append(agent)
            agents[name] = agent
            _line(agent, r"^serving rdp")
            if name == "host-a":
                deadline = time.monotonic() + 10
                while store.get("/services/rdp/leader") is None:
                    assert time.monotonic() < deadline, "no first leader"
                    time.sleep(0.05)
        old = store.get("/services/rdp/leader")
        assert old is not None and key.node_id not in old.value.decode()  # host-a leads
        agents["host-a"].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        agents["host-a"].wait(timeout=10)
        while True:
            current = store.get("/services/rdp/leader")
            if current is not None and current.mod_revision != old.mod_revision:
                break
            assert time.monotonic() - killed_at < 15, "no new leader"
            time.sleep(0.02)
        took = time.monotonic() - killed_at
        assert key.node_id in current.value.decode()  # host-b
        assert current.mod_revision > old.mod_revision
        assert took < ttl + 1.0 + 1.0, f"failover took {took:.2f} s with a {ttl} s TTL"
        time.sleep(1.0)  # both replicas keep reconciling: no second election follows
        puts = [
            c
            for c in store.changes(old.mod_revision, "/services/rdp/leader")
            if c.kind.name == "PUT"
        ]
        assert len(puts) == 1, puts
        assert len({c.revision for c in puts}) == len(puts)
    finally:
        store.close()
        revoke_all_leases(etcd_cluster.endpoints)


def _nft(*script: str) -> None:
    subprocess.run(["nft", *script], check=True, capture_output=True)


@pytest.mark.slow
def test_replica_partitioned_from_etcd_answers_503_then_recovers(
    etcd_cluster: LocalEtcdCluster,
    tmp_path: Path,
    processes: list[subprocess.Popen[str]],  # noqa: F811
) -> None:
    """nftables drops the partitioned replica's packets to its only etcd member's client
    port; the cluster and the other replica (given the other two members) are untouched."""
    restart_dead_members(etcd_cluster)
    cut, *others = etcd_cluster.members
    replicas = start_replicas(
        etcd_cluster, tmp_path, processes,
        members_per_replica=[[m.endpoint for m in others], [cut.endpoint]],
    )  # fmt: skip
    healthy_url, partitioned_url = replicas.urls
    table = f"af_etcd_{time.monotonic_ns() % 10**8}"

    async def main() -> None:
        key = NodeKey.generate()
        async with aiohttp.ClientSession() as http:
            token = await _token(http, replicas, ["relay"])
            healthy = ControlClient(healthy_url, key, replicas.authority_key, str(tmp_path / "h"))
            partitioned = ControlClient(
                partitioned_url, key, replicas.authority_key, str(tmp_path / "p")
            )
            try:
                await healthy.enroll(token)
                partitioned.cache.write(healthy.cache.read("record.json") or {}, "record.json")
                deadline = time.monotonic() + 5
                while True:  # the enrollment reaches the other replica through its watch
                    try:
                        await partitioned.heartbeat(facts())
                        break
                    except ControlRefused:
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.05)
                _nft("add", "table", "inet", table)
                try:
                    _nft("add chain inet", table, "out { type filter hook output priority 0 ; }")
                    _nft("add rule inet", table, f"out tcp dport {cut.client_port} drop")
                    cut_at = time.monotonic()
                    while True:
                        try:
                            await partitioned.heartbeat(facts())
                        except ControlUnavailable as exc:
                            assert "503" in str(exc) and "store" in str(exc), exc
                            break
                        assert time.monotonic() - cut_at < 10, "no 503 within 10 s"
                        await asyncio.sleep(0.1)
                    fresh = NodeKey.generate()
                    newcomer = ControlClient(
                        partitioned_url, fresh, replicas.authority_key, str(tmp_path / "n")
                    )
                    with pytest.raises(ControlUnavailable, match="503"):  # issues nothing
                        await newcomer.enroll(await _token(http, replicas, ["relay"]))
                    await newcomer.close()
                    await healthy.heartbeat(facts())  # the other replica serves on
                    # requests that reach for etcd fail at once; the replica's own quorum
                    # probe (2 failed reads) then says so in /v1/status too
                    while True:
                        async with http.get(partitioned_url + "/v1/status") as response:
                            store = (await response.json())["store"]
                        if not store["available"]:
                            break
                        assert time.monotonic() - cut_at < 15, "status never said lost"
                        await asyncio.sleep(0.2)
                    assert "lost its store" in store["reason"]
                finally:
                    subprocess.run(["nft", "delete", "table", "inet", table], check=False)
                healed_at = time.monotonic()
                while True:
                    try:
                        await partitioned.heartbeat(facts())
                        break
                    except ControlUnavailable:
                        assert time.monotonic() - healed_at < 20, "not serving after healing"
                        await asyncio.sleep(0.2)
                newcomer = ControlClient(
                    partitioned_url, fresh, replicas.authority_key, str(tmp_path / "n2")
                )
                await newcomer.enroll(await _token(http, replicas, ["relay"]))
                await newcomer.close()
            finally:
                await healthy.close()
                await partitioned.close()

    try:
        asyncio.run(main())
    finally:
        revoke_all_leases(etcd_cluster.endpoints)
