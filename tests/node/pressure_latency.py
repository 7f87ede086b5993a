"""Interactive latency while bulk backs off under CPU pressure: a measurement, not a test.

``sudo PYTHONPATH=src .venv/bin/python -m tests.node.pressure_latency [--seconds S]``
(root: a cpu cgroup).  A real ``node run`` process serves ``echo``; this process holds
three sessions to it (TCP+TLS), each with a BULK echo stream kept full and an
INTERACTIVE echo stream pinged every 20 ms (16 bytes, one outstanding).  Session ``cap``
is the default (ADR 0045 amended; it engages while interactive data flows, as here):
bulk's DRR weight drops to 1 and the ``PressureRateCap`` lowers the rate
of reliable/bulk/droppable toward the node (floor 512 KiB/s) while it reports cpu or
memory pressure; ``weight`` has the weight only (``pressure_min_rate`` None); ``control``
neither (bulk ignores pressure).  Phases, each ``--seconds`` long, one session at a time:

1. ``idle``: no hog;
2. ``hog``: the node and a busy-loop hog share one cgroup capped at ``--quota-ms`` per
   100 ms CFS period (default 20: a fifth of a core for both), measured once the node's
   NODE_PRESSURE (cpu: its event loop runs late while throttled) reached the session;
   with ``--share`` instead both are pinned to CPU 0 and share it by the scheduler's
   fairness (no quota; the phase starts after 20 s if no pressure comes).  ``--rounds N``
   repeats the hog phase N times, the sessions alternating within each round.

Prints one JSON line per phase and session: interactive RTT p50 / p99 (ms), bulk echo
MB/s, the peer's pressure levels, bulk's DRR weight, the share of pings sent while the
cap was on and its median, the times the cap gave way (ADR 0045; in the phase and in all)
and re-engaged at once because lifting it cost interactive its latency (in the phase),
and the node process's CPU time and run-queue wait per second
(``/proc/PID/task/*/schedstat``: where the interactive time goes).  ``--bulk-only``
sends no pings: the default cap, which engages only while interactive data flows, should
then cost bulk nothing.  docs/benchmarks.md
("pressure") records a run.  Not in ``make test``: a shared machine's load moves the
figures more than the effect measured (the CPU-pressure *signal* is tested in
``tests/node/test_node_pressure.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from accessfabric.bench.cpu_budget import unavailable_reason
from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.session import SessionConfig
from accessfabric.wire.registry import TrafficClass
from tests.node.harness import start_node
from tests.node.test_node_pressure import CpuGroup

HIGH = 80
SESSIONS = (("cap", 1, 512 * 1024), ("weight", 1, None), ("control", 2, None))
"""name, bulk's DRR weight under pressure, the rate cap's floor (None: no cap)."""
PING_EVERY = 0.02
CHUNK = 64 * 1024


def sched(pid: int) -> tuple[float, float]:
    """Seconds the process's threads ran on a CPU and waited in a run queue (schedstat)."""
    ran = waited = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            fields = (task / "schedstat").read_text().split()
            ran += int(fields[0]) / 1e9
            waited += int(fields[1]) / 1e9
    return ran, waited


async def measure(
    connection: SessionConnection, seconds: float, pid: int, bulk_only: bool = False
) -> dict[str, Any]:
    interactive = await connection.open_stream("echo", TrafficClass.INTERACTIVE)
    bulk = await connection.open_stream("echo", TrafficClass.BULK)
    echoed = 0
    stop = asyncio.Event()

    async def write_bulk() -> None:
        payload = b"b" * CHUNK
        while not stop.is_set():
            bulk.write(payload)
            await bulk.drain()

    async def read_bulk() -> None:
        nonlocal echoed
        while chunk := await bulk.read(CHUNK):
            echoed += len(chunk)

    writer = asyncio.create_task(write_bulk())
    reader = asyncio.create_task(read_bulk())
    await asyncio.sleep(0.5)  # bulk under way
    start_bytes, started = echoed, time.perf_counter()
    ran0, waited0 = sched(pid)
    give_ups0 = connection.session.metrics().pressure_cap_give_ups
    reengages0 = connection.session.metrics().pressure_cap_reengages
    caps: list[float] = []
    rtts: list[float] = []
    while time.perf_counter() - started < seconds:
        sent = time.perf_counter()
        if not bulk_only:
            interactive.write(b"p" * 16)
            await interactive.readexactly(16)
            rtts.append(time.perf_counter() - sent)
        cap = connection.session.metrics().pressure_rate_cap
        caps.append(-1.0 if cap is None else cap)
        await asyncio.sleep(max(0.0, PING_EVERY - (time.perf_counter() - sent)))
    elapsed = time.perf_counter() - started
    ran1, waited1 = sched(pid)
    rate = (echoed - start_bytes) / elapsed / 1e6
    stop.set()
    writer.cancel()
    reader.cancel()
    interactive.close()
    bulk.close()
    quantiles = statistics.quantiles(rtts, n=100) if rtts else [math.nan] * 99
    after = connection.session.metrics()
    give_ups = after.pressure_cap_give_ups
    reengages = after.pressure_cap_reengages
    return {
        "pings": len(rtts),
        "rtt_p50_ms": round(statistics.median(rtts) * 1e3, 2) if rtts else None,
        "rtt_p99_ms": round(quantiles[98] * 1e3, 2) if rtts else None,
        "bulk_MBps": round(rate, 2),
        "peer_pressure": connection.session.peer_pressure,
        "bulk_weight": after.bulk_weight,
        "capped_share": round(sum(c >= 0 for c in caps) / max(1, len(caps)), 2),
        "cap_MBps_median": round(statistics.median(caps) / 1e6, 2) if caps else None,
        "cap_give_ups": None if give_ups is None else give_ups - (give_ups0 or 0),
        "cap_give_ups_total": give_ups,
        "cap_reengages": None if reengages is None else reengages - (reengages0 or 0),
        "node_cpu_per_s": round((ran1 - ran0) / elapsed, 3),
        "node_runqueue_wait_per_s": round((waited1 - waited0) / elapsed, 3),
    }


async def main(
    seconds: float, quota_ms: float, share: bool, rounds: int, bulk_only: bool = False
) -> None:
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"pressure_latency: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        extra = f"[pressure]\ninterval = 0.1\nhigh_percent = {HIGH}\nloop_lag_budget = 0.05\n"
        loop = asyncio.get_running_loop()
        node = await loop.run_in_executor(None, lambda: start_node(directory / "n", "n", extra))
        group: CpuGroup | None = None
        hog: subprocess.Popen[bytes] | None = None
        sessions: dict[str, SessionConnection] = {}
        try:
            for name, weight, floor in SESSIONS:
                local = LocalNode(
                    key=NodeKey.generate(), cert_dir=directory / name,
                    session_config=SessionConfig(
                        pressure_bulk_weight=weight, pressure_min_rate=floor
                    ),
                )  # fmt: skip
                sessions[name] = await connect_tcp(
                    local, "127.0.0.1", node.port, expected_peer_id=node.node_id
                )
            pid = node.process.pid

            async def report(phase: str, name: str, round_: int) -> None:
                figures = await measure(sessions[name], seconds, pid, bulk_only)
                line = {"phase": phase, "round": round_, "session": name, **figures}
                print(json.dumps(line), flush=True)

            for name in sessions:
                await report("idle", name, 0)
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            if share:  # one core, shared by the scheduler's fairness: no quota
                for task in (pid, hog.pid):
                    os.sched_setaffinity(task, {0})
            else:
                group = CpuGroup()
                group.add(pid)
                group.add(hog.pid)
                group.quota(int(quota_ms * 1000))
            for round_ in range(1, rounds + 1):  # the sessions alternate, round after round
                for name, connection in sessions.items():
                    deadline = time.monotonic() + 20
                    while (connection.session.peer_pressure or (0, 0))[1] < HIGH:
                        if time.monotonic() > deadline:
                            print(json.dumps({"phase": "hog", "session": name,
                                              "error": "no cpu pressure in 20 s"}))  # fmt: skip
                            break
                        await asyncio.sleep(0.1)
                    await report("hog", name, round_)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait(5)
            for connection in sessions.values():
                connection.abort()
            node.kill()
            if group is not None:
                await group.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quota-ms", type=float, default=20.0)
    parser.add_argument(
        "--share", action="store_true", help="pin node and hog to CPU 0 instead of a quota"
    )
    parser.add_argument("--rounds", type=int, default=1, help="hog phases per session")
    parser.add_argument(
        "--bulk-only", action="store_true", help="no interactive pings (the cap stays off)"
    )
    arguments = parser.parse_args()
    asyncio.run(
        main(
            arguments.seconds,
            arguments.quota_ms,
            arguments.share,
            arguments.rounds,
            arguments.bulk_only,
        )
    )
