"""Control API figures: signed route leases issued per second and heartbeats ingested per
second on one replica (SQLite), each beside a baseline measured in the same run.

* **Leases/s.** A fleet of ``sources`` laptops, 4 relays in 4 failure domains and 2 service
  hosts, all heartbeating; then :meth:`RouteLeasing.issue` round-robin over the laptops
  (plan with the route planner, epochs and fencing token from the store, one signed lease
  per route: primary + 2 alternates).  Baseline: raw Ed25519 signatures per second over a
  lease-sized body.
* **Heartbeats/s.** What the server does per heartbeat after HTTP parsing: check the
  timestamp window, the ``AF-MAC`` tag (HMAC-SHA256 with the node's session key, derived
  by X25519 + HKDF the first time each node is seen in the run) and the replay cache
  (:meth:`ControlPlane.authenticate_mac`, as ``api/auth.py`` does); parse and bound the
  facts; update
  the heartbeat table and health; write-behind persistence (:meth:`ControlPlane.tick`
  every 0.5 s of the run).  ``nodes`` nodes send ``rounds`` heartbeats each, 64 in flight.
  Baseline: raw ``SqliteStore.put`` of the same JSON per second.  A note gives the
  same heartbeats Ed25519-signed (verification batched onto a 2-thread pool, as the
  server does for nodes without a session key) on a fresh replica.
* The HTTP figure (heartbeats over loopback with an aiohttp client in the same process)
  is a note: on a 2-vCPU machine the client competes with the server for the CPU.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

from accessfabric.bench.report import BenchResult
from accessfabric.control.client.facts import (
    HeartbeatFacts,
    PeerMeasurement,
    ServiceCapacity,
    parse_facts,
)
from accessfabric.control.client.heartbeat_mac import ControlMacKey, node_session_key
from accessfabric.control.client.requestsig import (
    ReplayCache,
    RequestSigner,
    SignedRequest,
    parse_timestamp,
)
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.vocabulary import Role, ServiceMode
from accessfabric.control.server.api.verifier import BatchVerifier
from accessfabric.control.server.plane import ControlPlane
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass

LEASE_TARGET = 2_000.0
HEARTBEAT_TARGET = 5_000.0


def _enroll(plane: ControlPlane, key: NodeKey, roles: list[str]) -> None:
    token = plane.registry.tokens.create("acme", roles, 3600).token
    plane.registry.enroll(token, key.public_key_bytes, key.sealing_public_key_bytes)


def _facts(
    peers: list[tuple[NodeKey, float]], domain: str = "", service: str = ""
) -> HeartbeatFacts:
    return HeartbeatFacts(
        software_version="bench",
        transports=("tcp_tls", "quic"),
        peers=tuple(PeerMeasurement(node_id=k.node_id, rtt_ms=rtt) for k, rtt in peers),
        services=(ServiceCapacity(name=service, capacity=100),) if service else (),
        region="eu",
        failure_domain=domain,
        cpu=0.2,
        memory=0.3,
    )


def _lease_figures(directory: Path, quick: bool) -> tuple[BenchResult, dict[str, str]]:
    sources = 100 if quick else 400
    seconds = 1.5 if quick else 4.0
    store = SqliteStore(directory / "leases.db")
    authority = Authority(NodeKey.generate())
    plane = ControlPlane(store, authority)
    relays = [NodeKey.generate() for _ in range(4)]
    hosts = [NodeKey.generate() for _ in range(2)]
    laptops = [NodeKey.generate() for _ in range(sources)]
    for key in relays:
        _enroll(plane, key, ["entry", "relay"])
    for key in hosts:
        _enroll(plane, key, ["service-host"])
        roles = frozenset({Role.SERVICE_HOST})
        plane.services.register("rdp", key.node_id, roles, "acme", ServiceMode.ACTIVE_ACTIVE)
    for index, key in enumerate(relays):
        plane.heartbeats.record(
            key.node_id, _facts([(h, 2.0 + index) for h in hosts], domain=f"dc-{index}")
        )
    for key in hosts:
        plane.heartbeats.record(key.node_id, _facts([], service="rdp"))
    for index, key in enumerate(laptops):
        peers = [(r, 5.0 + ((index + i) % 4) * 3) for i, r in enumerate(relays)]
        _enroll(plane, key, ["mobile-edge"])
        plane.heartbeats.record(key.node_id, _facts(peers))
    nodes = [node for k in laptops if (node := plane.registry.get(k.node_id)) is not None]
    issued = requests = 0
    plane.leasing.issue(nodes[0], "rdp", TrafficClass.INTERACTIVE)
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for node in nodes[:50]:
            grant = plane.leasing.issue(node, "rdp", TrafficClass.INTERACTIVE)
            issued += len(grant.routes)
            requests += 1
        nodes = nodes[50:] + nodes[:50]
    elapsed = time.perf_counter() - started
    leases_per_s = issued / elapsed
    # baseline: raw Ed25519 signatures over a lease-sized message
    key = NodeKey.generate()
    message = bytes(300)
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds / 2:
        for _ in range(200):
            key.sign(message)
        count += 200
    signs_per_s = count / (time.perf_counter() - started)
    store.close()
    result = BenchResult(
        metric="route leases issued/s (1 replica)",
        value=round(leases_per_s, 1),
        unit="leases/s",
        baseline_metric="raw Ed25519 signs/s",
        baseline_value=round(signs_per_s, 1),
    )
    notes = {
        "route leases": f"{requests:,} requests from {sources} sources, "
        f"{issued / max(1, requests):.2f} leases each (primary + alternates), "
        f"{requests / elapsed:,.0f} requests/s; target >= {LEASE_TARGET:,.0f} leases/s: "
        f"{'met' if leases_per_s >= LEASE_TARGET else 'NOT met'}"
    }
    return result, notes


async def _ingest_run(plane: ControlPlane, requests: list[tuple[SignedRequest, bytes]]) -> float:
    verifier = BatchVerifier(2)
    replay = ReplayCache(30.0)
    queue = iter(requests)
    last_tick = time.perf_counter()

    async def worker() -> None:
        nonlocal last_tick
        for parts, public_key in queue:
            node = plane.registry.get(parts.node_id)
            assert node is not None
            if parts.mac:  # what api/auth.py does for AF-MAC: on the loop, no thread hop
                plane.authenticate_mac(node, parts)
            else:
                now = time.time()
                timestamp_ms = parse_timestamp(parts.timestamp, now, 30.0)
                signature = await verifier.verify(public_key, parts, timestamp_ms)
                replay.check_and_add(signature, now)
            plane.ingest_heartbeat(node, parse_facts(json.loads(parts.body)))
            if time.perf_counter() - last_tick >= 0.5:
                last_tick = time.perf_counter()
                plane.tick()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(64)))
    plane.tick()
    elapsed = time.perf_counter() - started
    verifier.close()
    return elapsed


def _heartbeat_requests(
    plane: ControlPlane, keys: list[NodeKey], rounds: int, mac: bool
) -> list[tuple[SignedRequest, bytes]]:
    """``rounds`` heartbeats per node, authenticated with AF-MAC (``mac``) or Ed25519."""
    control = ControlMacKey.from_json(plane.mac_keys.statement_json, plane.authority.public_key)
    requests: list[tuple[SignedRequest, bytes]] = []
    signers = {k.node_id: RequestSigner(k) for k in keys}
    session: dict[str, tuple[int, bytes]] = {}
    for key in keys:
        node = plane.registry.get(key.node_id)
        assert node is not None
        revision = node.record.revision
        derived = node_session_key(key.sealing_private_key(), key.node_id, revision, control)
        session[key.node_id] = (revision, derived)
    for round_ in range(rounds):
        for index, key in enumerate(keys):
            peers = [(keys[(index + j) % len(keys)], 5.0 + j + round_) for j in range(1, 9)]
            body = json.dumps(_facts(peers, domain=f"dc-{index % 4}").to_json()).encode()
            signer = signers[key.node_id]
            if mac:
                revision, derived = session[key.node_id]
                headers = signer.mac_headers("POST", "/v1/heartbeat", body, derived, revision)
            else:
                headers = signer.headers("POST", "/v1/heartbeat", body)
            parts = SignedRequest(
                method="POST",
                path="/v1/heartbeat",
                body=body,
                node_id=key.node_id,
                timestamp=headers["AF-Timestamp"],
                signature=headers.get("AF-Signature", ""),
                mac=headers.get("AF-MAC", ""),
            )
            requests.append((parts, key.public_key_bytes))
    return requests


def _ingest_rate(directory: Path, name: str, count_nodes: int, rounds: int, mac: bool) -> float:
    """Heartbeats/s of a fresh replica (its own store and authority) over one request set."""
    store = SqliteStore(directory / f"{name}.db")
    plane = ControlPlane(store, Authority(NodeKey.generate()))
    keys = [NodeKey.generate() for _ in range(count_nodes)]
    for key in keys:
        _enroll(plane, key, ["relay"])
    requests = _heartbeat_requests(plane, keys, rounds, mac)
    elapsed = asyncio.run(_ingest_run(plane, requests))
    store.close()
    return len(requests) / elapsed


def _heartbeat_figures(directory: Path, quick: bool) -> tuple[BenchResult, dict[str, str]]:
    count_nodes = 500 if quick else 2_000
    rounds = 4 if quick else 5
    store = SqliteStore(directory / "heartbeats.db")
    plane = ControlPlane(store, Authority(NodeKey.generate()))
    keys = [NodeKey.generate() for _ in range(count_nodes)]
    for key in keys:
        _enroll(plane, key, ["relay"])
    requests = _heartbeat_requests(plane, keys, rounds, mac=True)
    elapsed = asyncio.run(_ingest_run(plane, requests))
    per_s = len(requests) / elapsed
    persisted = len(store.range("/heartbeats/").entries)
    ed25519_per_s = _ingest_rate(directory, "heartbeats-ed25519", count_nodes, rounds, mac=False)
    # baseline: raw SQLite puts of the same JSON documents
    sample = requests[0][0].body
    started = time.perf_counter()
    puts = 0
    while time.perf_counter() - started < (1.0 if quick else 2.0):
        for i in range(100):
            store.put(f"/bench/{i}", sample)
        puts += 100
    puts_per_s = puts / (time.perf_counter() - started)
    store.close()
    result = BenchResult(
        metric="heartbeats ingested/s (1 replica)",
        value=round(per_s, 1),
        unit="beats/s",
        baseline_metric="raw SQLite puts/s",
        baseline_value=round(puts_per_s, 1),
    )
    notes = {
        "heartbeats": f"{len(requests):,} AF-MAC heartbeats ({len(sample)} B, 8 peers each) "
        f"from {count_nodes:,} nodes, window + HMAC (session key derived once per node, "
        f"in the run) + replay + facts + health + write-behind ({persisted:,} persisted); "
        f"target >= {HEARTBEAT_TARGET:,.0f}/s: "
        f"{'met' if per_s >= HEARTBEAT_TARGET else 'NOT met'}",
        "heartbeats, Ed25519-signed": f"{ed25519_per_s:,.0f}/s (the same heartbeats with "
        "AF-Signature, verified on 2 threads: the path before AF-MAC, and still the path of "
        "a node without a session key)",
    }
    return result, notes


async def _http_heartbeats(directory: Path, quick: bool) -> float:
    import aiohttp

    from accessfabric.control.server.server import ControlServer

    store = SqliteStore(directory / "http.db")
    plane = ControlPlane(store, Authority(NodeKey.generate()))
    keys = [NodeKey.generate() for _ in range(100)]
    for key in keys:
        _enroll(plane, key, ["relay"])
    server = ControlServer(plane, "127.0.0.1", 0)
    await server.start()
    total = 1_000 if quick else 4_000
    bodies = {k.node_id: json.dumps(_facts([]).to_json()).encode() for k in keys}
    signers = {k.node_id: RequestSigner(k) for k in keys}
    sent = 0
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(key: NodeKey) -> None:
            body = bodies[key.node_id]
            headers = signers[key.node_id].headers("POST", "/v1/heartbeat", body)
            async with http.post(server.url + "/v1/heartbeat", data=body, headers=headers) as r:
                await r.read()
                assert r.status == 200

        started = time.perf_counter()
        while sent < total:
            await asyncio.gather(*(one(keys[(sent + i) % len(keys)]) for i in range(32)))
            sent += 32
        elapsed = time.perf_counter() - started
    await server.stop()
    store.close()
    return sent / elapsed


def run_control_figures(quick: bool) -> list[BenchResult]:
    """The control API rows of ``accessfabric bench control`` (notes: see :data:`LAST_NOTES`)."""
    LAST_NOTES.clear()
    with tempfile.TemporaryDirectory(prefix="af-bench-control-") as tmp:
        directory = Path(tmp)
        leases, lease_notes = _lease_figures(directory, quick)
        beats, beat_notes = _heartbeat_figures(directory, quick)
        http_rate = asyncio.run(_http_heartbeats(directory, quick))
    LAST_NOTES.update(lease_notes)
    LAST_NOTES.update(beat_notes)
    LAST_NOTES["heartbeats over HTTP"] = (
        f"{http_rate:,.0f}/s over loopback with the aiohttp client in the same process "
        "(client and server share the CPUs)"
    )
    return [leases, beats]


LAST_NOTES: dict[str, str] = {}
"""Notes of the last :func:`run_control_figures` run, for the suite's report."""


if __name__ == "__main__":
    for row in run_control_figures(quick=True):
        print(row)
    for name, note in LAST_NOTES.items():
        print(f"{name}: {note}")
