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

import asyncio
import importlib
import socket
import statistics
import time
from typing import Any

from accessfabric.bench.common import BenchNode
from accessfabric.bench.quic_common import (
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


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


def bench_protocols(protocol_base: Any, data_event: Any) -> tuple[Any, Any]:
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
    server_class, client_class = bench_protocols(
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
    port = free_udp_port()
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
