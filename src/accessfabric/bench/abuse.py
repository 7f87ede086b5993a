"""``accessfabric bench abuse``: a healthy session's echo p99 with and without each flood.

One real node process (``accessfabric node run``, uvloop, default ``[limits]``,
``handshake_timeout = 3`` so a pre-TLS flood ends within the run) listens on loopback.
This process keeps one authenticated session to it and measures echo round trips
(64 bytes, one at a time, 2 ms apart): for each flood, first with nothing else running
(that flood's baseline), then while an attacker process
(:mod:`accessfabric.bench.abuse_attacker`) runs the flood — pre-TLS connections, TLS
handshake churn, failed AUTH, refused streams.
Reported per flood: the echo p99 against the baseline (target: within 2x), and the node
process's RSS before the floods and after all of them (the allocator trim of
``node/host/allocator.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from accessfabric.bench.common import machine_note, raise_nofile_limit
from accessfabric.bench.report import BenchReport, BenchResult, BenchSetupError
from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.node.streams.connection import FabricStream
from accessfabric.percentile import percentile

FLOODS = ("pre-tls", "tls-churn", "bad-auth", "refused-streams", "quic-initials")
HANDSHAKE_TIMEOUT = 3.0
ECHO_GAP = 0.002


def _start_node(work: Path) -> tuple[subprocess.Popen[str], str, dict[str, int]]:
    key = NodeKey.generate()
    key.save(work / "node.key")
    config = work / "node.toml"
    config.write_text(
        'key_path = "node.key"\n[session]\n'
        f"handshake_timeout = {HANDSHAKE_TIMEOUT}\n"
        '[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:0"\n'
        '[[listen]]\ncarrier = "quic"\naddress = "127.0.0.1:0"\n'
        '[allow]\necho = ["*"]\n'  # services are default deny; the healthy client echoes
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "accessfabric", "node", "run", "--config", str(config),
         "--log-json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    ports: dict[str, int] = {}
    for line in process.stderr:
        if '"listening"' in line:
            listening = json.loads(line)
            ports[listening["carrier"]] = int(listening["address"].rsplit(":", 1)[1])
        if '"node ready"' in line:
            break
        if time.monotonic() > deadline:
            break
    if set(ports) != {"tcp", "quic"}:
        process.kill()
        raise BenchSetupError("the node did not start")
    # Keep draining its log so it never blocks on a full pipe.
    import threading

    threading.Thread(target=lambda: [None for _ in process.stderr or ()], daemon=True).start()
    return process, key.node_id, ports


async def _echoes(stream: FabricStream, count: int) -> list[float]:
    rtts = []
    payload = b"e" * 64
    for _ in range(count):
        start = time.perf_counter()
        stream.write(payload)
        await stream.readexactly(64)
        rtts.append(time.perf_counter() - start)
        await asyncio.sleep(ECHO_GAP)
    return rtts


def _pin(pid: int, cpus: list[int]) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, cpus)


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _p99(samples: list[float]) -> float:
    return percentile(samples, 0.99) * 1000


async def _measure(quick: bool, work: Path, report: BenchReport) -> None:
    node, node_id, ports = _start_node(work)
    port = ports["tcp"]
    # The attacker gets its own CPU (the last one), the node and this process the others:
    # what is measured is the node's cost of a flood, not the attacker's own CPU.
    cpus = sorted(os.sched_getaffinity(0))
    attacker_cpus = cpus[-1:] if len(cpus) > 1 else cpus
    defender_cpus = cpus[:-1] if len(cpus) > 1 else cpus
    _pin(node.pid, defender_cpus)
    _pin(0, defender_cpus)
    try:
        local = LocalNode(key=NodeKey.generate(), cert_dir=work / "healthy")
        healthy = await connect_tcp(local, "127.0.0.1", port, expected_peer_id=node_id)
        stream = await healthy.open_stream("echo")
        count = 400 if quick else 1500
        seconds = 4.0 if quick else 10.0
        await _echoes(stream, 50)  # warm up
        rss_before = _rss_bytes(node.pid)
        for kind in FLOODS:
            # Its own baseline right before each flood: the machine's load drifts.
            baseline = _p99(await _echoes(stream, count))
            attacker = await asyncio.create_subprocess_exec(
                "nice", "-n", "19", sys.executable, "-m", "accessfabric.bench.abuse_attacker",
                kind, str(ports["quic" if kind.startswith("quic") else "tcp"]), node_id,
                str(seconds), str(work / f"attacker-{kind}"),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _pin(attacker.pid, attacker_cpus)
            assert attacker.stdout is not None
            await attacker.stdout.readline()  # "started": its interpreter is up
            samples: list[float] = []
            while attacker.returncode is None and len(samples) < 20 * count:
                samples += await _echoes(stream, 50)
            out, _ = await attacker.communicate()
            report.add(
                BenchResult(
                    metric=f"echo p99 during {kind}",
                    value=_p99(samples),
                    unit="ms",
                    baseline_metric="echo p99 just before, no flood",
                    baseline_value=baseline,
                )
            )
            report.notes[kind] = f"{len(samples)} echoes; attacker {out.decode().strip()}"
        if not healthy.is_ready:
            report.notes["healthy session"] = "LOST during the floods"
        await asyncio.sleep(HANDSHAKE_TIMEOUT + 3)  # the last connections end, the trim runs
        report.add(
            BenchResult(
                metric="node RSS after the floods",
                value=_rss_bytes(node.pid) / 2**20,
                unit="MiB",
                baseline_metric="node RSS before",
                baseline_value=rss_before / 2**20,
            )
        )
        healthy.abort()
    finally:
        node.terminate()
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()


def run(quick: bool) -> BenchReport:
    raise_nofile_limit()
    report = BenchReport("abuse")
    with tempfile.TemporaryDirectory(prefix="afabuse-") as tmp:
        asyncio.run(_measure(quick, Path(tmp), report))
    report.notes["target"] = "each flood's echo p99 within 2x of the baseline"
    report.notes["cpus"] = (
        "the attacker process niced (19) and pinned to the last CPU, the node and the "
        "healthy client to the others (os.sched_setaffinity): an attacker runs elsewhere, "
        "its own CPU must not count"
    )
    report.notes["machine"] = machine_note()
    return report
