"""Listen for fabric sessions over QUIC: each client-initiated bidirectional stream is one.

Admission (ADR 0017, 0028): a server given a ``HandshakeAdmission`` (the node's) asks it
about every datagram that would start a connection, before qh3 builds any TLS state; a
refused Initial is dropped (the client's retransmissions are asked again).  An admitted
connection holds its slot until its handshake completes, fails, or is cut at
``handshake_timeout`` from its first datagram.
"""

from __future__ import annotations

import asyncio
from typing import Any

from qh3._hazmat import pull_quic_header
from qh3.asyncio.server import QuicServer
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection

from accessfabric.carriers.quic_adapter import (
    create_udp_endpoint,
    new_connection_cid,
    server_configuration,
)
from accessfabric.carriers.quic_config import ListenerFactory, QuicCarrierConfig
from accessfabric.carriers.quic_protocol import QuicCarrierProtocol
from accessfabric.carriers.tls_accept import HandshakeAdmission
from accessfabric.identity.keys import NodeKey


class QuicCarrierServer:
    """A listening QUIC socket whose connections hand each new stream to a listener factory."""

    def __init__(self, server: QuicServer, protocols: set[QuicCarrierProtocol]) -> None:
        self._server = server
        self.protocols = protocols

    @property
    def sockname(self) -> Any:
        transport = self._server._transport
        assert transport is not None
        return transport.get_extra_info("sockname")

    @property
    def port(self) -> int:
        return int(self.sockname[1])

    def close(self) -> None:
        """CONNECTION_CLOSE to every client, end every stream now, close the socket."""
        for protocol in list(self.protocols):
            protocol.server_closing()
        self.protocols.clear()
        self._server.close()  # type: ignore[no-untyped-call]  # qh3 leaves it unannotated

    async def wait_closed(self) -> None:
        await asyncio.sleep(0)


class _BatchingQuicServer(QuicServer):
    """qh3's server, handing a connection each burst of its datagrams at once.

    qh3's ``QuicServer`` has no ``datagrams_received``, so its GRO transport hands it one
    datagram at a time and each one costs the connection a ``receive_datagram`` and a
    ``transmit`` (an ACK datagram and a ``sendmsg`` per packet received).  Here the
    datagrams of one burst from one address that belong to a known connection go to
    that connection's ``datagrams_received`` together (one receive call, one transmit),
    in their order; any other datagram (a new connection's Initial, an unknown
    connection id, garbage) takes qh3's per-datagram path, between the batches.
    """

    def datagrams_received(self, data: list[bytes], addr: Any) -> None:
        protocols = self._protocols
        cid_length = self._configuration.connection_id_length
        batch: list[bytes] = []
        target: Any = None
        for datagram in data:
            try:
                cid = pull_quic_header(datagram, 0, cid_length)[3]
            except ValueError:
                continue  # not QUIC: qh3 drops it too
            protocol = protocols.get(cid)
            if protocol is not None and protocol is target:
                batch.append(datagram)
                continue
            if batch:
                target.datagrams_received(batch, addr)
                batch = []
            if protocol is None:
                target = None
                self.datagram_received(datagram, addr)  # may start a connection
            else:
                target, batch = protocol, [datagram]
        if batch:
            target.datagrams_received(batch, addr)


def batching_quic_server(configuration: QuicConfiguration, create_protocol: Any) -> QuicServer:
    """qh3's server with the batched receive path (the QUIC benchmark uses it too)."""
    return _BatchingQuicServer(configuration=configuration, create_protocol=create_protocol)


class _AdmittingQuicServer(_BatchingQuicServer):
    """qh3's server, asking ``admission`` before a datagram starts a new connection."""

    def __init__(self, admission: HandshakeAdmission, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._admission = admission
        self.admitting: str | None = None
        """The source address of the connection being created (read by create_protocol)."""

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        cid = None if isinstance(data, str) else new_connection_cid(data, self._configuration)
        if cid is None or cid in self._protocols:
            super().datagram_received(data, addr)
            return
        address = str(addr[0]) if isinstance(addr, tuple) else str(addr)
        if not self._admission.admit(address):
            return  # dropped before any TLS work; a retransmission asks again
        self.admitting = address
        try:
            super().datagram_received(data, addr)
        finally:
            self.admitting = None
        if cid not in self._protocols:  # qh3 made no connection after all
            self._admission.done(address, None)


async def serve_quic_carrier(
    host: str,
    port: int,
    key: NodeKey,
    cert_dir: Any,
    accept: ListenerFactory,
    config: QuicCarrierConfig | None = None,
    *,
    admission: HandshakeAdmission | None = None,
    handshake_timeout: float = 10.0,
) -> QuicCarrierServer:
    """Listen for QUIC on ``host:port`` with ``key``'s certificate; ``accept`` gets each session.

    ``admission``: asked before each new connection (caps, budget), told when its handshake
    ended; a handshake longer than ``handshake_timeout`` is cut."""
    config = config or QuicCarrierConfig()
    configuration = server_configuration(
        key,
        cert_dir,
        idle_timeout=config.quic_idle_timeout,
        max_data=config.max_data,
        max_stream_data=config.max_stream_data,
    )
    protocols: set[QuicCarrierProtocol] = set()

    def create_protocol(quic: QuicConnection, stream_handler: Any = None) -> QuicCarrierProtocol:
        protocol = QuicCarrierProtocol(
            quic, config=config, dialer=False, endpoint=f"{host}:{port}", accept=accept
        )
        protocols.add(protocol)
        protocol.on_terminated.append(protocols.discard)
        address = server.admitting if isinstance(server, _AdmittingQuicServer) else None
        if admission is not None and address is not None:
            protocol.admitted(lambda error: admission.done(address, error), handshake_timeout)
        return protocol

    server: QuicServer
    if admission is not None:
        server = _AdmittingQuicServer(
            admission, configuration=configuration, create_protocol=create_protocol
        )
    else:
        server = _BatchingQuicServer(configuration=configuration, create_protocol=create_protocol)
    # qh3's own serve() uses a plain datagram endpoint; this one reads in bursts (GRO)
    await create_udp_endpoint(lambda: server, host, port)
    return QuicCarrierServer(server, protocols)
