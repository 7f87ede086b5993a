"""Dial and accept fabric sessions over TCP+TLS.

A dialer that pins the peer's node id gets ``IdentityMismatchError`` when
another node answers; after AUTH it also checks that the TLS certificate
holds the key AUTH proved (a man in the middle that terminated TLS fails
here, and already fails AUTH because the channel bindings differ).  The
acceptor rate-limits failed authentications per source address.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.carriers.tcp import TcpCarrier
from accessfabric.errors import ErrorCode
from accessfabric.identity.authenticator import Ed25519Authenticator
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.ratelimit import KeyedRateLimiter
from accessfabric.identity.tls import (
    PeerTlsInfo,
    client_context,
    server_context,
    verify_peer_certificate,
)
from accessfabric.node.connection import SessionConnection
from accessfabric.session import Session, SessionConfig
from accessfabric.session import events as ev

log = logging.getLogger(__name__)

AUTH_FAILURE_CODES = frozenset({ErrorCode.AUTHENTICATION_FAILED, ErrorCode.IDENTITY_MISMATCH})


@dataclass
class LocalNode:
    """What this node brings to every session: its key, TLS files and session limits."""

    key: NodeKey
    cert_dir: Path
    session_config: SessionConfig = field(default_factory=SessionConfig)
    auth_failures: KeyedRateLimiter = field(
        default_factory=lambda: KeyedRateLimiter(rate=0.5, burst=10.0)
    )
    rejected_connections: int = 0

    def new_connection(
        self,
        info: CarrierInfo,
        transport: ByteTransport,
        tls: PeerTlsInfo | None,
        expected_peer_id: str | None = None,
    ) -> SessionConnection:
        loop = asyncio.get_running_loop()
        session = Session(
            dialer=info.dialer,
            authenticator=Ed25519Authenticator(self.key, expected_peer_id=expected_peer_id),
            config=self.session_config,
            channel_binding=info.channel_binding,
            now=loop.time(),
        )
        verify: Callable[[ev.SessionReady], None] | None = None
        if info.dialer and tls is not None:

            def verify(ready: ev.SessionReady) -> None:
                verify_peer_certificate(tls, ready.peer_node_id, ready.peer_public_key)

        connection = SessionConnection(session, info, verify_peer=verify)
        connection.attach(transport)
        return connection


async def connect_tcp(
    local: LocalNode,
    host: str,
    port: int,
    *,
    expected_peer_id: str | None = None,
    timeout: float = 10.0,
) -> SessionConnection:
    """Open a TCP+TLS carrier and run the fabric handshake on it; return once ready.

    Raises ``OSError`` (unreachable), ``ssl.SSLError`` (TLS failed),
    ``asyncio.TimeoutError``, ``IdentityMismatchError``, ``AuthenticationError``
    or another ``ProtocolError``.
    """
    loop = asyncio.get_running_loop()
    context = client_context(local.key, local.cert_dir)
    made: list[SessionConnection] = []

    def factory(
        info: CarrierInfo, transport: ByteTransport, tls: PeerTlsInfo | None
    ) -> CarrierListener:
        connection = local.new_connection(info, transport, tls, expected_peer_id)
        made.append(connection)
        return connection

    async def handshake() -> SessionConnection:
        await loop.create_connection(
            lambda: TcpCarrier(factory, dialer=True), host, port, ssl=context, server_hostname=host
        )
        connection = made[0]
        await connection.ready()
        return connection

    try:
        return await asyncio.wait_for(handshake(), timeout)
    except BaseException:
        for connection in made:
            connection.abort()
        raise


async def serve_tcp(
    local: LocalNode,
    host: str,
    port: int,
    on_connection: Callable[[SessionConnection], None],
) -> asyncio.Server:
    """Accept TCP+TLS carriers; every connection is handed over as soon as it exists."""
    loop = asyncio.get_running_loop()
    context = server_context(local.key, local.cert_dir)

    def factory(
        info: CarrierInfo, transport: ByteTransport, tls: PeerTlsInfo | None
    ) -> CarrierListener:
        address = info.peer_address.rsplit(":", 1)[0]
        connection = local.new_connection(info, transport, tls)
        if not local.auth_failures.allows(address, loop.time()):
            local.rejected_connections += 1
            connection.session.goaway(
                ErrorCode.ENHANCE_YOUR_CALM, "too many failed authentications"
            )
            connection.writable()
            transport.close()
            return connection

        def charge_failures(event: ev.Event) -> None:
            if isinstance(event, ev.SessionTerminated) and event.error_code in AUTH_FAILURE_CODES:
                now = loop.time()
                local.auth_failures.take(address, now)
                if connection.session.peer_node_id:
                    local.auth_failures.take("node:" + connection.session.peer_node_id, now)

        connection.on_event.append(charge_failures)
        on_connection(connection)
        return connection

    return await loop.create_server(
        lambda: TcpCarrier(factory, dialer=False), host, port, ssl=context, reuse_address=True
    )
