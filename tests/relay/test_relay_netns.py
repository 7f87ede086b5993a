"""The relay scenarios in network namespaces, with real node processes SIGKILLed.

phone -> entry -> relaya -> home (primary) and phone -> entry -> relayb -> home.
``AF_RELAY_BULK_MIB`` sets the bulk size (default 256 MiB, the issue's size: it takes about
8 s here); ``AF_RELAY_PING_SECONDS`` the ping window
(24 s: about 10 kills; 46 s gives 20).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from accessfabric.sim import Topology, netns_unavailable_reason
from tests.relay.netns_fabric import NetnsFabric, Proc, p99, recovery_times

MiB = 1024 * 1024
BULK = int(os.environ.get("AF_RELAY_BULK_MIB", "256")) * MiB
PING_SECONDS = float(os.environ.get("AF_RELAY_PING_SECONDS", "24"))
KILL_SPACING = 1.6

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _need_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def _collect(phone: Proc, timeout: float) -> dict[str, dict[str, Any]]:
    """Every result line up to ``counters`` (the runner's last line)."""
    got: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while "counters" not in got:
        line = phone.next(max(0.01, deadline - time.monotonic()))
        got[str(line.get("event"))] = line
    return got


def test_bulk_and_pings_survive_relay_kills(tmp_path: Path) -> None:
    """Scenario 1 (bulk, relaya killed midway, sha256 equal) and 2 (ping recovery p99)."""
    with Topology(prefix="afr") as topo:
        fabric = NetnsFabric(topo, tmp_path)
        print("node logs in", tmp_path)
        fabric.start_infrastructure()
        started = time.monotonic()
        phone = fabric.start(
            "phone",
            [
                {"kind": "bulk", "bytes": BULK},
                {"kind": "ping", "interval": 0.02, "seconds": PING_SECONDS},
            ],
        )
        while True:
            line = phone.next(60)
            if line.get("event") == "progress" and line["sent"] >= BULK // 2:
                break
            assert line.get("event") != "bulk_done", "bulk finished before the kill"
        kills = [fabric.procs["relaya"].kill()]
        carrying, spare = "relayb", "relaya"
        # More kills (alternating relays, the killed one restarted) while the pings run.
        while time.monotonic() + 2 * KILL_SPACING < started + PING_SECONDS:
            time.sleep(KILL_SPACING / 2)
            fabric.start(spare)
            time.sleep(KILL_SPACING / 2)
            kills.append(fabric.procs[carrying].kill())
            carrying, spare = spare, carrying
        results = _collect(phone, PING_SECONDS + 60)
    bulk = results["bulk_done"]
    assert bulk["sent_sha256"] == bulk["confirmed_sha256"], bulk
    assert bulk["resumes"] >= 1
    assert "ping_done" in results, results.get("error")
    recoveries = recovery_times(results["ping_done"]["samples"], kills)
    report = {
        "bulk_mib": BULK // MiB,
        "bulk_seconds": round(bulk["seconds"], 2),
        "kills": len(kills),
        "recovery_ms": [round(r * 1000, 1) for r in recoveries],
        "p99_ms": round(p99(recoveries) * 1000, 1),
    }
    print("relay scenario 1+2:", report)
    assert len(kills) >= 5, report
    assert p99(recoveries) <= 1.0, report
