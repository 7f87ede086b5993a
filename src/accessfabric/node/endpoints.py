"""Dial and accept fabric sessions over TCP+TLS and WebSocket (wss).

A dialer that pins the peer's node id gets ``IdentityMismatchError`` when
another node answers; after AUTH it also checks that the TLS certificate
holds the key AUTH proved (a man in the middle that terminated TLS fails
here, and already fails AUTH because the channel bindings differ).  The
acceptor rate-limits failed authentications per source address.

A WebSocket listener marked ``behind_proxy`` sits behind a TLS-terminating
reverse proxy: there the TLS connection does not reach the peer, so both ends
authenticate on an empty channel binding, the dialer must verify the proxy's
certificate and pin the node id (``docs/adr/0005-websocket-behind-proxies.md``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.carriers.tcp import TcpCarrier
from accessfabric.carriers.tcp_timers import DEFAULT_RTO_MIN
from accessfabric.carriers.websocket import WebSocketCarrier
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
from accessfabric.node.connection import SessionConnection, session_clock
from accessfabric.session import Session, SessionConfig
from accessfabric.session import events as ev

log = logging.getLogger(__name__)

AUTH_FAILURE_CODES = frozenset({ErrorCode.AUTHENTICATION_FAILED, ErrorCode.IDENTITY_MISMATCH})
FABRIC_PATH = "/fabric"


@dataclass
class LocalNode:
    """What this node brings to every session: its key, TLS files and session limits."""

    key: NodeKey
    cert_dir: Path
    session_config: SessionConfig = field(default_factory=SessionConfig)
    auth_failures: KeyedRateLimiter = field(
        default_factory=lambda: KeyedRateLimiter(rate=0.5, burst=10.0)
    )
    tcp_rto_min: float | None = DEFAULT_RTO_MIN
    """Minimum TCP retransmission timeout of TCP and WebSocket carriers (None: the kernel's)."""
    rejected_connections: int = 0
    on_new_connection: Callable[[SessionConnection], None] | None = None
    """Called with every session created (dialled or accepted): the node's metrics."""
    _tls_contexts: dict[bool, ssl.SSLContext] = field(default_factory=dict, repr=False)

    def tls_context(self, *, server: bool) -> ssl.SSLContext:
        """This node's TLS context, built once (loading certificate files per dial cost
        about 20 KiB and 3 ms per session)."""
        context = self._tls_contexts.get(server)
        if context is None:
            make = server_context if server else client_context
            context = self._tls_contexts[server] = make(self.key, self.cert_dir)
        return context

    def new_connection(
        self,
        info: CarrierInfo,
        transport: ByteTransport,
        tls: PeerTlsInfo | None,
        expected_peer_id: str | None = None,
        session_config: SessionConfig | None = None,
    ) -> SessionConnection:
        """A session on a new carrier (``session_config``: this carrier's, if it differs)."""
        session = Session(
            dialer=info.dialer,
            authenticator=Ed25519Authenticator(self.key, expected_peer_id=expected_peer_id),
            config=session_config or self.session_config,
            channel_binding=info.channel_binding,
            now=session_clock(),
        )
        verify: Callable[[ev.SessionReady], None] | None = None
        if info.dialer and tls is not None:

            def verify(ready: ev.SessionReady) -> None:
                verify_peer_certificate(tls, ready.peer_node_id, ready.peer_public_key)

        connection = SessionConnection(session, info, verify_peer=verify)
        if self.on_new_connection is not None:
            self.on_new_connection(connection)
        connection.attach(transport)
        return connection

    def accept_connection(
        self,
        info: CarrierInfo,
        transport: ByteTransport,
        tls: PeerTlsInfo | None,
        on_connection: Callable[[SessionConnection], None],
        session_config: SessionConfig | None = None,
    ) -> SessionConnection:
        """The acceptor's session on a new carrier, handed to ``on_connection``.

        A source (address, or the client a trusted proxy reported) that failed AUTH too
        often gets GOAWAY ENHANCE_YOUR_CALM instead, and ``on_connection`` never sees it.
        """
        loop = asyncio.get_running_loop()
        address = info.forwarded_for or info.peer_address.rsplit(":", 1)[0]
        connection = self.new_connection(info, transport, tls, session_config=session_config)
        if not self.auth_failures.allows(address, loop.time()):
            self.rejected_connections += 1
            connection.session.goaway(
                ErrorCode.ENHANCE_YOUR_CALM, "too many failed authentications"
            )
            connection.writable()
            transport.close()
            return connection

        def charge_failures(event: ev.Event) -> None:
            if isinstance(event, ev.SessionTerminated) and event.error_code in AUTH_FAILURE_CODES:
                now = loop.time()
                self.auth_failures.take(address, now)
                if connection.session.peer_node_id:
                    self.auth_failures.take("node:" + connection.session.peer_node_id, now)

        connection.on_event.append(charge_failures)
        on_connection(connection)
        return connection

    def dial_factory(
        self, expected_peer_id: str | None, made: list[SessionConnection]
    ) -> Callable[[CarrierInfo, ByteTransport, PeerTlsInfo | None], CarrierListener]:
        """A dialer carrier's listener factory; each connection it builds lands in ``made``."""

        def factory(
            info: CarrierInfo, transport: ByteTransport, tls: PeerTlsInfo | None
        ) -> CarrierListener:
            connection = self.new_connection(info, transport, tls, expected_peer_id)
            made.append(connection)
            return connection

        return factory


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
    context = local.tls_context(server=False)
    made: list[SessionConnection] = []
    factory = local.dial_factory(expected_peer_id, made)

    async def handshake() -> SessionConnection:
        _, carrier = await loop.create_connection(
            lambda: TcpCarrier(factory, dialer=True, rto_min=local.tcp_rto_min),
            host,
            port,
            ssl=context,
            server_hostname=host,
        )
        await carrier.up  # raises when the peer's certificate is not a node's
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
    context = local.tls_context(server=True)

    def factory(
        info: CarrierInfo, transport: ByteTransport, tls: PeerTlsInfo | None
    ) -> CarrierListener:
        return local.accept_connection(info, transport, tls, on_connection)

    return await loop.create_server(
        lambda: TcpCarrier(factory, dialer=False, rto_min=local.tcp_rto_min),
        host,
        port,
        ssl=context,
        reuse_address=True,
    )


async def connect_ws(
    local: LocalNode,
    url: str,
    *,
    expected_peer_id: str | None = None,
    timeout: float = 10.0,
    proxy_tls: ssl.SSLContext | None = None,
) -> SessionConnection:
    """Open a WebSocket carrier to ``wss://host:port/fabric`` and run the fabric handshake on it.

    By default TLS must end at the fabric node, exactly as over TCP: the session binds to
    the connection's ``tls-exporter`` (RFC 9266) and the server certificate must hold the key AUTH
    proved.  Pass ``proxy_tls`` when the URL is a TLS-terminating reverse proxy in front
    of a ``behind_proxy`` listener: the context must verify the proxy's certificate, the
    session then runs on an empty channel binding, and ``expected_peer_id`` is required.

    Raises ``ValueError`` (bad URL or options), ``OSError``, ``ssl.SSLError``,
    ``websockets.exceptions.InvalidHandshake`` (the HTTP upgrade failed),
    ``asyncio.TimeoutError``, ``IdentityMismatchError``, ``AuthenticationError`` or
    another ``ProtocolError``.
    """
    parts = urlsplit(url)
    if parts.scheme != "wss" or not parts.hostname:
        raise ValueError(f"a fabric websocket URL is wss://host:port/path, not {url!r}")
    host, port = parts.hostname, parts.port or 443
    context = local.tls_context(server=False)
    if proxy_tls is not None:
        if expected_peer_id is None:
            raise ValueError("dialing through a TLS-terminating proxy needs expected_peer_id")
        if proxy_tls.verify_mode == ssl.CERT_NONE:
            raise ValueError("proxy_tls must verify the proxy's certificate")
        context = proxy_tls
    loop = asyncio.get_running_loop()
    made: list[SessionConnection] = []
    factory = local.dial_factory(expected_peer_id, made)
    carriers: list[WebSocketCarrier] = []

    def carrier() -> WebSocketCarrier:
        carriers.append(
            WebSocketCarrier(
                factory,
                dialer=True,
                url=url,
                bind_tls=proxy_tls is None,
                rto_min=local.tcp_rto_min,
            )
        )
        return carriers[-1]

    async def handshake() -> SessionConnection:
        await loop.create_connection(carrier, host, port, ssl=context, server_hostname=host)
        await carriers[0].up
        connection = made[0]
        await connection.ready()
        return connection

    try:
        return await asyncio.wait_for(handshake(), timeout)
    except BaseException:
        for connection in made:
            connection.abort()
        for opened in carriers:
            opened.abort()
        raise


async def serve_ws(
    local: LocalNode,
    host: str,
    port: int,
    on_connection: Callable[[SessionConnection], None],
    *,
    path: str = FABRIC_PATH,
    behind_proxy: bool = False,
    tls: bool = True,
) -> asyncio.Server:
    """Accept WebSocket carriers on ``path``; other paths get 404.

    ``behind_proxy=True`` marks a listener that only a TLS-terminating reverse proxy
    reaches: sessions authenticate on an empty channel binding, and the rate limits key on
    the client address the proxy appends to ``X-Forwarded-For``.  Bind such a listener
    where only the proxy can connect.  ``tls=False`` (plain ws between proxy and node) is
    allowed only behind a proxy.
    """
    if not tls and not behind_proxy:
        raise ValueError("a fabric websocket listener without TLS must be behind_proxy")
    loop = asyncio.get_running_loop()
    context = local.tls_context(server=True) if tls else None

    def factory(
        info: CarrierInfo, transport: ByteTransport, tls_info: PeerTlsInfo | None
    ) -> CarrierListener:
        return local.accept_connection(info, transport, tls_info, on_connection)

    def carrier() -> WebSocketCarrier:
        return WebSocketCarrier(
            factory, dialer=False, path=path, bind_tls=not behind_proxy, rto_min=local.tcp_rto_min
        )

    return await loop.create_server(carrier, host, port, ssl=context, reuse_address=True)
