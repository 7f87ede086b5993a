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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from accessfabric.bench.common import process_cpu
from accessfabric.bench.cpu_budget import CpuBudget, unavailable_reason
from accessfabric.bench.relay_lab import SEALED_SINK, issue_route
from accessfabric.bench.report import BenchReport, BenchResult, BenchSetupError
from accessfabric.control.kernel.authority import Authority
from accessfabric.identity.keys import NodeKey

MiB = 1024 * 1024
NODE_CPU_ENV = "ACCESSFABRIC_BENCH_NODE_CPU"
DEFAULT_NODE_CPU = 0.45
"""CPUs per node process in the budgeted pass: the two-relay chain's four nodes fit in 2."""


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
        self.ciphers: set[str] = set()
        """The sealing cipher suites the bulk sources used (their ``[sealing] cipher``,
        ``auto`` in this bench)."""

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
            # default deny: the destination serves the source (only)
            "allow": {service: [self.ids["src"]] for service in ("echo", SEALED_SINK)},
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


def _cpu_seconds(pid: int) -> float:
    seconds = process_cpu(pid)
    if seconds is None:
        raise RuntimeError(f"no CPU figures for process {pid} in /proc")
    return seconds


def _bulk(
    lab: _Lab, hops: list[str], size: int, budgets: dict[str, CpuBudget] | None = None
) -> tuple[float, dict[str, float]]:
    """MiB/s of one sealed bulk along ``hops``, and CPU seconds per GiB of each process.

    With ``budgets`` the source joins its own budget once it is ready (the others are in
    theirs already).
    """
    path = lab.spec("src", hops[1:2], [hops], [{"kind": "bulk", "bytes": size}])
    proc = lab.start("src", path)
    assert proc.stdout is not None
    if budgets is not None:
        budgets["src"].add(proc.pid)
    # CPU from the first progress mark on: start-up (imports, handshakes) is not bulk cost
    mark = _wait(proc.stdout, "progress", 60)
    before = {name: _cpu_seconds(lab.procs[name].pid) for name in hops}
    done = _wait(proc.stdout, "bulk_done", 300)
    lab.ciphers.add(str(done.get("cipher", "?")))
    used = {name: _cpu_seconds(lab.procs[name].pid) - before[name] for name in hops}
    proc.wait(30)
    if done["sent_sha256"] != done["confirmed_sha256"]:
        raise RuntimeError("bulk payload corrupted")
    gib = (size - int(mark["sent"])) / (1024 * MiB)
    return size / MiB / float(done["seconds"]), {name: used[name] / gib for name in hops}


CHAINS = {
    "direct": ["src", "dst"],
    "one relay": ["src", "r1", "dst"],
    "two relays": ["src", "r1", "r2", "dst"],
}


def _chains(
    lab: _Lab, size: int, rounds: int, budgets: dict[str, CpuBudget] | None = None
) -> dict[str, tuple[float, dict[str, float]]]:
    """Each chain of :data:`CHAINS`, ``rounds`` times in turn: the median MiB/s and the
    median CPU s/GiB of each process (one run's figures swing with the scheduler)."""
    runs: dict[str, list[tuple[float, dict[str, float]]]] = {label: [] for label in CHAINS}
    for _ in range(rounds):
        for label, hops in CHAINS.items():
            runs[label].append(_bulk(lab, hops, size, budgets))
    return {
        label: (
            statistics.median(rate for rate, _ in results),
            {name: statistics.median(cpu[name] for _, cpu in results) for name in CHAINS[label]},
        )
        for label, results in runs.items()
    }


def _budgeted_chains(
    lab: _Lab, size: int, rounds: int, fraction: float
) -> dict[str, tuple[float, dict[str, float]]]:
    """:func:`_chains` with every node process held to ``fraction`` of a CPU."""
    budgets: dict[str, CpuBudget] = {}
    try:
        for name in ("src", "r1", "r2", "dst"):
            budgets[name] = CpuBudget(name, fraction)
        for name in ("r1", "r2", "dst"):
            budgets[name].add(lab.procs[name].pid)
        return _chains(lab, size, rounds, budgets)
    finally:
        for budget in budgets.values():
            budget.close()


def node_cpu_fraction() -> float:
    """The CPU budget per node process (``ACCESSFABRIC_BENCH_NODE_CPU``, default 0.45)."""
    raw = os.environ.get(NODE_CPU_ENV, "")
    if not raw:
        return DEFAULT_NODE_CPU
    try:
        value = float(raw)
    except ValueError:
        raise BenchSetupError(f"{NODE_CPU_ENV}={raw!r} is not a number of CPUs") from None
    if not 0.05 <= value <= 1.0:
        raise BenchSetupError(f"{NODE_CPU_ENV}={raw!r} is outside 0.05..1.0 CPUs")
    return value


def _recovery(lab: _Lab, kills: int) -> list[float]:
    cap = 30.0 + kills * 5.0
    stop_file = lab.workdir / f"stop-pings-{secrets.token_hex(3)}"
    path = lab.spec(
        "src", ["r1", "r2"], [["src", "r1", "dst"], ["src", "r2", "dst"]],
        [{"kind": "ping", "interval": 0.02, "seconds": cap, "stop_file": str(stop_file)}],
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
    time.sleep(1.0)  # pings after the last kill
    stop_file.touch()
    done = _wait(proc.stdout, "ping_done", cap + 30)
    finished = sorted(sent + rtt for sent, rtt in done["samples"])
    out = []
    for kill in times:
        after = [t for t in finished if t > kill]
        out.append((after[0] - kill) if after else float("inf"))
    return out


def run(quick: bool) -> BenchReport:
    size = (32 if quick else 128) * MiB
    rounds = 1 if quick else 3
    fraction = node_cpu_fraction()
    no_budget = unavailable_reason()
    report = BenchReport("relay")
    with tempfile.TemporaryDirectory(prefix="afrelay-") as tmp:
        lab = _Lab(Path(tmp))
        ciphers = lab.ciphers
        try:
            lab.start("dst", lab.spec("dst", [], [], []))
            lab.start("r2", lab.spec("r2", ["dst"], [], []))
            lab.start("r1", lab.spec("r1", ["dst", "r2"], [], []))
            shared = _chains(lab, size, rounds)
            budgeted = None if no_budget else _budgeted_chains(lab, size, rounds, fraction)
            recoveries = _recovery(lab, 3 if quick else 10)
        finally:
            lab.stop()
    passes = [("shared CPUs", shared)]
    if budgeted is not None:
        passes.append((f"{fraction:g} CPU per node", budgeted))
    for mode, chains in passes:
        direct = chains["direct"][0]
        for label in ("one relay", "two relays"):
            report.add(
                BenchResult(
                    metric=f"sealed bulk through {label}, {mode}",
                    value=chains[label][0],
                    unit="MiB/s",
                    baseline_metric=f"sealed bulk direct, {mode}",
                    baseline_value=direct,
                )
            )
        for label, (_, cpu) in chains.items():
            per_process = ", ".join(f"{name} {seconds:.2f}" for name, seconds in cpu.items())
            report.notes[f"cpu_s_per_gib {label}, {mode}"] = per_process
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
    report.notes["payload"] = (
        f"{size // MiB} MiB sealed ({', '.join(sorted(ciphers))} records: [sealing] cipher "
        f"= auto on this CPU) per run; "
        f"median of {rounds} run(s) of each chain"
    )
    report.notes["processes"] = "source, relays, destination: one process each, loopback TCP+TLS"
    report.notes["recovery_ms"] = ", ".join(f"{r * 1000:.0f}" for r in recoveries)
    mode, chains = passes[-1]
    ratio = chains["one relay"][0] / chains["direct"][0]
    report.notes["target"] = f"one relay / direct, {mode} = {ratio:.2f} (target >= 0.70)"
    if no_budget:
        report.notes["cpu_budget"] = f"not measured: {no_budget}"
    else:
        report.notes["cpu_budget"] = (
            f"each node process held to {fraction:g} CPU (cgroup CPU quota), as if each node "
            "ran on a machine of its own; shared CPUs: every process of a chain competes for "
            f"this machine's {os.cpu_count()} cores (docs/adr/0012-relay-bench-cpu-budget.md)"
        )
    return report
