"""Dial and accept fabric sessions over QUIC, exactly like ``connect_tcp`` / ``serve_tcp``.

A QUIC dial always pins the server: by node id (checked against the certificate key right
after the TLS handshake, and against the AUTH identity after AUTH) and/or by certificate
fingerprint (inside the handshake).  A wrong server is :class:`CertificatePinMismatch`
before any fabric byte moves.  Pass a node-wide :class:`QuicConnectionPool` to reuse one
QUIC connection per peer endpoint; without one, the connection is private to the
session and closes with it.  The acceptor rate-limits failed authentications per source
address, as over TCP.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.carriers.errors import CarrierCapacityLimited
from accessfabric.carriers.quic_config import QuicCarrierConfig, QuicPin
from accessfabric.carriers.quic_server import QuicCarrierServer, serve_quic_carrier
from accessfabric.carriers.quic_stream import QuicStreamCarrier
from accessfabric.identity.tls import PeerTlsInfo
from accessfabric.node.dialing.endpoints import LocalNode, handshake_within
from accessfabric.node.dialing.quic_pool import QuicConnectionPool
from accessfabric.node.streams.connection import SessionConnection

__all__ = ["connect_quic", "serve_quic", "session_node"]


def session_node(local: LocalNode, config: QuicCarrierConfig) -> LocalNode:
    """``local`` with the session settings QUIC sessions use (pacer off unless asked for).

    The copy shares ``local``'s key and rate limiter; counters stay on ``local``.
    """
    if config.session_pacing or local.session_config.pacing_target_delay is None:
        return local
    session_config = dataclasses.replace(local.session_config, pacing_target_delay=None)
    return dataclasses.replace(local, session_config=session_config)


async def connect_quic(
    local: LocalNode,
    host: str,
    port: int,
    *,
    expected_peer_id: str | None,
    timeout: float = 10.0,
    certificate_fingerprint: bytes | None = None,
    pool: QuicConnectionPool | None = None,
    config: QuicCarrierConfig | None = None,
) -> SessionConnection:
    """Open (or reuse) a QUIC connection, run the fabric handshake on a new stream.

    ``expected_peer_id`` and/or ``certificate_fingerprint`` must be given (``ValueError``
    otherwise).  Raises ``OSError`` / ``ConnectionError`` (unreachable, handshake
    failed), ``TimeoutError``, :class:`CertificatePinMismatch` (a subclass of
    ``IdentityMismatchError``), :class:`CarrierCapacityLimited` (stream limit: the
    endpoint works but is full), ``IdentityMismatchError``, ``AuthenticationError`` or
    another ``ProtocolError``.
    """
    pin = QuicPin(expected_peer_id, certificate_fingerprint)
    if pool is None:
        pool = QuicConnectionPool(dataclasses.replace(config or QuicCarrierConfig(), idle_ttl=0.0))
    node = session_node(local, pool.config)
    made: list[SessionConnection] = []
    carriers: list[QuicStreamCarrier] = []

    def factory(
        info: CarrierInfo, transport: ByteTransport, tls: PeerTlsInfo | None
    ) -> CarrierListener:
        connection = node.new_connection(info, transport, tls, expected_peer_id)
        made.append(connection)
        return connection

    async def handshake() -> SessionConnection:
        carriers.append(await pool.open_stream(host, port, pin, factory, timeout=timeout))
        connection = made[0]
        try:
            await connection.ready()
        except Exception:
            loss = carriers[0].loss
            if isinstance(loss, CarrierCapacityLimited):
                raise loss from None
            raise
        return connection

    return await handshake_within(handshake(), timeout, made)


async def serve_quic(
    local: LocalNode,
    host: str,
    port: int,
    on_connection: Callable[[SessionConnection], None],
    *,
    config: QuicCarrierConfig | None = None,
) -> QuicCarrierServer:
    """Accept QUIC connections; every fabric session is handed over as soon as it exists.

    Close with ``server.close()``.  ``server.port`` is the bound UDP port.
    """
    config = config or QuicCarrierConfig()
    session_config = session_node(local, config).session_config

    def accept(
        info: CarrierInfo, transport: ByteTransport, tls: PeerTlsInfo | None
    ) -> CarrierListener:
        return local.accept_connection(
            info, transport, tls, on_connection, session_config=session_config
        )

    return await serve_quic_carrier(
        host, port, local.key, local.cert_dir, accept, config,
        admission=local, handshake_timeout=local.handshake_timeout,
    )  # fmt: skip
