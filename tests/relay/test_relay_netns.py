"""The relay scenarios in network namespaces, with real node processes SIGKILLed.

phone -> entry -> relaya -> home (primary) and phone -> entry -> relayb -> home.
``AF_RELAY_BULK_MIB`` sets the bulk size (default 256 MiB, the issue's size: it takes
4-8 s here); the relays are killed until 20 kills are made, as the issue asks (at most
100 s of killing).  Scenario 3 (2 % loss, 40 ms RTT):
``AF_RELAY_LOSSY_BULK_MIB`` (default 256), ``AF_RELAY_LOSSY_IDLE_SECONDS`` (6: pings on
the idle stream after the bulk), ``AF_RELAY_LOSSY_RATE_MBIT`` (the link rate of both
impaired hops, default 100; ``off``: none) and ``AF_RELAY_TCP_RTO_MIN_MS`` (the nodes'
``tcp_rto_min``, default 25; ``off``: the kernel's 200 ms).
Scenario 4: static route leases that expire mid-run (no control plane renews them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from accessfabric.carriers.tcp_timers import DEFAULT_RTO_MIN
from accessfabric.sim import Topology, netns_unavailable_reason
from tests.relay.netns_fabric import NetnsFabric, Proc, p99, recovery_times

MiB = 1024 * 1024
BULK = int(os.environ.get("AF_RELAY_BULK_MIB", "256")) * MiB
KILLS = 20  # the issue: recovery over 20 trials
KILL_SPACING = 1.6  # seconds from one kill to the next, the spare's restart in between
KILL_CAP = 100.0  # seconds from the first kill; ~2.3 s per kill on a quiet machine
RECOVERY_WAIT = 3.0  # after the last kill, before the pings stop

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
    """Scenario 1 (bulk, relaya killed midway, sha256 equal) and 2 (ping recovery p99).

    The first kill hits relaya at half the bulk; then the relays are killed in turn (the
    one not carrying the streams restarted first, so an alternate always exists) until
    ``KILLS`` kills are made, however long that takes under load, within ``KILL_CAP``
    seconds (hitting the cap fails the test with the report).  The 256 MiB bulk takes
    4-8 s, so it ends after the first few kills; the remaining trials measure the ping
    stream alone (which is what scenario 2 asks: kill to first successful ping), and the
    report says how many kills fell within the bulk.  The pings stop 3 s after the last
    kill (``stop_file``), so its recovery is measured too; recovery p99 over the kills
    (with 20 of them: the largest) must be at most 1 s.
    """
    stop_file = tmp_path / "stop-pinging"
    with Topology(prefix="afr") as topo:
        fabric = NetnsFabric(topo, tmp_path)
        print("node logs in", tmp_path)
        fabric.start_infrastructure()
        phone = fabric.start(
            "phone",
            [
                {"kind": "bulk", "bytes": BULK},
                {"kind": "ping", "interval": 0.02, "seconds": KILL_CAP + 120,
                 "stop_file": str(stop_file)},
            ],
        )  # fmt: skip
        while True:
            line = phone.next(60)
            if line.get("event") == "progress" and line["sent"] >= BULK // 2:
                break
            assert line.get("event") != "bulk_done", "bulk finished before the kill"
        kills = [fabric.procs["relaya"].kill()]
        cap = kills[0] + KILL_CAP
        carrying, spare = "relayb", "relaya"
        # More kills (alternating relays, the killed one restarted) while the pings run.
        while len(kills) < KILLS and time.monotonic() < cap:
            time.sleep(KILL_SPACING / 2)
            fabric.start(spare)
            time.sleep(KILL_SPACING / 2)
            kills.append(fabric.procs[carrying].kill())
            carrying, spare = spare, carrying
        kill_seconds = time.monotonic() - kills[0]
        time.sleep(RECOVERY_WAIT)
        stop_file.touch()
        results = _collect(phone, 60)
    bulk = results["bulk_done"]
    assert bulk["sent_sha256"] == bulk["confirmed_sha256"], bulk
    assert bulk["resumes"] >= 1
    assert "ping_done" in results, results.get("error")
    recoveries = recovery_times(results["ping_done"]["samples"], kills)
    report = {
        "bulk_mib": BULK // MiB,
        "bulk_seconds": round(bulk["seconds"], 2),
        "kills": len(kills),
        "kills_during_bulk": sum(kill < bulk["at"] for kill in kills),
        "kill_seconds": round(kill_seconds, 1),
        "recovery_ms": [round(r * 1000, 1) for r in recoveries],
        "p99_ms": round(p99(recoveries) * 1000, 1),
    }
    print("relay scenario 1+2:", report)
    assert len(kills) >= KILLS, f"only {len(kills)} kills within the {KILL_CAP:g} s cap: {report}"
    assert p99(recoveries) <= 1.0, report


LOSSY_BULK = int(os.environ.get("AF_RELAY_LOSSY_BULK_MIB", "256")) * MiB
LOSSY_IDLE_SECONDS = float(os.environ.get("AF_RELAY_LOSSY_IDLE_SECONDS", "6"))
LINK_RTT = 0.040  # 20 ms each way on the emulated phone-entry link
LOSS_PERCENT = 2.0  # nftables, entry <-> relaya, both directions, dropped on arrival
_RATE_MBIT = os.environ.get("AF_RELAY_LOSSY_RATE_MBIT", "100")
# tc tbf on the sender side of both directions of the delayed and the lossy hop.
LINK_RATE_MBIT = None if _RATE_MBIT == "off" else float(_RATE_MBIT)
RATE_LIMITED = (("phone", "entry"), ("entry", "phone"), ("entry", "relaya"), ("relaya", "entry"))
_RTO_MIN_MS = os.environ.get("AF_RELAY_TCP_RTO_MIN_MS", "")
if _RTO_MIN_MS == "off":
    TCP_RTO_MIN: float | None = None
else:
    TCP_RTO_MIN = float(_RTO_MIN_MS) / 1000 if _RTO_MIN_MS else DEFAULT_RTO_MIN


def _ms(values: list[float], pick: Callable[[list[float]], float]) -> float | None:
    return round(pick(values) * 1000, 1) if values else None


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _lossy_run(tmp_path: Path) -> tuple[float, float, dict[str, Any]]:
    """One scenario-3 run: p99 of the pings during the bulk and on the idle stream after
    it, and a report.  Bulk integrity is asserted here, on every run."""
    with Topology(prefix="afr") as topo:
        fabric = NetnsFabric(
            topo, tmp_path, emulated={"delay": LINK_RTT / 2}, tcp_rto_min=TCP_RTO_MIN
        )
        topo.set_loss("entry", "relaya", LOSS_PERCENT)
        topo.set_loss("relaya", "entry", LOSS_PERCENT)
        if LINK_RATE_MBIT is not None:
            for host, peer in RATE_LIMITED:
                topo.set_rate(host, peer, f"{LINK_RATE_MBIT:g}mbit", burst="64kb")
        print("node logs in", tmp_path)
        fabric.start_infrastructure()
        phone = fabric.start(
            "phone",
            [
                {"kind": "bulk", "bytes": LOSSY_BULK},
                {"kind": "ping", "interval": 0.02, "seconds": 0,
                 "after_bulk": LOSSY_IDLE_SECONDS},
            ],
        )  # fmt: skip
        results = _collect(phone, LOSSY_IDLE_SECONDS + 120)
    assert "error" not in results, results["error"]
    bulk = results["bulk_done"]
    assert bulk["sent_sha256"] == bulk["confirmed_sha256"], bulk
    samples = results["ping_done"]["samples"]
    during = [rtt for sent, rtt in samples if sent <= bulk["at"]]
    idle = [rtt for sent, rtt in samples if sent > bulk["at"]]
    report = {
        "tcp_rto_min_ms": None if TCP_RTO_MIN is None else TCP_RTO_MIN * 1000,
        "link_mbit_s": LINK_RATE_MBIT,
        "bulk_mib": LOSSY_BULK // MiB,
        "bulk_seconds": round(bulk["seconds"], 2),
        "bulk_mbit_s": round(LOSSY_BULK * 8 / bulk["seconds"] / 1e6, 1),
        "pings_during_bulk": len(during),
        "p50_ms": _ms(during, _median),
        "p99_ms": _ms(during, p99),
        "max_ms": _ms(during, max),
        "over_3rtt": sum(rtt > 3 * LINK_RTT for rtt in during),
        # (seconds after the bulk started, ms) of each: where in the bulk they fall.
        "over_3rtt_at": [
            (round(sent - bulk["at"] + bulk["seconds"], 2), round(rtt * 1000, 1))
            for sent, rtt in samples
            if sent <= bulk["at"] and rtt > 3 * LINK_RTT
        ],
        "idle_pings": len(idle),
        "idle_p50_ms": _ms(idle, _median),
        "idle_p99_ms": _ms(idle, p99),
        "idle_max_ms": _ms(idle, max),
        "resumes": bulk["resumes"],
    }
    print("relay scenario 3:", report)
    assert len(during) >= 20 and len(idle) >= 20, report
    return p99(during), p99(idle), report


def test_lossy_delayed_link_bulk_and_interactive(tmp_path: Path) -> None:
    """Scenario 3: 2 % loss and 40 ms RTT; bulk completes intact, and the p99 of the
    interactive pings, on the idle stream after the bulk and while the bulk runs, is at
    most 3x the link RTT.

    A lone lost segment (a ping with nothing behind it) gets no fast retransmit; the
    carriers' 25 ms minimum RTO resends it after ~30 ms instead of Linux's 200 ms
    (``docs/adr/0011-tcp-minimum-rto.md``).  Both hops have a finite link rate (tc tbf,
    100 Mbit/s each way, ``AF_RELAY_LOSSY_RATE_MBIT``) as a WAN path has: the bulk is then
    limited by the link, not by whichever of the five node processes and the user-space
    link emulator gets the least CPU, and the sessions' delay pacer keeps the queue in
    front of the pings short.  Without a rate the during-bulk p99 exceeded 120 ms in 5 of 23
    interleaved runs (12 of 28 in an earlier, busier series; the test used to allow a second
    run); with 100 Mbit/s in none of 19 (``docs/benchmarks.md``, relay scenario 3), so one
    run, both bounds.  What is left: one ping 0.25-0.3 s into the bulk (125-140 ms: the
    bulk's start fills the 100 Mbit/s queue before the pacer's first RTT samples show it;
    a separate interactive connection would see it too), and one per BBR ProbeRTT of the
    phone's connection (cwnd 4 for 200 ms, 10 s after its last lower RTT sample: the ping
    queued behind bulk in that connection waits 260-330 ms).  The bulk is 256 MiB (~27 s,
    ~450-520 pings) so that the p99 tolerates five: with 128 MiB (13 s, ~240 pings) it
    tolerated two, the start and the ProbeRTT at ~10.3 s took both, and a third (a CPU
    hiccup) failed a fresh-clone CI (p99 130 ms, three above 120).  The report lists each
    with its time into the bulk (``over_3rtt_at``).  Under heavier CPU load than measured
    the CPU is the bottleneck again and the bound can fail.
    """
    during, idle, report = _lossy_run(tmp_path)
    assert idle <= 3 * LINK_RTT, f"idle ping p99 above 3x the link RTT: {report}"
    assert during <= 3 * LINK_RTT, f"ping p99 during the bulk above 3x the link RTT: {report}"


LEASE_TTL = 12.0


def test_streams_work_until_leases_expire_then_say_why(tmp_path: Path) -> None:
    """Scenario 4 with static leases (no control plane to renew them): bulk, ping and new
    streams work while the phone's route leases are valid; a ping stream opened before
    expiry keeps running past it; a stream opened after it fails with the reason."""
    with Topology(prefix="afr") as topo:
        fabric = NetnsFabric(topo, tmp_path, route_ttl=LEASE_TTL)
        print("node logs in", tmp_path)
        fabric.start_infrastructure()
        expires = fabric.routes[0].lease.expires_ms / 1000
        left = expires - time.time()
        assert left > 4, f"infrastructure took too long to start: {left:.1f} s of lease left"
        phone = fabric.start(
            "phone",
            [
                {"kind": "bulk", "bytes": 32 * MiB},
                {"kind": "ping", "interval": 0.02, "seconds": left + 3},
                {"kind": "open", "after": 0.5, "label": "valid"},
                {"kind": "open", "after": left + 1.5, "label": "expired"},
            ],
        )
        lines: list[dict[str, Any]] = []
        deadline = time.monotonic() + left + 30
        while not lines or lines[-1].get("event") != "counters":
            lines.append(phone.next(max(0.01, deadline - time.monotonic())))
    by_event = {str(line.get("event")): line for line in lines}
    opens = {line["label"]: line for line in lines if line.get("event") == "open"}
    report = {
        "lease_left_at_start_s": round(left, 1),
        "opens": opens,
        "errors": [line for line in lines if line.get("event") == "error"],
    }
    print("relay scenario 4:", report)
    bulk = by_event["bulk_done"]
    assert bulk["sent_sha256"] == bulk["confirmed_sha256"], bulk
    assert opens["valid"]["ok"], report
    assert opens["valid"]["wall"] < expires
    # The ping stream, opened under a valid lease, keeps answering after the expiry.
    samples = by_event["ping_done"]["samples"]
    assert samples, report
    last_sent_wall = samples[-1][0] - opens["expired"]["at"] + opens["expired"]["wall"]
    assert last_sent_wall > expires + 1, report
    assert not report["errors"], report
    assert not opens["expired"]["ok"], report
    assert opens["expired"]["wall"] > expires
    error = opens["expired"]["error"]
    assert error.startswith("NoUsableRoute: "), error
    assert "route leases expired" in error and "no fresh lease arrived" in error, error
