"""CPU per byte of ``bench carrier``'s bulk transfers alone (issue 18, ADR 0054).

``python -m accessfabric.bench.carrier_cpu [--mib 512] [--rounds 1] [--kinds raw_tls,fabric_tcp]``
moves ``--mib`` MiB per kind over loopback exactly as ``accessfabric bench carrier`` does
(the receivers in a second process), and prints per kind the wall rate, the least CPU
seconds per GiB of the sender and the receiver over the rounds, and for the fabric the
sender's stream credit stalls.  Kinds: ``raw_tls``, ``fabric_tcp`` (paced),
``fabric_tcp_unpaced``.  No websockets, h2 or QUIC rows: a run of 512 MiB per kind takes
seconds, so alternating A/B runs of two trees (``PYTHONPATH=<tree>/src``) fit between
the swings of a shared machine.  Attach ``perf record -g`` or ``py-spy record
--subprocesses`` to it for profiles of one path.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from accessfabric.bench import carrier
from accessfabric.bench.common import run_async
from accessfabric.bench.report import BenchReport
from accessfabric.node.streams.connection import SessionConnection

KINDS = ("raw_tls", "fabric_tcp", "fabric_tcp_unpaced")
GiB = 1 << 30


def _count_stalls(stalls: list[int]) -> None:
    """Record each fabric sender's stream credit stalls when it says GOAWAY (patches
    ``SessionConnection.goaway`` for good: this runs as its own process)."""
    goaway = SessionConnection.goaway

    async def counting(self: SessionConnection, *args: object, **kwargs: object) -> None:
        stalls.append(self.session.credit_stalls)
        await goaway(self, *args, **kwargs)  # type: ignore[arg-type]

    SessionConnection.goaway = counting  # type: ignore[method-assign]


def _sender(
    ctx: carrier._Context, kind: str, total: int, piece: bytes
) -> Callable[[], Awaitable[float]]:
    if kind == "raw_tls":
        return lambda: carrier._send_raw_tls(ctx, total, piece)
    return lambda: carrier._send_fabric(ctx, kind, total, piece)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m accessfabric.bench.carrier_cpu")
    parser.add_argument("--mib", type=int, default=512, help="MiB per transfer")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--kinds", default="raw_tls,fabric_tcp", help=",".join(KINDS))
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",")
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown kinds: {sorted(unknown)}")
    total = args.mib * carrier.MiB
    stalls: list[int] = []
    _count_stalls(stalls)

    async def run_all(ctx: carrier._Context, quick: bool, processes: int) -> BenchReport:
        piece = os.urandom(carrier.WRITE)
        for _ in range(args.rounds):
            for kind in kinds:
                stalls.clear()  # this transfer's sender only
                count, seconds = await carrier._measure(ctx, kind, _sender(ctx, kind, total, piece))
                if count != total:
                    raise RuntimeError(f"{kind}: receiver counted {count} of {total} bytes")
                said = stalls[-1] if stalls else "unknown (no GOAWAY seen)"
                extra = f", sender credit stalls {said}" if kind != "raw_tls" else ""
                print(f"{kind}: {count / seconds / 1e6:.0f} MB/s{extra}", flush=True)
        for kind, (sender, receiver) in ctx.cpu.items():
            print(f"{kind}: CPU s/GiB sender {sender * GiB:.2f} receiver {receiver * GiB:.2f}")
        return BenchReport("carrier_cpu")

    carrier._run_all = run_all  # the same set-up, these rows only
    with tempfile.TemporaryDirectory(prefix="af-carrier-cpu-") as tmp:
        run_async(carrier._main(False, 2, Path(tmp) / "tls"))


if __name__ == "__main__":
    main()
