"""A bench-only fabric session over one aiopquic stream: what the carrier would move.

**Not a carrier and not secure.**  aiopquic exposes no TLS exporter, no peer certificate
and no pin by node id (ADR 0062), so this pair hands both ends the same random channel
binding in memory, as ``carriers/memory.py`` does: AUTH runs, but binds nothing to the
QUIC connection.  It exists to measure how far a fabric session gets over aiopquic's
transport beside the qh3 carrier and TCP+TLS in the same process and run, before anyone
patches aiopquic for the missing pieces.

One stream per pair: the dialer opens a client bidirectional stream and writes one
preamble byte (the acceptor only learns of a stream from its first data); the acceptor
drops it and builds its session end on that stream.  Back-pressure: ``write_capacity``
is ``HIGH_WATER`` minus the bytes still in the stream's send ring (not yet pulled by
picoquic's thread); above half it reports 0, arms aiopquic's per-stream drain wake and
calls the session's ``writable`` when picoquic's thread next drains the ring.

Run: ``python -m accessfabric.bench.quic_ab --carrier`` (needs aiopquic importable).
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from accessfabric.bench.quic_aiopquic import free_udp_port
from accessfabric.bench.quic_common import HOST, WINDOW
from accessfabric.carriers.base import CarrierInfo, CarrierListener
from accessfabric.identity.tls import write_certificate_files
from accessfabric.node.dialing.endpoints import LocalNode
from accessfabric.node.streams.connection import SessionConnection

HIGH_WATER = 1 << 20
PREAMBLE = b"F"
ALPN = "afbench-carrier"


class AiopquicStreamCarrier:
    """One aiopquic stream as a :class:`ByteTransport` (bench only)."""

    kind = "quic-aiopquic-bench"

    def __init__(self, quic: Any, stream_id: int) -> None:
        self._quic = quic
        self._loop = asyncio.get_running_loop()
        self.stream_id = stream_id
        self.listener: CarrierListener | None = None
        self._closed = False
        self._waiting = False

    def write(self, data: bytes) -> None:
        if not self._closed and data:
            self._quic.send_stream_data(self.stream_id, bytes(data))

    def write_capacity(self) -> int:
        if self._closed:
            return 0
        used: int = self._quic.tx_data_ring_used(self.stream_id)
        if used > HIGH_WATER // 2:
            self._arm()
            return 0
        return HIGH_WATER - used

    def _arm(self) -> None:
        if self._waiting:
            return
        quic, stream_id = self._quic, self.stream_id
        event = quic.get_tx_data_drain_event(stream_id)
        event.clear()
        quic.set_tx_data_drain_pending(stream_id)
        self._waiting = True
        if quic.tx_data_ring_used(stream_id) <= HIGH_WATER // 2:
            quic.clear_tx_data_drain_pending(stream_id)
            self._loop.call_soon(self._wake)
            return
        self._loop.create_task(self._wait(event))

    async def _wait(self, event: asyncio.Event) -> None:
        await event.wait()
        self._wake()

    def _wake(self) -> None:
        self._waiting = False
        if self.listener is not None and not self._closed:
            self.listener.writable()

    def received(self, data: bytes, end_stream: bool) -> None:
        if data and self.listener is not None:
            self.listener.data_received(data)
        if end_stream:
            self._lose()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._quic.send_stream_data(self.stream_id, b"", end_stream=True)
            self._loop.call_soon(self._lose)

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            self._quic.reset_stream(self.stream_id, 0)
            self._loop.call_soon(self._lose)

    def _lose(self) -> None:
        self._closed = True
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.connection_lost(None)


def carrier_protocols(
    protocol_base: Any, data_event: Any, on_stream: Callable[[Any, int], AiopquicStreamCarrier]
) -> tuple[Any, Any]:
    class ServerProtocol(protocol_base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.carriers: dict[int, AiopquicStreamCarrier] = {}

        def quic_event_received(self, event: Any) -> None:
            if not isinstance(event, data_event):
                return
            data = bytes(event.data)
            carrier = self.carriers.get(event.stream_id)
            if carrier is None:
                carrier = self.carriers[event.stream_id] = on_stream(self._quic, event.stream_id)
                data = data[len(PREAMBLE) :]
            carrier.received(data, event.end_stream)

    class ClientProtocol(protocol_base):  # type: ignore[misc]
        carrier: AiopquicStreamCarrier | None = None

        def quic_event_received(self, event: Any) -> None:
            if isinstance(event, data_event) and self.carrier is not None:
                self.carrier.received(bytes(event.data), event.end_stream)

    return ServerProtocol, ClientProtocol


def _modules() -> tuple[Any, Any, Any, Any, Any]:
    return (
        importlib.import_module("aiopquic.asyncio.client"),
        importlib.import_module("aiopquic.asyncio.server"),
        importlib.import_module("aiopquic.asyncio.protocol").QuicConnectionProtocol,
        importlib.import_module("aiopquic.quic.configuration").QuicConfiguration,
        importlib.import_module("aiopquic.quic.events").StreamDataReceived,
    )


async def serve_sessions(
    b: LocalNode, binding: bytes, on_connection: Callable[[SessionConnection], None]
) -> tuple[Any, int]:
    """Serve fabric sessions over aiopquic streams as ``b`` (bench only): (server, port).

    ``binding`` stands in for the channel binding (the dialer must use the same bytes).
    """
    _client, server_module, protocol_base, configuration_class, data_event = _modules()

    def on_stream(quic: Any, stream_id: int) -> AiopquicStreamCarrier:
        carrier = AiopquicStreamCarrier(quic, stream_id)
        info = CarrierInfo(
            kind=carrier.kind, dialer=False, peer_address=HOST, channel_binding=binding
        )
        connection = b.new_connection(info, carrier, None, None)
        carrier.listener = connection
        on_connection(connection)
        return carrier

    server_class, _ = carrier_protocols(protocol_base, data_event, on_stream)
    cert_path, key_path = write_certificate_files(b.key, b.cert_dir)
    server_config = configuration_class(
        is_client=False, alpn_protocols=[ALPN], max_data=WINDOW, max_stream_data=WINDOW
    )
    server_config.load_cert_chain(str(cert_path), str(key_path))
    port = free_udp_port()
    server = await server_module.serve(
        HOST, port, configuration=server_config, create_protocol=server_class
    )
    return server, port


@asynccontextmanager
async def dial_session(
    a: LocalNode, b_id: str, b_certificate: Path, port: int, binding: bytes
) -> AsyncIterator[SessionConnection]:
    """``a``'s session over one aiopquic stream to ``b`` on ``port`` (bench only), trusting
    only ``b_certificate`` under the name ``b_id``."""
    client_module, _server, protocol_base, configuration_class, data_event = _modules()
    _, client_class = carrier_protocols(protocol_base, data_event, lambda _q, _s: None)  # type: ignore[arg-type,return-value]
    client_config = configuration_class(
        is_client=True,
        alpn_protocols=[ALPN],
        max_data=WINDOW,
        max_stream_data=WINDOW,
        cafile=str(b_certificate),
        server_name=b_id,
    )
    async with client_module.connect(
        HOST, port, configuration=client_config, create_protocol=client_class
    ) as client:
        quic = client._quic
        stream_id = quic.get_next_available_stream_id()
        carrier = AiopquicStreamCarrier(quic, stream_id)
        client.carrier = carrier
        info = CarrierInfo(
            kind=carrier.kind, dialer=True, peer_address=HOST, channel_binding=binding
        )
        quic.send_stream_data(stream_id, PREAMBLE)  # before the session's first bytes
        dialer = a.new_connection(info, carrier, None, b_id)
        carrier.listener = dialer
        try:
            yield dialer
        finally:
            dialer.abort()


@asynccontextmanager
async def aiopquic_pair(
    a: LocalNode, b: LocalNode
) -> AsyncIterator[tuple[SessionConnection, SessionConnection]]:
    """A ready session pair over one aiopquic stream, ``a`` dialing ``b`` (bench only)."""
    binding = os.urandom(32)  # NOT derived from the connection: see the module docstring
    accepted: asyncio.Future[SessionConnection] = asyncio.get_running_loop().create_future()

    def on_connection(connection: SessionConnection) -> None:
        if not accepted.done():
            accepted.set_result(connection)

    server, port = await serve_sessions(b, binding, on_connection)
    cert_path, _key = write_certificate_files(b.key, b.cert_dir)
    try:
        async with dial_session(a, b.key.node_id, cert_path, port, binding) as dialer:
            acceptor = await asyncio.wait_for(accepted, 10)
            await asyncio.wait_for(asyncio.gather(dialer.ready(), acceptor.ready()), 10)
            try:
                yield dialer, acceptor
            finally:
                acceptor.abort()
    finally:
        server.close()
