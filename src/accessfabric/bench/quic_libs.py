"""qh3 against aioquic, side by side in one run: one stream of bulk bytes and small-message RTT.

Both libraries share aioquic's API shape (qh3 is a fork with a native packet core), so
one driver measures both with the same certificates (the fabric's Ed25519 self-signed
ones), the same windows and the same event loop, over ``127.0.0.1`` only:

* **bulk**: the client writes ``total`` bytes on one bidirectional stream and ends
  it; the server counts them and answers ``b"done"`` when it saw the end.  The rate is
  ``total / (answer received - first write)``; the handshake is not timed.
* **rtt**: 64-byte messages echoed by the server on one stream, one at a time; the
  median of ``round_trips`` round trips.
* **handshake**: connect + TLS 1.3 handshake + close, the median of a few.

qh3's server reads like the carrier's (``carriers/quic_server.py``: GRO reads, each
burst handed to its connection at once); aioquic's is its own ``serve()``.

Client and server share one process and one event loop (what a test or a single
node sees; the carrier bench runs the fabric across processes).  The qh3 client adds
Ed25519 to its signature algorithms and pins the server certificate's SHA-256
(``assert_fingerprint``); aioquic has no pinning hook, so its client runs with
``CERT_NONE`` here — acceptable for a benchmark, not for the carrier.

Run: ``python -m accessfabric.bench.quic_libs [--quick]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from accessfabric.bench import quic_aiopquic
from accessfabric.bench.common import BenchNode, machine_note, run_async
from accessfabric.bench.quic_common import (
    BULK,
    ECHO,
    ED25519_SIGNATURE_ALGORITHM,
    HOST,
    PIECE,
    SERVER_SEED,
    WINDOW,
    LibraryFigures,
    MiB,
    cpu_per_gib,
)
from accessfabric.bench.report import BenchReport, BenchResult
from accessfabric.identity.tls import write_certificate_files

LIBRARIES = ("qh3", "aiopquic", "aioquic")


def library_modules(library: str) -> tuple[Any, Any, Any, Any]:
    """(asyncio package, QuicConfiguration, events module, version) of ``library``."""
    package = importlib.import_module(library)
    aio = importlib.import_module(f"{library}.asyncio")
    configuration = importlib.import_module(f"{library}.quic.configuration")
    events = importlib.import_module(f"{library}.quic.events")
    return aio, configuration.QuicConfiguration, events, getattr(package, "__version__", "?")


def server_protocol(aio: Any, events: Any) -> Any:
    class BenchServerProtocol(aio.QuicConnectionProtocol):  # type: ignore[misc]
        """Counts bulk streams, echoes echo streams."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.kinds: dict[int, bytes] = {}

        def quic_event_received(self, event: Any) -> None:
            if not isinstance(event, events.StreamDataReceived):
                return
            data = event.data
            kind = self.kinds.get(event.stream_id)
            if kind is None and data:
                kind = self.kinds[event.stream_id] = data[:1]
                data = data[1:]
            if kind == ECHO and data:
                self._quic.send_stream_data(event.stream_id, data)
                self.transmit()
            if kind == BULK and event.end_stream:
                self._quic.send_stream_data(event.stream_id, b"done", end_stream=True)
                self.transmit()

    return BenchServerProtocol


def client_protocol(aio: Any, events: Any) -> Any:
    class BenchClientProtocol(aio.QuicConnectionProtocol):  # type: ignore[misc]
        """Resolves one waiter per expected answer size."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.waiter: asyncio.Future[None] | None = None
            self.expected = 0
            self.received = 0

        def quic_event_received(self, event: Any) -> None:
            if isinstance(event, events.StreamDataReceived):
                self.received += len(event.data)
                waiter = self.waiter
                if waiter is not None and self.received >= self.expected and not waiter.done():
                    waiter.set_result(None)

        def expect(self, nbytes: int) -> asyncio.Future[None]:
            self.received = 0
            self.expected = nbytes
            self.waiter = asyncio.get_running_loop().create_future()
            return self.waiter

    return BenchClientProtocol


def configurations(library: str, configuration_class: Any, server: BenchNode) -> tuple[Any, Any]:
    cert_path, key_path = write_certificate_files(server.key, server.cert_dir)
    server_config = configuration_class(
        is_client=False, alpn_protocols=["afbench"], max_data=WINDOW, max_stream_data=WINDOW
    )
    server_config.load_cert_chain(str(cert_path), str(key_path))
    client_config = configuration_class(
        is_client=True, alpn_protocols=["afbench"], max_data=WINDOW, max_stream_data=WINDOW
    )
    client_config.verify_mode = ssl.CERT_NONE
    if library == "qh3":
        from qh3.tls import Context

        der = ssl.PEM_cert_to_DER_cert(cert_path.read_text())
        client_config.assert_fingerprint = hashlib.sha256(der).hexdigest()
        defaults = list(Context(is_client=True)._signature_algorithms)
        client_config.signature_algorithms = [ED25519_SIGNATURE_ALGORITHM, *defaults]
    return server_config, client_config


async def measure_library(
    library: str, server: BenchNode, *, bulk_bytes: int, round_trips: int, handshakes: int = 5
) -> LibraryFigures:
    """Bulk rate, echo RTT and handshake time of ``library`` over loopback."""
    if library == "aiopquic":
        return await quic_aiopquic.measure(
            server, bulk_bytes=bulk_bytes, round_trips=round_trips, handshakes=handshakes
        )
    aio, configuration_class, events, version = library_modules(library)
    server_config, client_config = configurations(library, configuration_class, server)
    if library == "qh3":
        # the carrier's receive path: GRO reads, a burst per connection at once
        from accessfabric.carriers.quic_adapter import create_udp_endpoint
        from accessfabric.carriers.quic_server import batching_quic_server

        quic_server: Any = batching_quic_server(server_config, server_protocol(aio, events))
        await create_udp_endpoint(lambda: quic_server, HOST, 0)
    else:
        quic_server = await aio.serve(
            HOST, 0, configuration=server_config, create_protocol=server_protocol(aio, events)
        )
    port = quic_server._transport.get_extra_info("sockname")[1]
    client_class = client_protocol(aio, events)
    try:
        handshake_times = []
        for _ in range(handshakes):
            started = time.perf_counter()
            async with aio.connect(HOST, port, configuration=client_config) as client:
                handshake_times.append(time.perf_counter() - started)
                await client.ping()
        async with aio.connect(
            HOST, port, configuration=client_config, create_protocol=client_class
        ) as client:
            quic = client._quic
            # bulk
            stream_id = quic.get_next_available_stream_id()
            done = client.expect(4)
            piece = bytes(PIECE)
            cpu_started = time.process_time()
            loop_cpu_started = time.thread_time()
            started = time.perf_counter()
            quic.send_stream_data(stream_id, BULK)
            sent = 0
            while sent < bulk_bytes:
                chunk = piece[: min(PIECE, bulk_bytes - sent)]
                sent += len(chunk)
                quic.send_stream_data(stream_id, chunk, end_stream=sent >= bulk_bytes)
            client.transmit()
            await done
            bulk_seconds = time.perf_counter() - started
            bulk_cpu = time.process_time() - cpu_started
            bulk_loop_cpu = time.thread_time() - loop_cpu_started
            # rtt
            stream_id = quic.get_next_available_stream_id()
            message = bytes(64)
            quic.send_stream_data(stream_id, ECHO)
            rtts = []
            for _ in range(round_trips):
                answer = client.expect(len(message))
                started = time.perf_counter()
                quic.send_stream_data(stream_id, message)
                client.transmit()
                await answer
                rtts.append(time.perf_counter() - started)
    finally:
        quic_server.close()
    return LibraryFigures(
        library=library,
        version=str(version),
        bulk_mb_s=bulk_bytes / bulk_seconds / 1e6,
        rtt_us=statistics.median(rtts) * 1e6,
        handshake_ms=statistics.median(handshake_times) * 1e3,
        bulk_cpu_s=bulk_cpu,
        bulk_loop_cpu_s=bulk_loop_cpu,
        bulk_bytes=bulk_bytes,
    )


async def compare(
    cert_dir: Path,
    *,
    bulk_bytes: int,
    round_trips: int,
    rounds: int,
    every: list[LibraryFigures] | None = None,
) -> list[LibraryFigures]:
    """Best of ``rounds`` for each installed library, interleaved so all see the same machine.

    ``every``, when given, receives each round's figures in the order they were taken.
    """
    server = BenchNode.make(SERVER_SEED, cert_dir)
    best: dict[str, LibraryFigures] = {}
    for _ in range(rounds):
        for library in LIBRARIES:
            try:
                importlib.import_module(library)
            except ImportError:
                continue
            figures = await measure_library(
                library, server, bulk_bytes=bulk_bytes, round_trips=round_trips
            )
            if every is not None:
                every.append(figures)
            previous = best.get(library)
            if previous is None or figures.bulk_mb_s > previous.bulk_mb_s:
                best[library] = LibraryFigures(
                    library=library,
                    version=figures.version,
                    bulk_mb_s=figures.bulk_mb_s,
                    rtt_us=min(figures.rtt_us, previous.rtt_us if previous else figures.rtt_us),
                    handshake_ms=figures.handshake_ms,
                    bulk_cpu_s=figures.bulk_cpu_s,
                    bulk_bytes=figures.bulk_bytes,
                    bulk_loop_cpu_s=figures.bulk_loop_cpu_s,
                )
    return list(best.values())


def run(quick: bool) -> BenchReport:
    """The ``quic_libs`` suite: qh3 against aioquic, and aiopquic against qh3 where it imports."""
    bulk_bytes = (16 if quick else 64) * MiB
    round_trips = 300 if quick else 2000
    rounds = 1 if quick else 3
    every: list[LibraryFigures] = []
    with tempfile.TemporaryDirectory(prefix="af-quic-bench-") as tmp:
        figures = run_async(
            compare(
                Path(tmp),
                bulk_bytes=bulk_bytes,
                round_trips=round_trips,
                rounds=rounds,
                every=every,
            )
        )
    report = BenchReport("quic_libs")
    by_name = {f.library: f for f in figures}
    qh3, aioquic = by_name.get("qh3"), by_name.get("aioquic")
    if qh3 is not None and aioquic is not None:
        report.add(
            BenchResult(
                metric=f"qh3 {qh3.version} one stream",
                value=qh3.bulk_mb_s,
                unit="MB/s",
                baseline_metric=f"aioquic {aioquic.version} one stream",
                baseline_value=aioquic.bulk_mb_s,
            )
        )
        report.add(
            BenchResult(
                metric="qh3 64 B echo RTT (median)",
                value=qh3.rtt_us,
                unit="us",
                baseline_metric="aioquic 64 B echo RTT",
                baseline_value=aioquic.rtt_us,
            )
        )
        report.add(
            BenchResult(
                metric="qh3 handshake (median)",
                value=qh3.handshake_ms,
                unit="ms",
                baseline_metric="aioquic handshake",
                baseline_value=aioquic.handshake_ms,
            )
        )
    aiopquic = by_name.get("aiopquic")
    if qh3 is not None and aiopquic is not None:
        report.add(
            BenchResult(
                metric=f"aiopquic {aiopquic.version} one stream",
                value=aiopquic.bulk_mb_s,
                unit="MB/s",
                baseline_metric=f"qh3 {qh3.version} one stream",
                baseline_value=qh3.bulk_mb_s,
            )
        )
        report.add(
            BenchResult(
                metric="aiopquic 64 B echo RTT (median)",
                value=aiopquic.rtt_us,
                unit="us",
                baseline_metric="qh3 64 B echo RTT",
                baseline_value=qh3.rtt_us,
            )
        )
    for f in figures:
        report.notes[f.library] = (
            f"{f.version}: {f.bulk_mb_s:.1f} MB/s, RTT {f.rtt_us:.0f} us, "
            f"handshake {f.handshake_ms:.1f} ms"
        )
    report.notes["rounds"] = "; ".join(
        f"{f.library} {f.bulk_mb_s:.1f} MB/s {cpu_per_gib(f):.1f} CPU s/GiB "
        f"(loop thread {cpu_per_gib(f, loop_only=True):.1f})"
        for f in every
    )
    report.notes["setup"] = (
        f"one process, 127.0.0.1, {bulk_bytes // MiB} MiB bulk, "
        f"{round_trips} round trips, best of {rounds}; {machine_note()}"
    )
    return report


def main() -> None:
    report = run(quick="--quick" in sys.argv[1:])
    print(report.to_table())


if __name__ == "__main__":
    main()
