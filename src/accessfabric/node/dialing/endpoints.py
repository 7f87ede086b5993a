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
import secrets
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.carriers.tcp import TcpCarrier
from accessfabric.carriers.tcp_timers import DEFAULT_RTO_MIN
from accessfabric.carriers.tls_accept import serve_tls
from accessfabric.carriers.websocket import WebSocketCarrier
from accessfabric.errors import ErrorCode, RemoteProtocolError
from accessfabric.identity.authenticator import Ed25519Authenticator
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.ratelimit import KeyedRateLimiter
from accessfabric.identity.tls import (
    PeerTlsInfo,
    client_context,
    server_context,
    verify_peer_certificate,
)
from accessfabric.node.host.allocator import AllocatorTrim
from accessfabric.node.serving.admission import Admission
from accessfabric.node.streams.connection import SessionConnection, session_clock
from accessfabric.observe.log_format import log_event
from accessfabric.session import Session, SessionConfig
from accessfabric.session import events as ev

log = logging.getLogger(__name__)
refusal_logger = logging.getLogger("accessfabric.node.serving.admission")

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
AUTH_FAILURE_CODES = frozenset({ErrorCode.AUTHENTICATION_FAILED, ErrorCode.IDENTITY_MISMATCH})
FABRIC_PATH = "/fabric"


@dataclass
class LocalNode:
    """What this node brings to every session: its key, TLS files and session limits."""

    key: NodeKey
    cert_dir: Path
    session_config: SessionConfig = field(default_factory=SessionConfig)
    admission: Admission = field(default_factory=Admission)
    allocator: AllocatorTrim = field(default_factory=AllocatorTrim)
    """Returns the C heap's free memory to the system once a connection flood subsided."""
    """What an outsider may cost: pending handshakes, budgets, AUTH and refusal limits."""
    tcp_rto_min: float | None = DEFAULT_RTO_MIN
    """Minimum TCP retransmission timeout of TCP and WebSocket carriers (None: the kernel's)."""
    rejected_connections: int = 0
    on_new_connection: Callable[[SessionConnection], None] | None = None
    node_record: Callable[[], bytes | None] | None = None
    """This node's signed node record (``[control]``), sent in HELLO: a service host
    checks grants against the tenant and roles it names (docs/control.md)."""
    """Called with every session created (dialled or accepted): the node's metrics."""
    _tls_contexts: dict[bool, ssl.SSLContext] = field(default_factory=dict, repr=False)

    @property
    def auth_failures(self) -> KeyedRateLimiter:
        """Failed AUTHs per source address (the looser of the two AUTH limiters)."""
        return self.admission.auth_failures_by_address

    @property
    def handshake_timeout(self) -> float:
        """Seconds a connection may take from accept to the end of its TLS handshake."""
        return self.session_config.handshake_timeout or DEFAULT_HANDSHAKE_TIMEOUT

    def admit(self, address: str) -> bool:
        """A new connection from ``address``: may it start its TLS handshake?"""
        return self.admission.admit(address, asyncio.get_running_loop().time())

    def done(self, address: str, error: str | None) -> None:
        """An admitted connection's TLS handshake ended (``error``: how it failed)."""
        self.admission.handshake_done(address, asyncio.get_running_loop().time(), error)
        if error is not None:  # the connection is gone
            self.allocator.connection_ended()

    def tls_context(self, *, server: bool) -> ssl.SSLContext:
        """This node's TLS context, built once (loading certificate files per dial cost
        about 20 KiB and 3 ms per session)."""
        context = self._tls_contexts.get(server)
        if context is None:
            make = server_context if server else client_context
            context = self._tls_contexts[server] = make(self.key, self.cert_dir)
        return context

    def _own_record(self) -> bytes:
        record = self.node_record() if self.node_record is not None else None
        return record or b""

    def new_connection(
        self,
        info: CarrierInfo,
        transport: ByteTransport,
        tls: PeerTlsInfo | None,
        expected_peer_id: str | None = None,
        session_config: SessionConfig | None = None,
        authenticator: Ed25519Authenticator | None = None,
    ) -> SessionConnection:
        """A session on a new carrier (``session_config``: this carrier's, if it differs)."""
        session = Session(
            dialer=info.dialer,
            authenticator=authenticator
            or Ed25519Authenticator(
                self.key, expected_peer_id=expected_peer_id, node_record=self._own_record()
            ),
            config=session_config or self.session_config,
            random_bytes=secrets.token_bytes,
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
        address = source_address(info)
        admission = self.admission
        authenticator = _AdmittingAuthenticator(self.key, admission, address)
        connection = self.new_connection(
            info, transport, tls, session_config=session_config, authenticator=authenticator
        )
        if not self.auth_failures.allows(address, loop.time()):
            self.rejected_connections += 1
            admission.refuse(address, "rate limit", loop.time(), key=address)
            connection.refuse(ErrorCode.ENHANCE_YOUR_CALM, "too many failed authentications")
            return connection

        def on_event(event: ev.Event) -> None:
            kind = type(event)
            if kind is ev.StreamReset:
                assert isinstance(event, ev.StreamReset)
                if not event.remote:  # this session reset the stream for a violation
                    self.stream_refused(connection, event.reason or "protocol violation", "")
            elif kind is ev.SessionTerminated:
                assert isinstance(event, ev.SessionTerminated)
                self.allocator.connection_ended()
                if event.error_code in AUTH_FAILURE_CODES:
                    claimed = connection.session.peer_node_id
                    admission.auth_failed(address, claimed, loop.time())
                    admission.refuse(
                        address, "failed auth", loop.time(), key=(address, claimed),
                        peer=claimed, detail=event.reason, level=logging.INFO,
                    )  # fmt: skip
            elif kind is ev.SessionReady:
                assert isinstance(event, ev.SessionReady)
                if not admission.peer_allowed(event.peer_node_id, address, loop.time()):
                    admission.refuse(
                        address, "refused streams", loop.time(), key=event.peer_node_id,
                        peer=event.peer_node_id,
                    )  # fmt: skip
                    connection.refuse(ErrorCode.ENHANCE_YOUR_CALM, "too many refused streams")

        connection.on_event.append(on_event)
        on_connection(connection)
        return connection

    def stream_refused(
        self, connection: SessionConnection, reason: str, service: str, kind: str = ""
    ) -> None:
        """A stream ``connection``'s peer opened was refused: log (rate-limited per peer and
        ``kind``, by default the reason's text before ``:``), charge the peer's and its
        address's refusal buckets, and end the session when one is empty."""
        now = asyncio.get_running_loop().time()
        peer = connection.session.peer_node_id
        address = source_address(connection.info)
        label = (kind or reason.split(":", 1)[0]).strip()[:80] or "refused"
        suppressed = self.admission.refusal_log.admit((peer or address, label), now)
        if suppressed is not None:  # one line per (peer, kind) per interval
            log_event(
                refusal_logger, "stream refused", logging.WARNING, peer=peer or "-",
                address=address, service=service[:64], reason=reason[:200], suppressed=suppressed,
            )  # fmt: skip
        if self.admission.stream_refused(peer, address, label, now) and not connection.is_closed:
            self.admission.refuse(address, "refused streams", now, key=peer or address, peer=peer)
            connection.refuse(ErrorCode.ENHANCE_YOUR_CALM, "too many refused streams")

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


def source_address(info: CarrierInfo) -> str:
    """The address limits key on: the client a trusted proxy reported, else the peer's."""
    return info.forwarded_for or info.peer_address.rsplit(":", 1)[0]


class _AdmittingAuthenticator(Ed25519Authenticator):
    """An acceptor's authenticator that refuses, before verifying anything, an AUTH whose
    (source address, claimed node id) failed too often (GOAWAY ENHANCE_YOUR_CALM)."""

    def __init__(self, key: NodeKey, admission: Admission, address: str) -> None:
        super().__init__(key)
        self._admission = admission
        self._address = address

    def verify(
        self,
        node_id: str,
        public_key: bytes,
        node_record: bytes,
        transcript: bytes,
        signature: bytes,
    ) -> None:
        now = asyncio.get_running_loop().time()
        claimed = node_id[:128]
        if not self._admission.auth_allowed(self._address, claimed, now):
            raise RemoteProtocolError(
                "too many failed authentications", ErrorCode.ENHANCE_YOUR_CALM
            )
        if not self._admission.peer_allowed(claimed, self._address, now):
            self._admission.refuse(self._address, "refused streams", now, key=claimed, peer=claimed)
            raise RemoteProtocolError("too many refused streams", ErrorCode.ENHANCE_YOUR_CALM)
        super().verify(node_id, public_key, node_record, transcript, signature)


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

    return await handshake_within(handshake(), timeout, made)


def dial_context(
    local: LocalNode, proxy_tls: ssl.SSLContext | None, expected_peer_id: str | None
) -> ssl.SSLContext:
    """The TLS context a WebSocket or HTTPS-fallback dial uses: the node's own, or
    ``proxy_tls`` for a TLS-terminating proxy, which must verify the proxy's certificate
    and needs the node id pinned (``docs/adr/0005``)."""
    if proxy_tls is None:
        return local.tls_context(server=False)
    if expected_peer_id is None:
        raise ValueError("dialing through a TLS-terminating proxy needs expected_peer_id")
    if proxy_tls.verify_mode == ssl.CERT_NONE:
        raise ValueError("proxy_tls must verify the proxy's certificate")
    return proxy_tls


class Abortable(Protocol):
    def abort(self) -> None: ...


async def handshake_within(
    handshake: Awaitable[SessionConnection],
    timeout: float,
    made: Sequence[SessionConnection],
    carriers: Sequence[Abortable] = (),
) -> SessionConnection:
    """``handshake`` within ``timeout``; on any failure every connection it ``made``, then
    every carrier it opened (read when it fails, so lists it fills count), is aborted (a
    half-open session or carrier holds no socket)."""
    try:
        return await asyncio.wait_for(handshake, timeout)
    except BaseException:
        for connection in made:
            connection.abort()
        for carrier in carriers:
            carrier.abort()
        raise


async def serve_tcp(
    local: LocalNode,
    host: str,
    port: int,
    on_connection: Callable[[SessionConnection], None],
) -> asyncio.Server:
    """Accept TCP+TLS carriers; every connection is handed over as soon as it exists."""
    context = local.tls_context(server=True)

    def factory(
        info: CarrierInfo, transport: ByteTransport, tls: PeerTlsInfo | None
    ) -> CarrierListener:
        return local.accept_connection(info, transport, tls, on_connection)

    server, _ = await serve_tls(
        lambda: TcpCarrier(factory, dialer=False, rto_min=local.tcp_rto_min),
        host, port, context, local, local.handshake_timeout,
    )  # fmt: skip
    return server


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
    context = dial_context(local, proxy_tls, expected_peer_id)
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

    return await handshake_within(handshake(), timeout, made, carriers)


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

    if context is None:
        return await loop.create_server(carrier, host, port, reuse_address=True)
    server, _ = await serve_tls(carrier, host, port, context, local, local.handshake_timeout)
    return server
