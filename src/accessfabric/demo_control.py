"""Demo step 1: a control plane on loopback and five enrolled nodes with measured links."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from accessfabric.control.authority_key import parse_authority_key
from accessfabric.control.client import ControlClient
from accessfabric.control.facts import HeartbeatFacts, PeerMeasurement, ServiceCapacity
from accessfabric.demo_procs import COMMAND, Processes, env, free_port
from accessfabric.identity.keys import NodeKey
from accessfabric.wire.registry import TrafficClass

NODES = {
    "laptop": "mobile-edge",
    "entry": "entry",
    "relay-a": "relay",
    "relay-b": "relay",
    "home": "service-host,exit",
}
LINKS = {  # measured RTTs (ms) the nodes report in their heartbeats
    ("laptop", "entry"): 12.0,
    ("entry", "relay-a"): 4.0,
    ("entry", "relay-b"): 7.0,
    ("relay-a", "home"): 5.0,
    ("relay-b", "home"): 6.0,
}
SERVICE = "web"
RELAYED = (("sealed-sink", TrafficClass.BULK), ("echo", TrafficClass.INTERACTIVE))
"""What step 3 sends through the relays: a sealed bulk stream and an interactive echo."""


@dataclass
class Control:
    url: str
    admin_token: str
    authority: str


@dataclass
class Fleet:
    keys: dict[str, NodeKey] = field(default_factory=dict)
    seeds: dict[str, bytes] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    leases: list[bytes] = field(default_factory=list)
    """Laptop's route leases (signed blobs) for :data:`RELAYED`, primary first."""
    authority_key: bytes = b""

    def name_of(self, node_id: str) -> str:
        return next((n for n, k in self.keys.items() if k.node_id == node_id), node_id[:12])


def _cli(*args: str) -> str:
    done = subprocess.run([*COMMAND, *args], capture_output=True, text=True, env=env(), timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"accessfabric {' '.join(args[:3])}: {done.stderr.strip()}")
    return done.stdout


async def start_control(work: Path, procs: Processes) -> Control:
    data = work / "control"
    init = await asyncio.to_thread(_cli, "control", "init", "--data", str(data))
    admin = re.search(r"afadm1_[a-z0-9_]+", init)
    authority = re.search(r"afauth1[a-z2-7]+", init)
    assert admin and authority, init
    port = free_port()
    procs.start(
        "control", [*COMMAND, "control", "serve", "--data", str(data), "--listen",
                    f"127.0.0.1:{port}"],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while "serving on" not in procs.log("control"):
        if time.monotonic() > deadline or procs.children["control"].poll() is not None:
            raise RuntimeError("control plane did not start:\n" + procs.log("control"))
        await asyncio.sleep(0.1)
    print(f"    control plane {url}  store {data}/  authority {authority.group()[:20]}…")
    return Control(url, admin.group(), authority.group())


async def enroll_fleet(control: Control, work: Path) -> Fleet:
    fleet = Fleet()
    tokens: dict[str, str] = {}
    for roles in sorted(set(NODES.values())):
        tokens[roles] = (
            await asyncio.to_thread(
                _cli,
                "control",
                "token",
                "create",
                "--tenant",
                "demo",
                "--roles",
                roles,
                "--ttl",
                "1h",
                "--uses",
                "5",
                "--server",
                control.url,
                "--admin-token",
                control.admin_token,
            )
        ).strip()
    authority = parse_authority_key(control.authority)
    clients: dict[str, ControlClient] = {}
    try:
        for name, roles in NODES.items():
            seed = os.urandom(32)
            key = NodeKey.from_seed(seed)
            fleet.seeds[name] = seed
            path = work / f"{name}.key"
            key.save(path)
            fleet.keys[name], fleet.paths[name] = key, path
            client = ControlClient(control.url, key, authority, str(work / f"{name}.state"))
            clients[name] = client
            record = await client.enroll(tokens[roles])
            print(f"    enrolled {name:8} {record.node_id[:16]}…  roles {roles}")
        for service in (SERVICE, *(name for name, _ in RELAYED)):
            await clients["home"].register_service(service, "active-active")
        for name, client in clients.items():
            await client.heartbeat(_facts(name, fleet))
        print(f"    home serves {SERVICE!r}; every node heartbeated its measured links")
        try:
            routes = await clients["laptop"].route_leases(SERVICE, TrafficClass.BULK)
        except Exception as error:  # the planner's reason, shown as is
            print(f"    no route lease for laptop -> {SERVICE}: {error}")
        else:
            for route in routes:
                hops = " -> ".join(fleet.name_of(h) for h in route.lease.hops)
                print(f"    route lease ({route.rank or 'route'}): {hops}")
        fleet.authority_key = authority
        for service, traffic_class in RELAYED:
            try:
                usable = await clients["laptop"].route_leases(service, traffic_class)
            except Exception as error:
                print(f"    no route lease for laptop -> {service}: {error}")
                continue
            fleet.leases.extend(route.blob for route in usable)
    finally:
        for client in clients.values():
            await client.close()
    return fleet


def _facts(name: str, fleet: Fleet) -> HeartbeatFacts:
    peers = []
    for (a, b), rtt in LINKS.items():
        other = b if a == name else a if b == name else None
        if other is not None:
            peers.append(PeerMeasurement(node_id=fleet.keys[other].node_id, rtt_ms=rtt))
    relay = NODES[name] in ("relay", "entry")
    return HeartbeatFacts(
        software_version="accessfabric-demo",
        transports=("tcp_tls",),
        reachable=name != "laptop",
        peers=tuple(peers),
        relay_opt_in=relay,
        relay_max_mbps=1000.0 if relay else 0.0,
        failure_domain=name,
        services=(ServiceCapacity(name=SERVICE, capacity=100),) if name == "home" else (),
    )
