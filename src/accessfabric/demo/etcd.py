"""``accessfabric demo --control etcd``: three etcd members, two control replicas, faults.

The fleet and traffic are those of the SQLite demo; the control plane is two ``control
serve --store etcd://…`` replicas over a 3-member etcd cluster on loopback, and every node
lists both replicas (``[control] urls``).  While traffic flows the etcd leader and then the
replica most nodes use are SIGKILLed; the demo then shows that every node heartbeats
through the surviving replica and that it still issues route leases.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import time
from pathlib import Path

import aiohttp

from accessfabric.control.server.store.etcd_cluster import LocalEtcdCluster, etcd_binary
from accessfabric.demo.control import HEARTBEAT_POLICY, Control, run_cli
from accessfabric.demo.procs import COMMAND, DemoFailed, Processes, free_port

REPLICAS = ("control", "control-2")
KILLED_BY_TRAFFIC = frozenset({"relay-a"})
"""Nodes the traffic part SIGKILLs: they stop heartbeating anywhere."""
ETCD_KILL_AT = 0.5
REPLICA_KILL_AT = 0.6


def etcd_missing() -> str | None:
    """Why the etcd demo cannot run here, or ``None``."""
    if etcd_binary() is None:
        return "etcd is not installed; install it with: apt-get install etcd-server etcd-client"
    return None


async def start_control_etcd(work: Path, procs: Processes) -> tuple[Control, LocalEtcdCluster]:
    cluster = LocalEtcdCluster(work / "etcd", size=3)
    await asyncio.to_thread(cluster.start)
    leader = cluster.leader()
    print(
        f"    etcd: 3 members {', '.join(cluster.endpoints)} "
        f"(leader {leader.name if leader else '?'})"
    )
    store = cluster.store_url + "/demo"
    first = work / "control"
    init = await asyncio.to_thread(
        run_cli, "control", "init", "--data", str(first), "--store", store
    )
    admin = re.search(r"afadm1_[a-z0-9_]+", init)
    authority = re.search(r"afauth1[a-z2-7]+", init)
    assert admin and authority, init
    urls = []
    for index, name in enumerate(REPLICAS):
        data = work / name
        if index:  # each replica gets a copy of the authority key
            data.mkdir(mode=0o700)
            shutil.copy2(first / "authority.key", data / "authority.key")
        port = free_port()
        procs.start(
            name, [*COMMAND, "control", "serve", "--data", str(data), "--store", store,
                   "--listen", f"127.0.0.1:{port}", "--heartbeat-interval", HEARTBEAT_POLICY],
        )  # fmt: skip
        urls.append(f"https://127.0.0.1:{port}")  # TLS, pinned through the authority key
    deadline = time.monotonic() + 20
    for name in REPLICAS:
        while "serving on" not in procs.log(name):
            if time.monotonic() > deadline or procs.children[name].poll() is not None:
                raise DemoFailed(f"control replica {name} did not start:\n" + procs.tail(name))
            await asyncio.sleep(0.1)
    print(f"    control replicas {' and '.join(urls)}  store {store}")
    return Control(urls[0], admin.group(), authority.group(), urls), cluster


async def faults_midway(
    control: Control,
    cluster: LocalEtcdCluster,
    procs: Processes,
    started: float,
    duration: float,
    events: list[str],
) -> None:
    """Kill the etcd leader, then control replica 1, while the traffic runs."""
    await asyncio.sleep(max(0.0, started + duration * ETCD_KILL_AT - time.monotonic()))
    leader = await asyncio.to_thread(cluster.leader)
    if leader is not None:
        await asyncio.to_thread(cluster.kill, leader)
        events.append(f"{time.monotonic() - started:5.1f} s  SIGKILL etcd leader {leader.name}")
        print(f"    ** {events[-1]}")
    await asyncio.sleep(max(0.0, started + duration * REPLICA_KILL_AT - time.monotonic()))
    proc = procs.children.get(REPLICAS[0])
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        events.append(
            f"{time.monotonic() - started:5.1f} s  SIGKILL control replica {control.urls[0]}"
        )
        print(f"    ** {events[-1]}")


async def report_after_faults(control: Control, names: dict[str, str]) -> list[str]:
    """What the surviving replica says: every node's last heartbeat age (problems listed)."""
    survivor = control.urls[1]
    headers = {"Authorization": f"Bearer {control.admin_token}"}
    problems: list[str] = []
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client,
        client.get(f"{survivor}/v1/admin/nodes", headers=headers, ssl=control.pin) as response,
    ):
        if response.status != 200:
            return [f"surviving replica answered {response.status}"]
        nodes = (await response.json())["nodes"]
    print(f"\n    surviving replica {survivor} (`control nodes`):")
    for node in nodes:
        age = node["last_heartbeat_age_s"]
        label = names.get(node["node_id"], node["node_id"][:16])
        print(f"      {label:8} {node['health']:11} last heartbeat {age} s ago")
        if label in KILLED_BY_TRAFFIC:
            continue
        if age is None or age > 3.0:
            problems.append(f"{label} has not heartbeated through the surviving replica")
    return problems
