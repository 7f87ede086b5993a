"""Alternating A/B rounds: qh3 and aiopquic alone, and the fabric over each (ADR 0062).

``python -m accessfabric.bench.quic_ab --rounds N [--mib 64]``: per round, in one
process, one BULK fabric stream over TCP+TLS and over the qh3 carrier, then qh3 and
aiopquic alone (``bench/quic_libs.py``'s bulk), the two libraries' order flipped every
round; ``--carrier``: fabric TCP+TLS, the qh3 carrier and a fabric session over one
aiopquic stream (``bench/quic_aiopquic_carrier.py``: bench only, no channel binding).
Each row: MB/s, CPU s/GiB (process, and the event loop's thread), the load average.
Needs aiopquic importable (it is not a dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from accessfabric.bench import carrier_extra
from accessfabric.bench.common import BenchNode, run_async
from accessfabric.bench.quic_aiopquic import LIBRARY, available
from accessfabric.bench.quic_aiopquic_carrier import aiopquic_pair
from accessfabric.bench.quic_common import SERVER_SEED, cpu_per_gib
from accessfabric.bench.quic_libs import measure_library
from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.endpoints import LocalNode
from accessfabric.session import SessionConfig

PINGS = 100


async def alternate(cert_dir: Path, *, rounds: int, bulk_bytes: int) -> list[dict[str, float]]:
    """``rounds`` A/B rounds in one process: fabric TCP+TLS and QUIC, qh3 and aiopquic alone.

    The order flips every round (qh3 then aiopquic, then the other way) so neither library
    always runs right after the fabric rows. Each round: MB/s and CPU s/GiB of each, and
    the 1-minute load average when the round began.
    """
    config = SessionConfig(pacing_target_delay=None)
    a = LocalNode(key=NodeKey.generate(), cert_dir=cert_dir / "a", session_config=config)
    b = LocalNode(key=NodeKey.generate(), cert_dir=cert_dir / "b", session_config=config)
    library_node = BenchNode.make(SERVER_SEED, cert_dir / "libs")
    rows: list[dict[str, float]] = []
    for number in range(rounds):
        row: dict[str, float] = {"round": number, "load1": os.getloadavg()[0]}
        for name, opener in (
            ("fabric_tcp_tls", carrier_extra.tcp_pair),
            ("fabric_quic", carrier_extra.quic_pair),
        ):
            async with opener(a, b) as (dialer, acceptor):
                cpu = time.process_time()
                row[name] = await carrier_extra.bulk_rate(dialer, acceptor, bulk_bytes)
                row[f"{name}_cpu_s_gib"] = (time.process_time() - cpu) / (bulk_bytes / (1 << 30))
        order = ("qh3", LIBRARY) if number % 2 == 0 else (LIBRARY, "qh3")
        for library in order:
            figures = await measure_library(
                library, library_node, bulk_bytes=bulk_bytes, round_trips=50, handshakes=1
            )
            row[library] = figures.bulk_mb_s
            row[f"{library}_cpu_s_gib"] = cpu_per_gib(figures)
            row[f"{library}_loop_cpu_s_gib"] = cpu_per_gib(figures, loop_only=True)
            row[f"{library}_rtt_us"] = figures.rtt_us
        rows.append(row)
        print(json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
    return rows


async def alternate_carriers(
    cert_dir: Path, *, rounds: int, bulk_bytes: int
) -> list[dict[str, float]]:
    """``rounds`` rounds in one process: one BULK fabric stream over TCP+TLS, over the qh3
    carrier and over one aiopquic stream (``bench/quic_aiopquic_carrier.py``: bench only,
    no channel binding); the QUIC two swap places every round. MB/s, process CPU s/GiB and
    the event loop thread's CPU s/GiB of each, the median session PING round trip after
    the bulk (``PINGS`` of them), and the 1-minute load average."""
    config = SessionConfig(pacing_target_delay=None)
    a = LocalNode(key=NodeKey.generate(), cert_dir=cert_dir / "a", session_config=config)
    b = LocalNode(key=NodeKey.generate(), cert_dir=cert_dir / "b", session_config=config)
    openers: dict[str, Any] = {
        "fabric_tcp_tls": carrier_extra.tcp_pair,
        "fabric_quic_qh3": carrier_extra.quic_pair,
        "fabric_aiopquic": aiopquic_pair,
    }
    rows: list[dict[str, float]] = []
    for number in range(rounds):
        row: dict[str, float] = {"round": number, "load1": os.getloadavg()[0]}
        names = ["fabric_tcp_tls", "fabric_quic_qh3", "fabric_aiopquic"]
        if number % 2:
            names[1], names[2] = names[2], names[1]
        for name in names:
            async with openers[name](a, b) as (dialer, acceptor):
                cpu, loop_cpu = time.process_time(), time.thread_time()
                row[name] = await carrier_extra.bulk_rate(dialer, acceptor, bulk_bytes)
                gib = bulk_bytes / (1 << 30)
                row[f"{name}_cpu_s_gib"] = (time.process_time() - cpu) / gib
                row[f"{name}_loop_cpu_s_gib"] = (time.thread_time() - loop_cpu) / gib
                row[f"{name}_ping_us"] = await carrier_extra.ping_rtt(dialer, PINGS)
        rows.append(row)
        print(json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=alternate.__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--carrier", action="store_true", help=alternate_carriers.__doc__)
    args = parser.parse_args()
    if not available():
        raise SystemExit("aiopquic does not import here (not a dependency; ADR 0062)")
    if args.carrier:
        with tempfile.TemporaryDirectory(prefix="af-aiopquic-") as tmp:
            rows = run_async(
                alternate_carriers(Path(tmp), rounds=args.rounds, bulk_bytes=args.mib << 20)
            )
        for key in ("fabric_quic_qh3", "fabric_aiopquic"):
            ratios = [row[key] / row["fabric_tcp_tls"] for row in rows]
            print(f"{key} / fabric_tcp_tls: " + ", ".join(f"{r:.2f}" for r in ratios))
        ratios = [row["fabric_aiopquic"] / row["fabric_quic_qh3"] for row in rows]
        print("fabric_aiopquic / fabric_quic_qh3: " + ", ".join(f"{r:.2f}" for r in ratios))
        return
    with tempfile.TemporaryDirectory(prefix="af-aiopquic-") as tmp:
        rows = run_async(alternate(Path(tmp), rounds=args.rounds, bulk_bytes=args.mib << 20))
    for key in ("fabric_quic", "qh3", LIBRARY):
        ratios = [row[key] / row["fabric_tcp_tls"] for row in rows]
        print(f"{key} / fabric_tcp_tls: " + ", ".join(f"{r:.2f}" for r in ratios))
    ratios = [row[LIBRARY] / row["qh3"] for row in rows]
    print(f"{LIBRARY} / qh3: " + ", ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    main()
