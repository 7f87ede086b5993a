"""``accessfabric demo`` (what ``make demo`` runs): the fabric on loopback, no config, no root.

1. A control plane (``control init`` + ``control serve``, SQLite in a temporary
   directory) and five ``accessfabric node run`` processes with a ``[control]``
   section — laptop (mobile-edge), entry, two relays, home (service-host) — that
   enroll themselves with role tokens, heartbeat their listeners and measured
   sessions, and find one another through their directories
   (:mod:`accessfabric.demo.fleet`).  Home hosts ``web`` (a Python HTTP server with
   a random file) and ``term`` (a TCP echo server standing in for a shell); laptop
   forwards a local port to each.  Laptop's route leases from the planner are
   printed: the relay on the primary route is called relay-a, the other relay-b.
2. A bulk download loop (sha256 of every copy checked) and an interactive echo
   session run at the same time through laptop's forwards, laptop -> entry ->
   relay-a -> home; a live view prints per-class throughput (laptop's ``/metrics``),
   echo round-trip times and route failovers each second.  A third of the way
   through relay-a gets SIGKILL; laptop's route execution resumes both streams via
   relay-b from their last end-to-end ACK (:mod:`accessfabric.demo.traffic`).
3. Laptop's route table (from ``accessfabric status``), ``accessfabric ping home`` from
   laptop (a route lease to home's own echo, through a relay) and a summary: bytes, sha256,
   p50/p99 echo latency, the recovery time (from the kill to the answer of the first
   echo sent after it) and the download's longest pause.  Exit 0 when every copy
   verified and nothing failed; every process started is stopped (SIGTERM too).

Nothing here is simulated: every hop is a real ``node run`` process over TCP+TLS on
127.0.0.1, and the streams are plain forwarded TCP connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from accessfabric.demo.control import start_control
from accessfabric.demo.echo import PROBE, PROBE_INTERVAL
from accessfabric.demo.fleet import (
    CONSOLE_HOST,
    ROLES,
    SERVICE,
    TERM,
    Fleet,
    console_url,
    start_fleet,
)
from accessfabric.demo.procs import DemoFailed, Processes
from accessfabric.demo.traffic import KILL_AT, Traffic, run_traffic
from accessfabric.json_output import print_json
from accessfabric.node.admin.status import fetch_status, table

Report = dict[str, Any]


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_demo(args: argparse.Namespace) -> int:
    """With ``--json`` the human output goes to stderr and stdout gets one JSON document
    at the end: the summary (:func:`_summary_json`), ``ok`` and ``exit_code``."""
    report: Report = {}
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        code = _run_demo(args, report)
    if args.json:
        if "error" in report or code != 0:
            report.setdefault("error", "stopped" if code == 130 else "the demo failed")
        print_json({"ok": code == 0, "exit_code": code, **report})
    return code


def _run_demo(args: argparse.Namespace, report: Report) -> int:
    work = Path(tempfile.mkdtemp(prefix="accessfabric-demo-"))
    procs = Processes(work)
    report["work_dir"] = str(work)
    signal.signal(signal.SIGTERM, _interrupted)  # stop the children on SIGTERM too
    signal.signal(signal.SIGHUP, _interrupted)
    try:
        return asyncio.run(_main(args, work, procs, report))
    except KeyboardInterrupt:
        return 130
    except DemoFailed as failed:
        print(f"\ndemo failed: {failed}")
        report["error"] = str(failed)
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


async def _main(args: argparse.Namespace, work: Path, procs: Processes, report: Report) -> int:
    report["control"] = {"store": args.control}
    if args.control == "etcd":
        return await _main_etcd(args, work, procs, report)
    print("accessfabric demo — everything on loopback, in", work)
    print("\n[1] a control plane (SQLite) and five `node run` processes that enroll themselves")
    started = time.monotonic()
    control = await start_control(work, procs)
    fleet = await start_fleet(work, procs, control, args.size_mib << 20)
    fleet.ready_after = time.monotonic() - started
    return await _run(args, fleet, procs, report)


async def _main_etcd(args: argparse.Namespace, work: Path, procs: Processes, report: Report) -> int:
    from accessfabric.demo import etcd as demo_etcd

    missing = demo_etcd.etcd_missing()
    if missing is not None:
        print(f"accessfabric demo --control etcd: {missing}")
        return 2
    print("accessfabric demo --control etcd — everything on loopback, in", work)
    print(
        "\n[1] 3 etcd members, 2 control replicas on them, and five `node run` processes "
        "that list both replicas"
    )
    started = time.monotonic()
    control, cluster = await demo_etcd.start_control_etcd(work, procs)
    try:
        fleet = await start_fleet(work, procs, control, args.size_mib << 20)
        fleet.ready_after = time.monotonic() - started
        events: list[str] = []
        faults = asyncio.create_task(
            demo_etcd.faults_midway(
                control, cluster, procs, time.monotonic(), args.duration, events
            )
        )
        try:
            code = await _run(args, fleet, procs, report, control_faults=(
                f"the etcd leader after {args.duration * demo_etcd.ETCD_KILL_AT:.0f} s and "
                f"control replica 1 after {args.duration * demo_etcd.REPLICA_KILL_AT:.0f} s"
            ))  # fmt: skip
            await faults
            problems = await demo_etcd.report_after_faults(control, fleet.labels)
        finally:
            faults.cancel()
        for problem in problems:
            print(f"  FAILED            {problem}")
        if len(events) < 2:
            problems.append("the faults were not injected")
        print(f"  control faults    {'; '.join(events) or 'none'}")
        print(f"  control result    {'ok' if not problems else 'FAILED'}")
        report["control"].update({"faults": events, "problems": problems, "ok": not problems})
        return code if not problems else 1
    finally:
        await asyncio.to_thread(cluster.stop)


async def _run(
    args: argparse.Namespace,
    fleet: Fleet,
    procs: Processes,
    report: Report,
    control_faults: str = "",
) -> int:
    _describe(fleet)
    print(
        f"\n[2] {args.duration:.0f} s of {args.size_mib} MiB downloads (sha256 each) and "
        f"{PROBE}-byte echoes every {PROBE_INTERVAL * 1e3:.0f} ms, at once;\n"
        f"    relay-a is killed after {args.duration * KILL_AT:.0f} s"
        + (f";\n    SIGKILL {control_faults}" if control_faults else "")
    )
    traffic = await run_traffic(fleet, procs, args.duration)
    await _route_table(fleet)
    ping = await _ping_home(fleet)
    _summary(fleet, traffic)
    report.update(_summary_json(fleet, traffic, args))
    report["ping"] = ping
    if args.keep_running:
        web = fleet.ports["forward_web"]
        print(f"\n--keep-running: curl http://127.0.0.1:{web}/blob.bin -o /dev/null")
        print(f"  accessfabric status --socket {fleet.admin('laptop')}")
        print(f"  admin console: {console_url(fleet)}  (through entry's ingress to home)")
        print(f"    log in with the admin token {fleet.admin_token}")
        print(f"    curl: curl --resolve {CONSOLE_HOST}:{fleet.ports['ingress']}:127.0.0.1 "
              f"{console_url(fleet)}login")  # fmt: skip
        print("  Ctrl-C to stop")
        await asyncio.Event().wait()
    return 0 if traffic.ok else 1


_ORDER = ("laptop", "entry", "relay-a", "relay-b", "home")

SLOW_LISTED = 100
"""At most this many slow echoes are listed one by one in ``--json`` (all are counted)."""


def _describe(fleet: Fleet) -> None:
    for name in sorted(ROLES, key=lambda n: _ORDER.index(fleet.label(fleet.ids[n]))):
        node_id = fleet.ids[name]
        print(f"    {fleet.label(node_id):8} {node_id[:16]}…  roles {ROLES[name]}")
    print(f"    home serves {SERVICE!r} (http.server, bulk) and {TERM!r} (a TCP echo, interactive)")
    print(f"    laptop forwards 127.0.0.1:{fleet.ports['forward_web']} -> {SERVICE} and "
          f"127.0.0.1:{fleet.ports['forward_term']} -> {TERM}")  # fmt: skip
    print(f"    enrolled, heartbeating, leases issued: {fleet.ready_after:.1f} s after the start")
    print(f"    laptop's route leases for {SERVICE}:")
    print(f"      primary    {fleet.path(fleet.primary)}")
    print(f"      alternate  {fleet.path(fleet.alternate) or '(none)'}")
    if fleet.term_primary != fleet.primary:
        print(f"    note: {TERM}'s primary differs: {fleet.path(fleet.term_primary)}")
    print(f"    laptop metrics: http://127.0.0.1:{fleet.ports['metrics']}/metrics")
    print(f"    admin console (home, via entry's ingress): {console_url(fleet)}")


async def _route_table(fleet: Fleet) -> None:
    status = await fetch_status(fleet.admin("laptop"))
    rows = [
        {
            "service": r["service"], "class": r["class"], "rank": r["rank"],
            "path": fleet.path(r["path"]), "failures": r["failures"],
            "last_failure": r["last_failure"],
        }
        for r in status.get("routes", [])
    ]  # fmt: skip
    print("\n    laptop's routes (accessfabric status):")
    for line in table(rows):
        print("  ", line)


async def _ping_home(fleet: Fleet) -> dict[str, Any]:
    """``accessfabric ping home`` on laptop (its admin socket): laptop has no session
    to home, so the echo goes on a route lease to ``echo:<home>``, through the relays."""
    import aiohttp

    print("\n    accessfabric ping home (from laptop, on a route lease to home's own echo):")
    connector = aiohttp.UnixConnector(path=str(fleet.admin("laptop")))
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=60)
            ) as http,
            http.post(
                "http://node/ping", params={"node": fleet.ids["home"], "count": "3"}
            ) as response,
        ):
            document: dict[str, Any] = await response.json()
    except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as error:
        document = {"error": f"laptop's admin socket: {error!r}"}
    if "error" in document:
        print(f"      FAILED  {document['error']}")
        return {"ok": False, "error": document["error"]}
    rtts = document["ping_rtts_ms"]
    print(
        f"      {fleet.path(document['path'])}: {len(rtts)} round trips end to end, "
        f"rtt min/avg/max = {min(rtts):.2f}/{sum(rtts) / len(rtts):.2f}/{max(rtts):.2f} ms"
    )
    return {
        "ok": True,
        "via": document["via"],
        "path": [fleet.label(hop) for hop in document["path"]],
        "rtts_ms": rtts,
    }


def _ms(seconds: float) -> str:
    return "never" if math.isinf(seconds) else f"{seconds * 1e3:.0f} ms"


def _summary(fleet: Fleet, traffic: Traffic) -> None:
    print("\nsummary")
    print(
        f"  bulk downloads    {traffic.copies} x {fleet.file_size >> 20} MiB = "
        f"{traffic.bytes:,} bytes at {traffic.bytes * 8 / traffic.elapsed / 1e6:,.0f} Mbit/s"
    )
    if traffic.mismatches:
        print(f"  sha256            {traffic.mismatches} of {traffic.copies} copies MISMATCHED")
    else:
        print("  sha256            verified for every copy, the one in flight at the kill too")
    print(
        f"  interactive       {len(traffic.rtts)} echoes during the bulk: "
        f"p50 {traffic.pct(0.5) * 1e3:.2f} ms, p99 {traffic.pct(0.99) * 1e3:.2f} ms "
        f"(outside the failover's first second: {traffic.pct_steady(0.99) * 1e3:.2f} ms, "
        f"{traffic.failover_echoes} left out)"
    )
    lost = "none lost" if traffic.ok else "SEE BELOW"
    print(
        f"  relay-a killed    {traffic.failovers} streams resumed via relay-b "
        f"(route failovers), {lost}"
    )
    print(
        f"  recovery          {_ms(traffic.recovery)} from the kill to the answer of the first "
        f"echo sent after it; bulk paused {_ms(traffic.bulk_pause)}"
    )
    for error in traffic.errors:
        print(f"  FAILED            {error}")
    print(f"  result            {'ok' if traffic.ok else 'FAILED'}")


def _number(value: float, scale: float = 1.0, digits: int = 2) -> float | None:
    """A finite figure (``None`` for nan / inf: JSON has neither)."""
    return round(value * scale, digits) if math.isfinite(value) else None


def _summary_json(fleet: Fleet, traffic: Traffic, args: argparse.Namespace) -> Report:
    """The summary as ``--json`` prints it."""
    names = {node_id: fleet.label(node_id) for node_id in fleet.labels}
    slow = traffic.slow_echoes()
    return {
        "nodes": [
            {"name": names[fleet.ids[name]], "node_id": fleet.ids[name], "roles": [ROLES[name]]}
            for name in sorted(ROLES, key=lambda n: _ORDER.index(names[fleet.ids[n]]))
        ],
        "ready_after_s": round(fleet.ready_after, 2),
        "routes": {
            "primary": [names.get(hop, hop) for hop in fleet.primary],
            "alternate": [names.get(hop, hop) for hop in fleet.alternate],
        },
        "duration_s": args.duration,
        "bulk": {
            "copies": traffic.copies,
            "file_bytes": fleet.file_size,
            "bytes": traffic.bytes,
            "mbit_s": round(traffic.bytes * 8 / traffic.elapsed / 1e6, 1),
            "sha256_mismatches": traffic.mismatches,
        },
        "interactive": {
            "echoes": len(traffic.rtts),
            "p50_ms": _number(traffic.pct(0.5), 1e3),
            "p99_ms": _number(traffic.pct(0.99), 1e3),
            "p99_outside_failover_ms": _number(traffic.pct_steady(0.99), 1e3),
            "failover_echoes": traffic.failover_echoes,
            "over_10ms_count": len(slow),
            "over_10ms": [
                {"at_s": round(at, 3), "rtt_ms": round(rtt * 1e3, 2), "failover": failover}
                for at, rtt, failover in slow[:SLOW_LISTED]
            ],
        },
        "failover": {
            "killed": "relay-a",
            "streams_resumed": traffic.failovers,
            "recovery_ms": _number(traffic.recovery, 1e3, 0),
            "bulk_pause_ms": _number(traffic.bulk_pause, 1e3, 0),
        },
        "errors": list(traffic.errors),
    }


def add_demo_arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument(
        "--json", action="store_true",
        help="the progress on stderr, then the summary as one JSON document on stdout",
    )  # fmt: skip
    demo.add_argument(
        "--control", choices=("sqlite", "etcd"), default="sqlite",
        help="sqlite: one control plane (default); etcd: 3 etcd members and 2 control "
        "replicas, the etcd leader and one replica killed mid-demo (needs etcd-server)",
    )  # fmt: skip
    demo.add_argument(
        "--duration", type=float, default=15.0, metavar="S",
        help="seconds of concurrent bulk + interactive traffic (default 15)",
    )  # fmt: skip
    demo.add_argument(
        "--keep-running", action="store_true",
        help="after the run, keep the nodes up (print the forwarded URL) until Ctrl-C",
    )  # fmt: skip
    demo.add_argument(
        "--size-mib", type=int, default=16, metavar="N",
        help="size of the file home serves and laptop downloads in a loop (default 16)",
    )  # fmt: skip
