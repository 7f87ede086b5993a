"""``accessfabric demo`` (what ``make demo`` runs): the fabric on loopback, no config, no root.

1. control plane — ``control init`` + ``control serve`` (SQLite in a temp dir); five
   nodes (laptop, entry, relay-a, relay-b, home) enroll with role tokens, heartbeat
   their links, home registers the ``web`` service; the planner's route lease for
   laptop -> web is printed (primary and alternate).
2. data path — ``node run`` processes: home hosts ``web`` (a Python HTTP server with a
   random file) and the built-in ``echo``; laptop forwards ``127.0.0.1:P`` to both
   (``web`` in class bulk, ``echo`` interactive).  A bulk download loop (sha256 of every
   copy checked) and an interactive echo session run at the same time; a live view
   prints per-class throughput (scraped from laptop's ``/metrics``) and interactive
   round-trip times.  See :mod:`accessfabric.demo_data`.
3. relays — five node processes (:mod:`accessfabric.demo_relay`) on the control
   plane's leases: a sealed bulk stream and an interactive echo through laptop ->
   entry -> relay-a -> home; relay-a is SIGKILLed a third of the way through and
   the streams resume via relay-b from their last end-to-end ACK.  Without relay
   leases it falls back to the in-memory resume (:mod:`accessfabric.demo_memory`)
   and says so.
4. summary, exit 0; every process started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

from accessfabric.demo_control import enroll_fleet, start_control
from accessfabric.demo_data import DataResult, run_data_path
from accessfabric.demo_memory import MemoryResult, run_memory_resume
from accessfabric.demo_procs import Processes
from accessfabric.demo_relay import RelayResult, run_relay_path


def run_demo(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="accessfabric-demo-"))
    procs = Processes(work)
    try:
        return asyncio.run(_main(args, work, procs))
    except KeyboardInterrupt:
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


async def _main(args: argparse.Namespace, work: Path, procs: Processes) -> int:
    print("accessfabric demo — everything on loopback, in", work)
    print("\n[1] control plane (SQLite) and five enrolled nodes")
    control = await start_control(work, procs)
    fleet = await enroll_fleet(control, work)
    print("\n[2] TCP forwarding: laptop -> home over a direct fabric session (node run, TLS)")
    data = await run_data_path(work, procs, fleet, args.duration, args.keep_running)
    relay: RelayResult | None = None
    memory: MemoryResult | None = None
    if len(fleet.leases) >= 2:
        print("\n[3] through relays on the control plane's leases: laptop -> entry -> relay-a")
        print("    -> home (alternate via relay-b); sealed bulk + interactive echo; relay-a is")
        print("    killed a third of the way through")
        relay = await run_relay_path(work, procs, fleet, args.relay_mib, 5.0)
        ok = relay.ok
    else:
        print("\n[3] failover: the stream resumes from its last ACK on a new session")
        print("    (IN MEMORY — the control plane issued no relay leases in this run)")
        memory = run_memory_resume(args.size_mib, out=lambda line: print("   ", line))
        ok = memory.ok
    _summary(data, relay, memory)
    return 0 if data.ok and ok else 1


def _summary(data: DataResult, relay: RelayResult | None, memory: MemoryResult | None) -> None:
    print("\nsummary")
    print(f"  bulk downloads    {data.copies} x {data.file_size >> 20} MiB = {data.bytes:,} bytes")
    print(f"  sha256 verified   {'yes, every copy' if data.ok else 'NO — MISMATCH'}")
    print(
        f"  bulk throughput   {data.bytes * 8 / data.elapsed / 1e6:,.0f} Mbit/s through the fabric"
    )
    print(
        f"  interactive       {data.samples} round trips while bulk ran: "
        f"p50 {data.p50 * 1e3:.2f} ms, p99 {data.p99 * 1e3:.2f} ms"
    )
    if relay is not None:
        print(
            f"  relayed bulk      {relay.bytes:,} bytes in {relay.seconds:.1f} s, sha256 "
            f"{'verified end to end' if relay.ok else 'NOT VERIFIED'}; resumed {relay.resumes}x "
            f"after relay-a was killed ({relay.failovers} route failovers)"
        )
        print(
            f"  interactive       {len(relay.rtts)} echoes over the relays: p50 "
            f"{relay.pct(0.5) * 1e3:.2f} ms, p99 {relay.pct(0.99) * 1e3:.2f} ms"
        )
        print(
            f"  recovery          bulk: next 4 MiB mark {relay.bulk_recovery * 1e3:.0f} ms after "
            f"the kill; interactive: next echo {relay.recovery * 1e3:.0f} ms after it"
        )
    if memory is not None:
        print(
            f"  resume (memory)   {memory.delivered:,} of {memory.size:,} bytes, resumed from "
            f"byte {memory.resumed_from:,} in {memory.recovery * 1e3:.1f} ms, "
            f"sha256 {'verified' if memory.ok else 'MISMATCH'}"
        )


def add_demo_arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument(
        "--duration", type=float, default=12.0, metavar="S",
        help="seconds of concurrent bulk + interactive traffic (default 12)",
    )  # fmt: skip
    demo.add_argument(
        "--keep-running", action="store_true",
        help="after the run, keep the nodes up (print the forwarded URL) until Ctrl-C",
    )  # fmt: skip
    demo.add_argument(
        "--relay-mib", type=int, default=96, metavar="N",
        help="size of the sealed bulk stream through the relays (default 96)",
    )  # fmt: skip
    demo.add_argument(
        "--size-mib", type=int, default=32, metavar="N",
        help="size of the in-memory resume download, when no relay lease (default 32)",
    )  # fmt: skip
