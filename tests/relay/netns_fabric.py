"""phone, entry, relaya, relayb, home in network namespaces, each a ``relay_peer`` process.

Routes: 1 = phone -> entry -> relaya -> home (primary), 2 = phone -> entry -> relayb -> home.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from accessfabric.bench.relay_lab import SEALED_SINK, issue_route
from accessfabric.carriers.tcp_timers import DEFAULT_RTO_MIN
from accessfabric.control.kernel.authority import Authority
from accessfabric.identity.keys import NodeKey
from accessfabric.sim import Topology

PORT = 7443
HOSTS = ("phone", "entry", "relaya", "relayb", "home")
LINKS = (("phone", "entry"), ("entry", "relaya"), ("entry", "relayb"),
         ("relaya", "home"), ("relayb", "home"))  # fmt: skip
PEERS = {"phone": ["entry"], "entry": ["relaya", "relayb"], "relaya": ["home"],
         "relayb": ["home"]}  # fmt: skip


class Proc:
    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                continue
        self.lines.put(None)

    def next(self, timeout: float) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise AssertionError("node process exited")
        return line

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.01, deadline - time.monotonic()))
            if line.get("event") == event:
                return line
            if line.get("event") == "error":
                raise AssertionError(line)

    def kill(self) -> float:
        """SIGKILL the node (its whole process group); the kill time (monotonic)."""
        at = time.monotonic()
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(5)
        return at


class NetnsFabric:
    def __init__(self, topo: Topology, workdir: Path, *, emulated: dict[str, Any] | None = None,
                 route_ttl: float = 3600.0,
                 tcp_rto_min: float | None = DEFAULT_RTO_MIN) -> None:  # fmt: skip
        self.topo = topo
        self.tcp_rto_min = tcp_rto_min
        self.workdir = workdir
        self.authority = Authority(NodeKey.generate())
        self.keys = {host: secrets.token_bytes(32) for host in HOSTS}
        self.ids = {host: NodeKey.from_seed(seed).node_id for host, seed in self.keys.items()}
        for host in HOSTS:
            topo.add_host(host)
        for a, b in LINKS:
            if emulated is not None and (a, b) == ("phone", "entry"):
                topo.emulated_link(a, b, **emulated)
            else:
                topo.link(a, b)
        self.procs: dict[str, Proc] = {}
        ids = self.ids
        # Issued once: every spec carries the same leases (and the same expiry).
        self.routes = [
            issue_route(
                self.authority, 1, [ids["phone"], ids["entry"], ids["relaya"], ids["home"]],
                ttl=route_ttl,
            ),
            issue_route(
                self.authority, 2, [ids["phone"], ids["entry"], ids["relayb"], ids["home"]],
                ttl=route_ttl,
            ),
        ]  # fmt: skip

    def spec(self, host: str, workloads: list[dict[str, Any]] | None = None) -> Path:
        peers = [
            {"node_id": self.ids[p], "url": f"tcp://{self.topo.host_addr(p, host)}:{PORT}"}
            for p in PEERS.get(host, [])
        ]
        sealing = {
            self.ids[h]: NodeKey.from_seed(s).sealing_public_key_bytes.hex()
            for h, s in self.keys.items()
        }
        ids = self.ids
        routes = self.routes
        spec = {
            "name": host,
            "seed": self.keys[host].hex(),
            "listen": [f"tcp://0.0.0.0:{PORT}"],
            "peers": peers,
            "authority_key": self.authority.public_key.hex(),
            "sealing_keys": sealing,
            "destination": ids["home"],
            "routes": [r.blob.hex() for r in routes] if host == "phone" else [],
            # default deny: home serves the phone (only)
            "allow": {service: [ids["phone"]] for service in ("echo", SEALED_SINK)},
            "workloads": workloads or [],
            "workdir": str(self.workdir),
            "tcp_rto_min": self.tcp_rto_min,
        }
        path = self.workdir / f"{host}.json"
        path.write_text(json.dumps(spec))
        return path

    def start(self, host: str, workloads: list[dict[str, Any]] | None = None) -> Proc:
        path = self.spec(host, workloads)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.workdir / f"{host}.log", "ab") as log:
            popen = self.topo.popen(
                host, [sys.executable, "-m", "accessfabric.bench.relay_peer", str(path)],
                stdout=subprocess.PIPE, stderr=log, env=env,
            )  # fmt: skip
        proc = Proc(popen)
        proc.wait_event("ready", 20)
        self.procs[host] = proc
        return proc

    def start_infrastructure(self) -> None:
        for host in ("home", "relaya", "relayb", "entry"):
            self.start(host)


def recovery_times(samples: list[list[float]], kills: list[float]) -> list[float]:
    """For each kill: time from the kill to the first ping answered after it."""
    done = sorted(sent + rtt for sent, rtt in samples)
    out = []
    for kill in kills:
        after = [t for t in done if t > kill]
        out.append(after[0] - kill if after else float("inf"))
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
