"""QUIC and HTTPS-fallback rows for ``accessfabric bench carrier``, beside TCP+TLS.

One process, loopback, the real connect/serve functions of each carrier: one BULK
stream of ``total`` bytes (the receiver answers once it has all of them) and the
session PING round trip, each compared with fabric TCP+TLS measured in the same run; and
qh3 alone (``bench/quic_libs.py``'s one-stream bulk, no fabric) in the same run, the
ceiling of the QUIC row on this machine; and aiopquic alone the same way where it imports
(``bench/quic_aiopquic.py``; not a dependency, ADR 0062).
The session pacer is off on all three (QUIC and the fallback run without it anyway; in
one process both ends share a CPU, which the delay-based pacer would read as a queue).

``bench/carrier.py`` calls :func:`add_extra_rows` from its ``run()``; run alone with
``python -m accessfabric.bench.carrier_extra [--quick]``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from accessfabric.bench import quic_aiopquic, quic_common, quic_libs
from accessfabric.bench.common import BenchNode
from accessfabric.bench.report import BenchReport, BenchResult
from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp, serve_tcp
from accessfabric.node.dialing.https_endpoints import connect_https, serve_https
from accessfabric.node.dialing.quic_endpoints import connect_quic, serve_quic
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.session import SessionConfig
from accessfabric.wire.registry import TrafficClass

HOST = "127.0.0.1"
PIECE = 256 * 1024
PINGS = 200
Pair = tuple[SessionConnection, SessionConnection]
Opener = Callable[[LocalNode, LocalNode], AsyncIterator[Pair]]


async def _accepted(queue: asyncio.Queue[SessionConnection]) -> SessionConnection:
    connection = await asyncio.wait_for(queue.get(), 10)
    await connection.ready()
    return connection


@asynccontextmanager
async def tcp_pair(a: LocalNode, b: LocalNode) -> AsyncIterator[Pair]:
    queue: asyncio.Queue[SessionConnection] = asyncio.Queue()
    server = await serve_tcp(b, HOST, 0, queue.put_nowait)
    port = server.sockets[0].getsockname()[1]
    dialer = await connect_tcp(a, HOST, port, expected_peer_id=b.key.node_id)
    acceptor = await _accepted(queue)
    try:
        yield dialer, acceptor
    finally:
        dialer.abort()
        acceptor.abort()
        server.close()


@asynccontextmanager
async def quic_pair(a: LocalNode, b: LocalNode) -> AsyncIterator[Pair]:
    queue: asyncio.Queue[SessionConnection] = asyncio.Queue()
    server = await serve_quic(b, HOST, 0, queue.put_nowait)
    dialer = await connect_quic(a, HOST, server.port, expected_peer_id=b.key.node_id)
    acceptor = await _accepted(queue)
    try:
        yield dialer, acceptor
    finally:
        dialer.abort()
        acceptor.abort()
        server.close()


@asynccontextmanager
async def _https(a: LocalNode, b: LocalNode) -> AsyncIterator[Pair]:
    queue: asyncio.Queue[SessionConnection] = asyncio.Queue()
    server = await serve_https(b, HOST, 0, queue.put_nowait)
    url = f"https://{HOST}:{server.port}/fabric-poll"
    dialer = await connect_https(a, url, expected_peer_id=b.key.node_id)
    acceptor = await _accepted(queue)
    try:
        yield dialer, acceptor
    finally:
        dialer.abort()
        acceptor.abort()
        await server.wait_closed()


async def bulk_rate(dialer: SessionConnection, acceptor: SessionConnection, total: int) -> float:
    """MB/s of one BULK stream, first byte written to the receiver's answer."""
    piece = b"\xa5" * PIECE

    async def receive() -> None:
        stream = await acceptor.accept_stream()
        assert stream is not None
        got = 0
        while chunk := await stream.read(1 << 20):
            got += len(chunk)
        stream.write(got.to_bytes(8, "big"))
        stream.close()

    receiver = asyncio.create_task(receive())
    started = time.perf_counter()
    stream = await dialer.open_stream("bench", TrafficClass.BULK)
    for _ in range(total // PIECE):
        stream.write(piece)
        await stream.drain()
    stream.close()
    assert int.from_bytes(await stream.readexactly(8), "big") == total
    elapsed = time.perf_counter() - started
    await receiver
    return total / elapsed / 1e6


async def ping_rtt(dialer: SessionConnection, count: int) -> float:
    """Median session PING round trip, microseconds."""
    samples = [await dialer.ping() for _ in range(count)]
    return statistics.median(samples) * 1e6


async def measure(quick: bool, cert_dir: Path) -> dict[str, tuple[float, float]]:
    """{carrier: (bulk MB/s, median RTT us)} for tcp_tls, quic and https_fallback."""
    config = SessionConfig(pacing_target_delay=None)
    a = LocalNode(key=NodeKey.generate(), cert_dir=cert_dir / "a", session_config=config)
    b = LocalNode(key=NodeKey.generate(), cert_dir=cert_dir / "b", session_config=config)
    total = (16 if quick else 64) * 1024 * 1024
    figures: dict[str, tuple[float, float]] = {}
    openers: dict[str, Callable[[LocalNode, LocalNode], object]] = {
        "tcp_tls": tcp_pair, "quic": quic_pair, "https_fallback": _https,
    }  # fmt: skip
    for name, opener in openers.items():
        best = 0.0
        async with opener(a, b) as (dialer, acceptor):  # type: ignore[attr-defined]
            for _ in range(1 if quick else 2):
                best = max(best, await bulk_rate(dialer, acceptor, total))
            rtt = await ping_rtt(dialer, PINGS // 4 if quick else PINGS)
        figures[name] = (best, rtt)
    # qh3 alone, no fabric (bench/quic_libs.py): how far the library itself gets here
    library = BenchNode.make(quic_common.SERVER_SEED, cert_dir / "qh3")
    best = 0.0
    for _ in range(1 if quick else 2):
        alone = await quic_libs.measure_library(
            "qh3", library, bulk_bytes=total, round_trips=PINGS // 4, handshakes=1
        )
        best = max(best, alone.bulk_mb_s)
    figures["qh3_alone"] = (best, alone.rtt_us)
    # aiopquic alone, where it imports (not a dependency; ADR 0062)
    if quic_aiopquic.available():
        library = BenchNode.make(quic_common.SERVER_SEED, cert_dir / "aiopquic")
        best = 0.0
        for _ in range(1 if quick else 2):
            alone = await quic_aiopquic.measure(
                library, bulk_bytes=total, round_trips=PINGS // 4, handshakes=1
            )
            best = max(best, alone.bulk_mb_s)
        figures["aiopquic_alone"] = (best, alone.rtt_us)
    return figures


def extra_results(figures: dict[str, tuple[float, float]]) -> list[BenchResult]:
    tcp_rate, tcp_rtt = figures["tcp_tls"]
    results = []
    rate, rtt = figures["qh3_alone"]
    results.append(BenchResult(
        metric="qh3 alone bulk (1 proc, no fabric)", value=rate, unit="MB/s",
        baseline_metric="fabric tcp_tls bulk (1 proc)", baseline_value=tcp_rate,
    ))  # fmt: skip
    if "aiopquic_alone" in figures:
        rate, rtt = figures["aiopquic_alone"]
        results.append(BenchResult(
            metric="aiopquic alone bulk (1 proc, no fabric)", value=rate, unit="MB/s",
            baseline_metric="fabric tcp_tls bulk (1 proc)", baseline_value=tcp_rate,
        ))  # fmt: skip
    for name in ("quic", "https_fallback"):
        rate, rtt = figures[name]
        results.append(BenchResult(
            metric=f"fabric {name} bulk (1 proc)", value=rate, unit="MB/s",
            baseline_metric="fabric tcp_tls bulk (1 proc)", baseline_value=tcp_rate,
        ))  # fmt: skip
        results.append(BenchResult(
            metric=f"fabric {name} ping RTT", value=rtt, unit="us",
            baseline_metric="fabric tcp_tls ping RTT", baseline_value=tcp_rtt,
        ))  # fmt: skip
    return results


def add_extra_rows(report: BenchReport, quick: bool) -> None:
    """Measure and append the QUIC and HTTPS-fallback rows (runs its own event loop)."""
    with tempfile.TemporaryDirectory(prefix="afbench-extra-") as tmp:
        figures = asyncio.run(measure(quick, Path(tmp)))
    for result in extra_results(figures):
        report.add(result)
    report.notes["https_fallback"] = (
        "emergency path: HTTP/1.1 long-poll, 256 KiB batches, one request in flight per "
        "direction (docs/adr/0009-https-fallback.md)"
    )


if __name__ == "__main__":
    standalone = BenchReport(suite="carrier (extra rows)")
    add_extra_rows(standalone, quick="--quick" in sys.argv)
    print(standalone.to_table())
