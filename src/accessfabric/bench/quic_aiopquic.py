"""aiopquic (picoquic in a thread of its own) on ``bench/quic_libs.py``'s measures.

aiopquic shapes its API like qh3's (``QuicConfiguration``, ``connect``, ``serve``,
``QuicConnectionProtocol``, the same event classes) but is not a drop-in: picoquic runs
in a network thread of its own that owns the UDP socket, the event loop only drains an
event ring, ``send_stream_data`` raises ``BufferError`` when the stream's send ring is
full (``send_stream_data_drained`` waits instead), ``serve`` binds every address of the
port it is given (there is no host argument and no port 0 read-back), and a client pins a
certificate only as a trust root (``cafile``) with the name checked against it.

So the measures here are the same as qh3's (one stream of ``bulk_bytes``, the server
answers ``b"done"`` at its end; 64-byte echoes; handshakes) with the fabric's own
Ed25519 certificate as the client's only root and the server's node id as the name —
the closest aiopquic comes to the carrier's pin. The server still listens on every
address of a free port chosen by binding ``127.0.0.1:0`` first; the client only talks to
``127.0.0.1``.

aiopquic declares Python >= 3.12; built from its sdist on this project's 3.11 it runs
(ADR 0062). It is not a project dependency: :func:`available` tells whether it imports.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from accessfabric.bench.common import BenchNode, run_async
from accessfabric.bench.quic_libs import (
    BULK,
    ECHO,
    HOST,
    PIECE,
    WINDOW,
    LibraryFigures,
)
from accessfabric.identity.tls import write_certificate_files

LIBRARY = "aiopquic"


def available() -> bool:
    """True when aiopquic imports in this interpreter."""
    try:
        importlib.import_module("aiopquic.asyncio.client")
    except ImportError:
        return False
    return True


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


def _protocols(protocol_base: Any, data_event: Any) -> tuple[Any, Any]:
    class ServerProtocol(protocol_base):  # type: ignore[misc]
        """Counts bulk streams, echoes echo streams (as quic_libs' qh3 server)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.kinds: dict[int, bytes] = {}

        def quic_event_received(self, event: Any) -> None:
            if not isinstance(event, data_event):
                return
            data = bytes(event.data)
            kind = self.kinds.get(event.stream_id)
            if kind is None and data:
                kind = self.kinds[event.stream_id] = data[:1]
                data = data[1:]
            if kind == ECHO and data:
                self._quic.send_stream_data(event.stream_id, data)
            if kind == BULK and event.end_stream:
                self._quic.send_stream_data(event.stream_id, b"done", end_stream=True)

    class ClientProtocol(protocol_base):  # type: ignore[misc]
        """Resolves one waiter per expected answer size."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.waiter: asyncio.Future[None] | None = None
            self.expected = 0
            self.received = 0

        def quic_event_received(self, event: Any) -> None:
            if isinstance(event, data_event):
                self.received += len(event.data)
                waiter = self.waiter
                if waiter is not None and self.received >= self.expected and not waiter.done():
                    waiter.set_result(None)

        def expect(self, nbytes: int) -> asyncio.Future[None]:
            self.received = 0
            self.expected = nbytes
            self.waiter = asyncio.get_running_loop().create_future()
            return self.waiter

    return ServerProtocol, ClientProtocol


async def measure(
    server: BenchNode,
    *,
    bulk_bytes: int,
    round_trips: int,
    handshakes: int = 5,
    options: dict[str, Any] | None = None,
) -> LibraryFigures:
    """Bulk rate (and its CPU), echo RTT and handshake time of aiopquic over loopback.

    ``options`` are extra ``QuicConfiguration`` fields for both ends (e.g.
    ``congestion_control_algorithm``).
    """
    package = importlib.import_module("aiopquic")
    client_module = importlib.import_module("aiopquic.asyncio.client")
    server_module = importlib.import_module("aiopquic.asyncio.server")
    protocol_module = importlib.import_module("aiopquic.asyncio.protocol")
    configuration_module = importlib.import_module("aiopquic.quic.configuration")
    events = importlib.import_module("aiopquic.quic.events")
    configuration_class = configuration_module.QuicConfiguration
    server_class, client_class = _protocols(
        protocol_module.QuicConnectionProtocol, events.StreamDataReceived
    )
    cert_path, key_path = write_certificate_files(server.key, server.cert_dir)
    server_config = configuration_class(
        is_client=False,
        alpn_protocols=["afbench"],
        max_data=WINDOW,
        max_stream_data=WINDOW,
        **(options or {}),
    )
    server_config.load_cert_chain(str(cert_path), str(key_path))
    # the server's own self-signed certificate is the client's only root, its node id the
    # name: another key, or another name, fails the handshake (ADR 0062)
    client_config = configuration_class(
        is_client=True,
        alpn_protocols=["afbench"],
        max_data=WINDOW,
        max_stream_data=WINDOW,
        cafile=str(cert_path),
        server_name=server.key.node_id,
        **(options or {}),
    )
    port = _free_udp_port()
    quic_server = await server_module.serve(
        HOST, port, configuration=server_config, create_protocol=server_class
    )
    connect = client_module.connect
    try:
        handshake_times = []
        for _ in range(handshakes):
            started = time.perf_counter()
            async with connect(HOST, port, configuration=client_config):
                handshake_times.append(time.perf_counter() - started)
        async with connect(
            HOST, port, configuration=client_config, create_protocol=client_class
        ) as client:
            quic = client._quic
            stream_id = quic.get_next_available_stream_id()
            done = client.expect(4)
            piece = bytes(PIECE)
            cpu_started = time.process_time()
            loop_cpu_started = time.thread_time()
            started = time.perf_counter()
            await quic.send_stream_data_drained(stream_id, BULK)
            sent = 0
            while sent < bulk_bytes:
                chunk = piece[: min(PIECE, bulk_bytes - sent)]
                sent += len(chunk)
                await quic.send_stream_data_drained(stream_id, chunk, end_stream=sent >= bulk_bytes)
            await done
            bulk_seconds = time.perf_counter() - started
            bulk_cpu = time.process_time() - cpu_started
            bulk_loop_cpu = time.thread_time() - loop_cpu_started
            stream_id = quic.get_next_available_stream_id()
            message = bytes(64)
            quic.send_stream_data(stream_id, ECHO)
            rtts = []
            for _ in range(round_trips):
                answer = client.expect(len(message))
                started = time.perf_counter()
                quic.send_stream_data(stream_id, message)
                await answer
                rtts.append(time.perf_counter() - started)
    finally:
        quic_server.close()
    return LibraryFigures(
        library=LIBRARY,
        version=str(getattr(package, "__version__", "?")),
        bulk_mb_s=bulk_bytes / bulk_seconds / 1e6,
        rtt_us=statistics.median(rtts) * 1e6,
        handshake_ms=statistics.median(handshake_times) * 1e3,
        bulk_cpu_s=bulk_cpu,
        bulk_loop_cpu_s=bulk_loop_cpu,
        bulk_bytes=bulk_bytes,
    )


async def alternate(cert_dir: Path, *, rounds: int, bulk_bytes: int) -> list[dict[str, float]]:
    """``rounds`` A/B rounds in one process: fabric TCP+TLS and QUIC, qh3 and aiopquic alone.

    The order flips every round (qh3 then aiopquic, then the other way) so neither library
    always runs right after the fabric rows. Each round: MB/s and CPU s/GiB of each, and
    the 1-minute load average when the round began.
    """
    from accessfabric.bench import carrier_extra
    from accessfabric.bench.quic_libs import SERVER_SEED, cpu_per_gib, measure_library
    from accessfabric.identity.keys import NodeKey
    from accessfabric.node.dialing.endpoints import LocalNode
    from accessfabric.session import SessionConfig

    config = SessionConfig(pacing_target_delay=None)
    a = LocalNode(key=NodeKey.generate(), cert_dir=cert_dir / "a", session_config=config)
    b = LocalNode(key=NodeKey.generate(), cert_dir=cert_dir / "b", session_config=config)
    library_node = BenchNode.make(SERVER_SEED, cert_dir / "libs")
    rows: list[dict[str, float]] = []
    for number in range(rounds):
        row: dict[str, float] = {"round": number, "load1": os.getloadavg()[0]}
        for name, opener in (
            ("fabric_tcp_tls", carrier_extra._tcp),
            ("fabric_quic", carrier_extra._quic),
        ):
            async with opener(a, b) as (dialer, acceptor):
                cpu = time.process_time()
                row[name] = await carrier_extra._bulk(dialer, acceptor, bulk_bytes)
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
    the event loop thread's CPU s/GiB of each, and the 1-minute load average."""
    from accessfabric.bench import carrier_extra
    from accessfabric.bench.quic_aiopquic_carrier import aiopquic_pair
    from accessfabric.identity.keys import NodeKey
    from accessfabric.node.dialing.endpoints import LocalNode
    from accessfabric.session import SessionConfig

    config = SessionConfig(pacing_target_delay=None)
    a = LocalNode(key=NodeKey.generate(), cert_dir=cert_dir / "a", session_config=config)
    b = LocalNode(key=NodeKey.generate(), cert_dir=cert_dir / "b", session_config=config)
    openers: dict[str, Any] = {
        "fabric_tcp_tls": carrier_extra._tcp,
        "fabric_quic_qh3": carrier_extra._quic,
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
                row[name] = await carrier_extra._bulk(dialer, acceptor, bulk_bytes)
                gib = bulk_bytes / (1 << 30)
                row[f"{name}_cpu_s_gib"] = (time.process_time() - cpu) / gib
                row[f"{name}_loop_cpu_s_gib"] = (time.thread_time() - loop_cpu) / gib
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
