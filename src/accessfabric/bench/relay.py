"""``bench relay``: sealed bulk throughput direct, through one relay and through two, in the
same run (every node its own process on loopback), and failover recovery times.

The baseline of each relayed figure is the direct figure of the same run: the target is
one relay >= 70 % of direct.  Recovery: an interactive stream pings every 20 ms through
relay A (alternate: relay B); relay A is SIGKILLed; the time from the kill to the first
answered ping after it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from accessfabric.bench.relay_lab import issue_route
from accessfabric.bench.report import BenchReport, BenchResult
from accessfabric.control.authority import Authority
from accessfabric.identity.keys import NodeKey

MiB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Lab:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.authority = Authority(NodeKey.generate())
        self.seeds = {name: secrets.token_bytes(32) for name in ("src", "r1", "r2", "dst")}
        self.ids = {name: NodeKey.from_seed(seed).node_id for name, seed in self.seeds.items()}
        self.ports = {name: _free_port() for name in self.seeds}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, name: str) -> str:
        return f"tcp://127.0.0.1:{self.ports[name]}"

    def spec(self, name: str, peers: list[str], routes: list[list[str]],
             workloads: list[dict[str, Any]]) -> Path:  # fmt: skip
        sealing = {
            self.ids[n]: NodeKey.from_seed(s).sealing_public_key_bytes.hex()
            for n, s in self.seeds.items()
        }
        blobs = [
            issue_route(self.authority, index, [self.ids[h] for h in hops]).blob.hex()
            for index, hops in enumerate(routes, start=1)
        ]
        spec = {
            "name": name,
            "seed": self.seeds[name].hex(),
            "listen": [self.url(name)],
            "peers": [{"node_id": self.ids[p], "url": self.url(p)} for p in peers],
            "authority_key": self.authority.public_key.hex(),
            "sealing_keys": sealing,
            "destination": self.ids["dst"],
            "routes": blobs,
            "workloads": workloads,
            "workdir": str(self.workdir),
            "keepalive": 1.0,
            "ping_timeout": 2.0,
        }
        path = self.workdir / f"{name}-{secrets.token_hex(3)}.json"
        path.write_text(json.dumps(spec))
        return path

    def start(self, name: str, path: Path) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "accessfabric.bench.relay_peer", str(path)],
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        self.procs[name] = proc
        assert proc.stdout is not None
        _wait(proc.stdout, "ready", 20)
        return proc

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _wait(stream: IO[bytes], event: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = stream.readline()
        if not raw:
            raise RuntimeError(f"node exited before {event!r}")
        line: dict[str, Any] = json.loads(raw)
        if line.get("event") == "error":
            raise RuntimeError(str(line))
        if line.get("event") == event:
            return line
    raise TimeoutError(event)


def _bulk(lab: _Lab, hops: list[str], size: int) -> float:
    path = lab.spec("src", hops[1:2], [hops], [{"kind": "bulk", "bytes": size}])
    proc = lab.start("src", path)
    assert proc.stdout is not None
    done = _wait(proc.stdout, "bulk_done", 300)
    proc.wait(30)
    if done["sent_sha256"] != done["confirmed_sha256"]:
        raise RuntimeError("bulk payload corrupted")
    return size / MiB / float(done["seconds"])


def _recovery(lab: _Lab, kills: int) -> list[float]:
    seconds = 1.0 + kills * 1.6
    path = lab.spec(
        "src", ["r1", "r2"], [["src", "r1", "dst"], ["src", "r2", "dst"]],
        [{"kind": "ping", "interval": 0.02, "seconds": seconds}],
    )  # fmt: skip
    proc = lab.start("src", path)
    assert proc.stdout is not None
    times: list[float] = []
    carrying, spare = "r1", "r2"
    time.sleep(0.8)
    for _ in range(kills):
        victim = lab.procs[carrying]
        times.append(time.monotonic())
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(5)
        time.sleep(0.6)
        lab.start(carrying, lab.spec(carrying, ["dst"], [], []))
        carrying, spare = spare, carrying
        time.sleep(0.4)
    done = _wait(proc.stdout, "ping_done", seconds + 30)
    finished = sorted(sent + rtt for sent, rtt in done["samples"])
    out = []
    for kill in times:
        after = [t for t in finished if t > kill]
        out.append((after[0] - kill) if after else float("inf"))
    return out


def run(quick: bool) -> BenchReport:
    size = (32 if quick else 128) * MiB
    report = BenchReport("relay")
    with tempfile.TemporaryDirectory(prefix="afrelay-") as tmp:
        lab = _Lab(Path(tmp))
        try:
            lab.start("dst", lab.spec("dst", [], [], []))
            lab.start("r2", lab.spec("r2", ["dst"], [], []))
            lab.start("r1", lab.spec("r1", ["dst", "r2"], [], []))
            direct = _bulk(lab, ["src", "dst"], size)
            one = _bulk(lab, ["src", "r1", "dst"], size)
            two = _bulk(lab, ["src", "r1", "r2", "dst"], size)
            recoveries = _recovery(lab, 3 if quick else 10)
        finally:
            lab.stop()
    for label, value in (("one relay", one), ("two relays", two)):
        report.add(
            BenchResult(
                metric=f"sealed bulk through {label}",
                value=value,
                unit="MiB/s",
                baseline_metric="sealed bulk direct",
                baseline_value=direct,
            )
        )
    ordered = sorted(recoveries)
    report.add(
        BenchResult(
            metric="failover recovery, worst of kills",
            value=ordered[-1] * 1000,
            unit="ms",
            baseline_metric="failover recovery, median",
            baseline_value=ordered[len(ordered) // 2] * 1000,
        )
    )
    report.notes["payload"] = f"{size // MiB} MiB sealed (ChaCha20-Poly1305 records) per run"
    report.notes["processes"] = "source, relays, destination: one process each, loopback TCP+TLS"
    report.notes["recovery_ms"] = ", ".join(f"{r * 1000:.0f}" for r in recoveries)
    report.notes["target"] = f"one relay / direct = {one / direct:.2f} (target >= 0.70)"
    return report
