"""Interactive keeps its latency toward a node under real CPU pressure, by default (issue 22).

A real ``node run`` process serves ``echo``; this process holds one TCP+TLS session to it
with the *default* ``SessionConfig`` (the pressure rate cap is on by default and engages
while the session carries interactive data, ADR 0045 amended).  Node and this process are
pinned to different CPUs.

1. Baseline, same test, a moment earlier, no hog: an INTERACTIVE echo stream pinged every
   20 ms for ``WINDOW`` s (the latency to keep), then with a BULK echo stream kept full
   for ``BULK_WINDOW`` s (the rate to back off from).
2. Pressure: a busy-loop hog is pinned to the node's CPU; the scheduler shares it between
   them, so the node's event loop waits in the run queue and it sends NODE_PRESSURE (cpu).
   Once that has reached the session and the cap is at its floor, pings and bulk are
   measured for ``WINDOW`` s (shorter than the cap's ``GIVE_UP_AFTER``: this is the cap
   holding, not giving way; the phase reports give-ways).

Asserted: bulk backs off (the session's rate cap came down to its floor, and bulk stayed
capped through the window: at least 80 % of the pings saw the cap on; its echo rate is
printed beside the baseline's), and interactive keeps its latency: p50 <= ``K`` x
baseline p50 + ``C50`` and p99 <= ``K`` x baseline p99 + ``C99``.  Generous for a loaded
2-core machine; with ``AF_PRESSURE_CAP=off``
(the session's cap off: the weight only, the behaviour before ADR 0045's amendment) the
test fails — bulk is never capped, and interactive p50 under the hog is 18-48 ms against
2-12 ms with the cap (load average 9-11; ADR 0045, amendment).

Why a shared CPU and not a CFS quota on a cgroup holding node and hog (the other tests in
``test_node_pressure.py``): under a quota the whole group is throttled for most of each
100 ms period, so every wake-up of the node waits for the next period whatever its peers
send; interactive p50 there was 35-62 ms with the cap and 78-97 ms without it, the
quota's figure more than the mechanism's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.node.streams.connection import FabricStream, SessionConnection
from accessfabric.session import SessionConfig
from accessfabric.session.core import PRESSURE_HIGH
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until
from tests.node.harness import start_node
from tests.node.test_node_pressure import BOUNDED_HOG, pin

HIGH = PRESSURE_HIGH
"""The node reports from the level at which its peers act (50)."""
WINDOW = 2.5
"""Seconds each phase measures (the cap gives way only after 3 s at its floor)."""
PING_EVERY = 0.02
CHUNK = 64 * 1024
BULK_WINDOW = 1.5
K, C50, C99 = 4.0, 0.012, 0.100
"""Pressured pN <= K x baseline pN + C (seconds).  Measured (loaded 2-core machine, load
average 7.5-13.7, 12:57-13:19 UTC, 22 runs): baseline p50 0.6-5.2 ms, p99 6.5-42 ms; under
the hog with the cap p50 0.55-21 ms, p99 9-90 ms; with the cap off p50 18-48 ms."""


def _config() -> SessionConfig:
    if os.environ.get("AF_PRESSURE_CAP") == "off":  # to show the test failing without it
        return SessionConfig(pressure_min_rate=None)
    return SessionConfig()


class Load:
    """A full bulk echo and a counter of the bytes echoed back."""

    def __init__(self, bulk: FabricStream) -> None:
        self.bulk = bulk
        self.echoed = 0
        self.tasks = [asyncio.create_task(self._feed()), asyncio.create_task(self._drain())]

    async def _feed(self) -> None:
        payload = b"b" * CHUNK
        while True:
            self.bulk.write(payload)
            await self.bulk.drain()

    async def _drain(self) -> None:
        while chunk := await self.bulk.read(CHUNK):
            self.echoed += len(chunk)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def phase(
    connection: SessionConnection, chat: FabricStream, load: Load | None, seconds: float
) -> dict[str, Any]:
    """Ping for ``seconds``: RTT quantiles, the bulk echo rate, the cap's state."""
    start_bytes, started = 0 if load is None else load.echoed, time.monotonic()
    give_ups = connection.session.metrics().pressure_cap_give_ups
    rtts: list[float] = []
    capped = 0
    while time.monotonic() - started < seconds:
        sent = time.monotonic()
        chat.write(b"p" * 16)
        await asyncio.wait_for(chat.readexactly(16), 10.0)
        rtts.append(time.monotonic() - sent)
        capped += connection.session.metrics().pressure_rate_cap is not None
        await asyncio.sleep(max(0.0, PING_EVERY - (time.monotonic() - sent)))
    elapsed = time.monotonic() - started
    after = connection.session.metrics()
    return {
        "pings": len(rtts),
        "p50_ms": round(statistics.median(rtts) * 1e3, 2),
        "p99_ms": round(statistics.quantiles(rtts, n=100)[98] * 1e3, 2),
        "bulk_MBps": None
        if load is None
        else round((load.echoed - start_bytes) / elapsed / 1e6, 2),
        "capped_share": round(capped / max(1, len(rtts)), 2),
        "give_ups": None
        if give_ups is None or after.pressure_cap_give_ups is None
        else after.pressure_cap_give_ups - give_ups,
        "peer_pressure": after.peer_pressure,
    }


async def test_interactive_keeps_its_latency_while_bulk_backs_off_under_a_cpu_hog(
    tmp_path: Path,
) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    node_cpu, own_cpu = {cpus[0]}, {cpus[1]}
    affinity = os.sched_getaffinity(0)
    loop = asyncio.get_running_loop()
    extra = f"[pressure]\ninterval = 0.1\nhigh_percent = {HIGH}\nloop_lag_budget = 0.05\n"
    node = await loop.run_in_executor(None, lambda: start_node(tmp_path / "n", "n", extra))
    hog: subprocess.Popen[bytes] | None = None
    load: Load | None = None
    config = _config()
    local = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "client", session_config=config)
    try:
        pin(node.process.pid, node_cpu)
        pin(os.getpid(), own_cpu)
        connection = await connect_tcp(
            local, "127.0.0.1", node.port, expected_peer_id=node.node_id, timeout=10
        )
        await connection.ready()
        chat = await connection.open_stream("echo", TrafficClass.INTERACTIVE)
        idle = await phase(connection, chat, None, WINDOW)  # the latency to keep
        print("baseline, no bulk:", idle)
        load = Load(await connection.open_stream("echo", TrafficClass.BULK))
        await until(lambda: load is not None and load.echoed > 4 * CHUNK, 10, "bulk flows")
        free = await phase(connection, chat, load, BULK_WINDOW)  # the rate to back off from
        print("baseline, bulk:", free)

        hog = subprocess.Popen([sys.executable, "-c", BOUNDED_HOG])
        pin(hog.pid, node_cpu)

        def acted_on() -> bool:  # the cap at its floor (cap off: the pressure itself)
            if floor is None:
                return (connection.session.peer_pressure or (0, 0))[1] >= PRESSURE_HIGH
            return (connection.session.metrics().pressure_rate_cap or floor + 1) <= floor

        floor = config.pressure_min_rate
        await until(acted_on, 12, "cpu pressure reported by the node and acted on")
        under = await phase(connection, chat, load, WINDOW)
        print("under the hog:", under)

        assert under["p50_ms"] <= K * idle["p50_ms"] + C50 * 1e3, (idle, under)
        assert under["p99_ms"] <= K * idle["p99_ms"] + C99 * 1e3, (idle, under)
        # bulk backs off: down to the cap's floor before the window (waited for above) and
        # held under the cap through it (its rate then follows the node's level, AIMD)
        assert under["capped_share"] >= 0.8, ("bulk backs off", free, under)
        connection.abort()
    finally:
        if load is not None:
            await load.stop()
        if hog is not None and hog.poll() is None:
            hog.kill()
            hog.wait(5)
        node.kill()
        pin(os.getpid(), affinity)
