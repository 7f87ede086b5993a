"""QUIC carrier (qh3): one fabric session per bidirectional QUIC stream, bytes only.

Each fabric session rides one client-initiated bidirectional QUIC stream and carries
exactly the bytes it would carry over TCP+TLS; the fabric multiplexes its own streams
inside.  A client keeps one QUIC connection per peer endpoint in a
:class:`QuicConnectionPool` (key: host, port, expected node id); a new session to the
same endpoint — typically the replacement of a draining one — opens another QUIC
stream instead of another handshake, up to ``max_streams_per_connection``.  A
connection without streams closes after ``idle_ttl``.  Going over the limit, locally
or because the peer refused the stream, raises :class:`CarrierCapacityLimited`:
capacity pressure, not an endpoint failure (``docs/adr/0007-quic-library.md``).

``write_capacity`` is the room left under ``write_high_water`` in the stream's QUIC
send queue (bytes not yet sent for the first time): that queue only drains as QUIC
flow control and the congestion window allow, so the session holds the backlog.
The carrier wakes the session after each transmit that brought the queue below half.

Identity: the server presents its Ed25519 node certificate; the client pins it by
certificate fingerprint (inside the TLS handshake) and/or node id (right after it),
and after AUTH checks the certificate key is the key AUTH proved.  The channel binding
is an RFC 8446 exporter of the QUIC handshake per stream (``quic_adapter``).

Admission (ADR 0017, 0028): a server given a ``HandshakeAdmission`` (the node's) asks it
about every datagram that would start a connection, before qh3 builds any TLS state; a
refused Initial is dropped (the client's retransmissions are asked again).  An admitted
connection holds its slot until its handshake completes, fails, or is cut at
``handshake_timeout`` from its first datagram.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qh3.asyncio.protocol import QuicConnectionProtocol
from qh3.asyncio.server import QuicServer
from qh3.quic import events
from qh3.quic.connection import QuicConnection, QuicConnectionError
from qh3.quic.packet import QuicErrorCode, stream_is_client_initiated, stream_is_unidirectional

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener, CarrierStats
from accessfabric.carriers.errors import CarrierCapacityLimited, CertificatePinMismatch
from accessfabric.carriers.quic_adapter import (
    ExporterQuicConnection,
    client_configuration,
    create_udp_endpoint,
    exporter_connection,
    new_connection_cid,
    peer_certificate,
    quiet_qh3_log,
    recovery_stats,
    server_configuration,
)
from accessfabric.carriers.tls_accept import HandshakeAdmission
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.node_id import node_id_from_public_key, parse_node_id
from accessfabric.identity.tls import PeerTlsInfo

log = logging.getLogger(__name__)
quiet_qh3_log()  # qh3 logs every peer close as a WARNING: bounded (ADR 0028)

KiB = 1024
MiB = 1024 * KiB
STREAM_LIMIT_CODE = 0x1
"""QUIC application error code: stream refused, per-connection stream limit reached."""
CANCEL_CODE = 0x8
PIN_MISMATCH_CODE = 0x2
BAD_CERTIFICATE_ALERT = QuicErrorCode.CRYPTO_ERROR + 42
MIGRATION_COALESCE = 0.5
"""Seconds in which further migrate() calls (the connection's other sessions) join one."""

ListenerFactory = Callable[[CarrierInfo, ByteTransport, PeerTlsInfo | None], CarrierListener]


@dataclass(frozen=True, slots=True, kw_only=True)
class QuicCarrierConfig:
    """QUIC carrier settings; the defaults work."""

    max_streams_per_connection: int = 4
    """Fabric sessions one QUIC connection carries at once (pool and acceptor enforce it)."""
    idle_ttl: float = 30.0
    """A pooled connection without sessions closes after this many seconds."""
    quic_idle_timeout: float = 60.0
    """QUIC max_idle_timeout: a silent peer is declared gone after this."""
    max_data: int = 16 * MiB
    max_stream_data: int = 8 * MiB
    write_high_water: int = 256 * KiB
    """Bytes a stream may queue in QUIC before ``write_capacity`` reaches 0."""
    session_pacing: bool = False
    """Keep the session's delay-based pacer on QUIC sessions.  Off by default: QUIC runs
    its own congestion control, and measured here the pacer held one QUIC stream at
    about 2.5 MB/s against 25 MB/s without it (``docs/adr/0007-quic-library.md``)."""

    def __post_init__(self) -> None:
        if self.max_streams_per_connection < 1:
            raise ValueError("max_streams_per_connection must be at least 1")
        if self.idle_ttl < 0:
            raise ValueError("idle_ttl must not be negative")


@dataclass(frozen=True, slots=True)
class QuicPin:
    """Who the server must be: a node id, a certificate SHA-256, or both (at least one)."""

    node_id: str | None = None
    certificate_fingerprint: bytes | None = None

    def __post_init__(self) -> None:
        if self.node_id is None and self.certificate_fingerprint is None:
            raise ValueError("a QUIC dial needs a pin: expected node id or certificate fingerprint")
        if self.node_id is not None:
            object.__setattr__(self, "node_id", parse_node_id(self.node_id))
        if self.certificate_fingerprint is not None and len(self.certificate_fingerprint) != 32:
            raise ValueError("certificate fingerprint must be a 32-byte SHA-256")


class QuicStreamCarrier:
    """One bidirectional QUIC stream as a :class:`ByteTransport` for one fabric session."""

    kind = "quic"

    def __init__(self, connection: QuicCarrierProtocol, stream_id: int) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self.listener: CarrierListener | None = None
        self.loss: BaseException | None = None
        """Why the carrier ended, when it was not a clean close."""
        self._send_closed = False
        self._recv_closed = False
        self._lost = False
        self._pending: list[bytes] = []
        self._end_pending = False

    # ByteTransport side
    def write(self, data: bytes) -> None:
        if not self._send_closed:
            self._connection._stream_op(
                self._connection._quic.send_stream_data, self.stream_id, data
            )

    def write_capacity(self) -> int:
        if self._send_closed:
            return 0
        config = self._connection.config
        queued = self._connection._quic.get_send_buffer_size(self.stream_id)
        if queued > config.write_high_water // 2:
            # Blocked until the queue drains to half: then the session writes a large
            # piece at once instead of a sliver per ACK.
            self._connection._blocked.add(self)
            return 0
        return config.write_high_water - queued

    def close(self) -> None:
        if not self._send_closed:
            self._send_closed = True
            quic = self._connection._quic
            self._connection._stream_op(quic.send_stream_data, self.stream_id, b"", True)
        self._lose(None, soon=True)
        self._connection._forget_if_done(self)

    def abort(self) -> None:
        connection = self._connection
        if not self._send_closed:
            self._send_closed = True
            connection._stream_op(connection._quic.reset_stream, self.stream_id, CANCEL_CODE)
        if not self._recv_closed:
            self._recv_closed = True
            connection._stream_op(connection._quic.stop_stream, self.stream_id, CANCEL_CODE)
        self._lose(None, soon=True)
        self._connection._forget_if_done(self)

    # connection side
    def _received(self, data: bytes, end_stream: bool) -> None:
        """Queue what arrived; :meth:`_deliver` hands it over once per receive burst."""
        if self._recv_closed or self._end_pending:
            return
        if data:
            self._pending.append(data)
        self._end_pending = end_stream
        self._connection._deliver_soon(self)

    def _deliver(self) -> None:
        pending = self._pending
        if pending and not self._recv_closed:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            if self.listener is not None:
                self.listener.data_received(data)
        pending.clear()
        if self._end_pending and not self._recv_closed:
            self._recv_closed = True
            self._lose(None, soon=False)
            self._connection._forget_if_done(self)

    def _peer_refused(self, code: int, *, stop_sending: bool) -> None:
        """The peer reset its side (RESET_STREAM) or asked us to stop (STOP_SENDING)."""
        self._deliver()
        if self.done:
            return
        error: BaseException
        if code == STREAM_LIMIT_CODE:
            error = CarrierCapacityLimited(self._connection.endpoint, None, remote=True)
        else:
            error = ConnectionResetError(f"QUIC stream {self.stream_id} reset by peer: {code}")
        connection = self._connection
        if not self._send_closed:
            connection._stream_op(connection._quic.reset_stream, self.stream_id, code)
        if stop_sending and not self._recv_closed:
            connection._stream_op(connection._quic.stop_stream, self.stream_id, code)
        self._send_closed = self._recv_closed = True
        self._lose(error, soon=False)
        self._connection._forget_if_done(self)

    def _connection_gone(self, error: BaseException | None) -> None:
        self._deliver()
        self._send_closed = self._recv_closed = True
        self._lose(error, soon=False)

    def _lose(self, error: BaseException | None, *, soon: bool) -> None:
        if self._lost:
            return
        self._lost = True
        if error is not None and self.loss is None:
            self.loss = error
        self._connection._blocked.discard(self)
        listener, self.listener = self.listener, None
        if listener is None:
            return
        if soon:
            self._connection._loop.call_soon(listener.connection_lost, error)
        else:
            listener.connection_lost(error)

    @property
    def done(self) -> bool:
        return self._send_closed and self._recv_closed

    async def migrate(self) -> bool:
        """Move the QUIC connection to the machine's current path (see
        :meth:`QuicCarrierProtocol.migrate`); False when this side cannot migrate."""
        return await self._connection.migrate()

    @property
    def stats_probe(self) -> QuicStatsProbe:
        """The connection's probe: every stream (session) of it shares one."""
        return self._connection.stats_probe


class QuicStatsProbe:
    """Samples one QUIC connection's recovery figures; the last sample once it is gone."""

    def __init__(self, connection: QuicCarrierProtocol) -> None:
        self._connection = connection
        self.last: CarrierStats | None = None

    def sample(self) -> CarrierStats | None:
        stats = recovery_stats(self._connection._quic)
        if stats is not None:
            self.last = stats
        return self.last


class QuicCarrierProtocol(QuicConnectionProtocol):
    """One QUIC connection (either side): routes stream events to stream carriers.

    The client side is made by :func:`dial_quic`; the server side by :func:`serve_quic_carrier`
    for every connection qh3's server accepts.
    """

    def __init__(
        self,
        quic: QuicConnection,
        stream_handler: Any = None,
        *,
        config: QuicCarrierConfig,
        dialer: bool,
        endpoint: str,
        pin: QuicPin | None = None,
        accept: ListenerFactory | None = None,
    ) -> None:
        super().__init__(exporter_connection(quic))
        self.config = config
        self.dialer = dialer
        self.endpoint = endpoint
        self.pin = pin
        self._accept = accept
        self._streams: dict[int, QuicStreamCarrier] = {}
        self._next_peer_stream = 0
        self._blocked: set[QuicStreamCarrier] = set()
        self._arrived: set[QuicStreamCarrier] = set()
        self._delivery: asyncio.Handle | None = None
        self._udp: asyncio.BaseTransport | None = None
        self.peer_address: Any = None
        self.peer_tls: tuple[bytes, bytes] | None = None
        self.handshake: asyncio.Future[None] = self._loop.create_future()
        self.terminated: asyncio.Future[events.ConnectionTerminated] = self._loop.create_future()
        self.on_idle: Callable[[QuicCarrierProtocol], None] | None = None
        self.on_terminated: list[Callable[[QuicCarrierProtocol], None]] = []
        self.streams_opened = 0
        self.streams_refused = 0
        self._closing = False
        self.stats_probe = QuicStatsProbe(self)
        self._migration: asyncio.Task[None] | None = None
        self._migrated_at: float | None = None
        self.migrations = 0
        self._admitted: Callable[[str | None], None] | None = None
        self._handshake_deadline: asyncio.TimerHandle | None = None

    def admitted(self, release: Callable[[str | None], None], timeout: float) -> None:
        """Server side: this connection holds an admission slot; ``release(error)`` is called
        once, when its handshake completed (None), failed, or ran past ``timeout``."""
        self._admitted = release
        self._handshake_deadline = self._loop.call_later(timeout, self._handshake_timed_out)

    def _release(self, error: str | None) -> None:
        if self._handshake_deadline is not None:
            self._handshake_deadline.cancel()
            self._handshake_deadline = None
        release, self._admitted = self._admitted, None
        if release is not None:
            release(error)

    def _handshake_timed_out(self) -> None:
        self._handshake_deadline = None
        if self.handshake.done():
            return
        self._release("timed out")
        self._fail_handshake(TimeoutError(f"{self.endpoint}: QUIC handshake timed out"))

    @property
    def exporter(self) -> ExporterQuicConnection:
        quic = self._quic
        assert isinstance(quic, ExporterQuicConnection)
        return quic

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    @property
    def is_usable(self) -> bool:
        return self.handshake.done() and not self.handshake.exception() and not self.is_closing

    @property
    def is_closing(self) -> bool:
        return self.terminated.done() or self._closing

    # -------------------------------------------------------------- asyncio side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.dialer:
            self._udp = transport

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        self.peer_address = addr
        super().datagram_received(data, addr)

    def datagrams_received(self, data: list[bytes], addr: Any) -> None:
        self.peer_address = addr
        super().datagrams_received(data, addr)

    def _stream_op(self, operation: Callable[..., None], *args: Any) -> None:
        """Run a qh3 stream operation; once the connection is closing there is nothing to do."""
        if self.is_closing:
            return
        try:
            operation(*args)
        except (QuicConnectionError, ValueError) as error:  # closed or reset meanwhile
            log.debug("%s: stream operation after close: %s", self.endpoint, error)
            return
        self._transmit_soon()

    def _deliver_soon(self, carrier: QuicStreamCarrier) -> None:
        self._arrived.add(carrier)
        if self._delivery is None:
            # after the rest of this receive burst (up to 32 datagrams per wake-up)
            self._delivery = self._loop.call_soon(self._deliver_arrived)

    def _deliver_arrived(self) -> None:
        self._delivery = None
        arrived, self._arrived = self._arrived, set()
        for carrier in arrived:
            carrier._deliver()

    def transmit(self) -> None:
        super().transmit()
        if self._blocked:
            low_water = self.config.write_high_water // 2
            quic = self._quic
            for carrier in list(self._blocked):
                if quic.get_send_buffer_size(carrier.stream_id) <= low_water:
                    self._blocked.discard(carrier)
                    if carrier.listener is not None:
                        carrier.listener.writable()

    # -------------------------------------------------------------- QUIC events

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            carrier = self._streams.get(event.stream_id)
            if carrier is None:
                carrier = self._incoming(event.stream_id)
                if carrier is None:
                    return
            carrier._received(event.data, event.end_stream)
        elif isinstance(event, events.StreamReset):
            carrier = self._streams.get(event.stream_id)
            if carrier is not None:
                carrier._peer_refused(event.error_code, stop_sending=False)
        elif isinstance(event, events.StopSendingReceived):
            carrier = self._streams.get(event.stream_id)
            if carrier is not None:
                carrier._peer_refused(event.error_code, stop_sending=True)
        elif isinstance(event, events.HandshakeCompleted):
            self._handshake_done()
        elif isinstance(event, events.ConnectionTerminated):
            self._connection_terminated(event)

    def _handshake_done(self) -> None:
        try:
            self.peer_tls = peer_certificate(self._quic)
            if self.dialer:
                self._check_pin()
        except Exception as error:
            self._release(f"{type(error).__name__}: {str(error)[:120]}")
            self._fail_handshake(error)
            return
        self._release(None)
        if not self.handshake.done():
            self.handshake.set_result(None)

    def _check_pin(self) -> None:
        pin = self.pin
        if pin is None:
            raise CertificatePinMismatch("QUIC dial without a pin")
        if self.peer_tls is None:
            raise CertificatePinMismatch(f"{self.endpoint}: server sent no certificate")
        fingerprint, public_key = self.peer_tls
        if pin.certificate_fingerprint is not None and fingerprint != pin.certificate_fingerprint:
            raise CertificatePinMismatch(
                f"{self.endpoint}: certificate fingerprint {fingerprint.hex()} is not the pinned "
                f"{pin.certificate_fingerprint.hex()}"
            )
        if pin.node_id is not None:
            presented = node_id_from_public_key(public_key)
            if presented != pin.node_id:
                raise CertificatePinMismatch(
                    f"{self.endpoint}: certificate belongs to {presented}, expected {pin.node_id}"
                )

    def _fail_handshake(self, error: BaseException) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(error)
            self.handshake.exception()  # retrieved: callers see it through dial_quic
        code = PIN_MISMATCH_CODE if isinstance(error, CertificatePinMismatch) else CANCEL_CODE
        self._closing = True
        self._quic.close(
            error_code=QuicErrorCode.APPLICATION_ERROR,
            reason_phrase=f"accessfabric: {code}",
        )
        self.transmit()

    def _connection_terminated(self, event: events.ConnectionTerminated) -> None:
        reason = event.reason_phrase or f"error {event.error_code:#x}"
        self._release(f"closed before the handshake ended: {reason[:120]}")
        if not self.handshake.done():
            pinned = self.pin is not None and self.pin.certificate_fingerprint is not None
            if event.error_code == BAD_CERTIFICATE_ALERT and pinned:
                error: BaseException = CertificatePinMismatch(
                    f"{self.endpoint}: server certificate does not match the pinned fingerprint"
                )
            else:
                error = ConnectionError(f"{self.endpoint}: QUIC handshake failed: {reason}")
            self.handshake.set_exception(error)
            self.handshake.exception()
        lost = None if event.error_code == QuicErrorCode.NO_ERROR else ConnectionError(reason)
        for carrier in list(self._streams.values()):
            carrier._connection_gone(lost or ConnectionError("QUIC connection closed"))
        self._streams.clear()
        self._blocked.clear()
        if not self.terminated.done():
            self.terminated.set_result(event)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._udp is not None:
            self._udp.close()
        for callback in self.on_terminated:
            callback(self)

    # -------------------------------------------------------------- streams

    def _incoming(self, stream_id: int) -> QuicStreamCarrier | None:
        """A stream the peer opened: accept it as a new fabric session, or refuse it."""
        if (
            self.dialer
            or self._accept is None
            or stream_id < self._next_peer_stream  # refused, or already done
            or stream_is_unidirectional(stream_id)
            or not stream_is_client_initiated(stream_id)
        ):
            return None
        self._next_peer_stream = stream_id + 4
        if len(self._streams) >= self.config.max_streams_per_connection:
            self.streams_refused += 1
            self._stream_op(self._quic.reset_stream, stream_id, STREAM_LIMIT_CODE)
            self._stream_op(self._quic.stop_stream, stream_id, STREAM_LIMIT_CODE)
            return None
        carrier = self._new_stream(stream_id)
        info, tls = self._stream_info(carrier)
        carrier.listener = self._accept(info, carrier, tls)
        return carrier

    def _new_stream(self, stream_id: int) -> QuicStreamCarrier:
        carrier = QuicStreamCarrier(self, stream_id)
        self._streams[stream_id] = carrier
        self.streams_opened += 1
        return carrier

    def _stream_info(self, carrier: QuicStreamCarrier) -> tuple[CarrierInfo, PeerTlsInfo]:
        binding = self.exporter.stream_binding(carrier.stream_id)
        fingerprint, public_key = self.peer_tls if self.peer_tls else (None, None)
        tls = PeerTlsInfo(
            fingerprint=fingerprint, public_key_bytes=public_key, channel_binding=binding
        )
        address = self.peer_address
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else self.endpoint
        info = CarrierInfo(
            kind=QuicStreamCarrier.kind,
            dialer=self.dialer,
            peer_address=peer,
            channel_binding=binding,
            peer_certificate_key=public_key,
        )
        return info, tls

    def open_stream(self, factory: ListenerFactory) -> QuicStreamCarrier:
        """A new fabric session on a new bidirectional stream (client side)."""
        if not self.is_usable:
            raise ConnectionError(f"{self.endpoint}: QUIC connection is not usable")
        if len(self._streams) >= self.config.max_streams_per_connection:
            raise CarrierCapacityLimited(
                self.endpoint, self.config.max_streams_per_connection, remote=False
            )
        carrier = self._new_stream(self._quic._open_stream())
        info, tls = self._stream_info(carrier)
        carrier.listener = factory(info, carrier, tls)
        return carrier

    def _forget_if_done(self, carrier: QuicStreamCarrier) -> None:
        if carrier.done and self._streams.get(carrier.stream_id) is carrier:
            del self._streams[carrier.stream_id]
            if not self._streams and self.on_idle is not None:
                self.on_idle(self)

    # -------------------------------------------------------------- lifecycle

    def close_connection(self, reason: str = "") -> None:
        """CONNECTION_CLOSE (no error); streams end when the connection terminates."""
        if self.is_closing:
            return
        self._closing = True
        self._quic.close(reason_phrase=reason)
        self.transmit()

    async def rebind(self, local_host: str, local_port: int = 0, *, new_cid: bool = True) -> None:
        """Move this client connection to a new local address (connection migration).

        Opens a UDP socket on ``local_host``, sends from it from now on (with a fresh
        connection id when ``new_cid``), probes the new path with a PING and closes the
        old socket.  The server validates the new path and follows it.
        """
        if not self.dialer:
            raise RuntimeError("only the client side migrates")
        old = self._udp
        self._udp = await create_udp_endpoint(lambda: self, local_host, local_port)
        if new_cid:
            self._quic.change_connection_id()
        self._quic.send_ping(0)
        self.transmit()
        if old is not None:
            old.close()

    async def migrate(self) -> bool:
        """After the machine's addresses changed: continue on a new UDP socket (RFC 9000
        connection migration: new local port and connection id, a PING on the new path),
        whose source address the kernel picks per packet from the routes of now.  One
        migration serves all of the connection's sessions: a call within
        :data:`MIGRATION_COALESCE` seconds of the last joins it.  False on the server side
        (only a client migrates) or once the connection is closing."""
        if not self.dialer or self.is_closing:
            return False
        if self._migration is not None and not self._migration.done():
            await asyncio.shield(self._migration)
            return True
        now = self._loop.time()
        if self._migrated_at is not None and now - self._migrated_at < MIGRATION_COALESCE:
            return True
        self._migrated_at = now
        address = self._udp.get_extra_info("sockname") if self._udp is not None else None
        wildcard = "::" if address is not None and ":" in str(address[0]) else "0.0.0.0"
        self._migration = asyncio.create_task(self.rebind(wildcard))
        await asyncio.shield(self._migration)
        self.migrations += 1
        return True

    @property
    def local_address(self) -> Any:
        return None if self._udp is None else self._udp.get_extra_info("sockname")


async def dial_quic(
    host: str,
    port: int,
    pin: QuicPin,
    config: QuicCarrierConfig,
    *,
    timeout: float = 10.0,
    local_host: str | None = None,
) -> QuicCarrierProtocol:
    """A pinned, handshaken client QUIC connection to ``host:port``.

    Raises ``OSError`` (resolution, socket), ``ConnectionError`` (handshake failed),
    :class:`CertificatePinMismatch` or ``TimeoutError``.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    address = (sockaddr[0], sockaddr[1])
    if local_host is None:
        local_host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    configuration = client_configuration(
        certificate_fingerprint=pin.certificate_fingerprint,
        idle_timeout=config.quic_idle_timeout,
        max_data=config.max_data,
        max_stream_data=config.max_stream_data,
    )
    connection = ExporterQuicConnection(configuration=configuration)
    endpoint = f"{host}:{port}"
    protocol = QuicCarrierProtocol(
        connection, config=config, dialer=True, endpoint=endpoint, pin=pin
    )
    await create_udp_endpoint(lambda: protocol, local_host)
    try:
        protocol.connect(address)
        await asyncio.wait_for(asyncio.shield(protocol.handshake), timeout)
    except BaseException:
        protocol.close_connection("dial abandoned")
        if protocol._udp is not None:
            protocol._udp.close()
        raise
    return protocol


PoolKey = tuple[str, int, str | None]


@dataclass
class QuicPoolStats:
    connections_opened: int = 0
    connections_reused: int = 0
    connections_expired: int = 0
    capacity_limited: int = 0


@dataclass
class QuicConnectionPool:
    """Client QUIC connections reused per peer endpoint ``(host, port, expected node id)``."""

    config: QuicCarrierConfig = field(default_factory=QuicCarrierConfig)
    local_host: str | None = None
    stats: QuicPoolStats = field(default_factory=QuicPoolStats)
    _connections: dict[PoolKey, QuicCarrierProtocol] = field(default_factory=dict)
    _dialing: dict[PoolKey, asyncio.Future[QuicCarrierProtocol]] = field(default_factory=dict)
    _expiry: dict[PoolKey, asyncio.TimerHandle] = field(default_factory=dict)

    def connection(self, host: str, port: int, node_id: str | None) -> QuicCarrierProtocol | None:
        key = (host, port, parse_node_id(node_id) if node_id else None)
        return self._connections.get(key)

    def __len__(self) -> int:
        return len(self._connections)

    async def open_stream(
        self,
        host: str,
        port: int,
        pin: QuicPin,
        factory: ListenerFactory,
        *,
        timeout: float = 10.0,
    ) -> QuicStreamCarrier:
        """A new stream carrier to the endpoint, on a cached connection when there is one.

        Raises :class:`CarrierCapacityLimited` when the cached connection carries
        ``max_streams_per_connection`` sessions already, and whatever :func:`dial_quic`
        raises when a new connection is needed.
        """
        key: PoolKey = (host, port, pin.node_id)
        connection = self._connections.get(key)
        if connection is not None and connection.is_usable:
            self.stats.connections_reused += 1
            self._check_fingerprint(connection, pin)
        else:
            connection = await self._dial(key, pin, timeout)
        timer = self._expiry.pop(key, None)
        if timer is not None:
            timer.cancel()
        try:
            return connection.open_stream(factory)
        except CarrierCapacityLimited:
            self.stats.capacity_limited += 1
            raise

    @staticmethod
    def _check_fingerprint(connection: QuicCarrierProtocol, pin: QuicPin) -> None:
        wanted = pin.certificate_fingerprint
        if wanted is not None and (connection.peer_tls is None or connection.peer_tls[0] != wanted):
            raise CertificatePinMismatch(
                f"{connection.endpoint}: cached connection's certificate is not the pinned one"
            )

    async def _dial(self, key: PoolKey, pin: QuicPin, timeout: float) -> QuicCarrierProtocol:
        pending = self._dialing.get(key)
        if pending is not None:
            connection = await asyncio.shield(pending)
            self._check_fingerprint(connection, pin)
            return connection
        loop = asyncio.get_running_loop()
        future: asyncio.Future[QuicCarrierProtocol] = loop.create_future()
        self._dialing[key] = future
        try:
            connection = await dial_quic(
                key[0], key[1], pin, self.config, timeout=timeout, local_host=self.local_host
            )
        except BaseException as error:
            future.set_exception(error)
            future.exception()
            raise
        finally:
            self._dialing.pop(key, None)
        future.set_result(connection)
        self.stats.connections_opened += 1
        self._connections[key] = connection
        connection.on_idle = lambda c: self._idle(key, c)
        connection.on_terminated.append(lambda c: self._gone(key, c))
        return connection

    def _idle(self, key: PoolKey, connection: QuicCarrierProtocol) -> None:
        if self._connections.get(key) is not connection:
            return
        timer = self._expiry.pop(key, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._expiry[key] = loop.call_later(self.config.idle_ttl, self._expire, key, connection)

    def _expire(self, key: PoolKey, connection: QuicCarrierProtocol) -> None:
        self._expiry.pop(key, None)
        if self._connections.get(key) is connection and connection.active_streams == 0:
            del self._connections[key]
            self.stats.connections_expired += 1
            connection.close_connection("idle")

    def _gone(self, key: PoolKey, connection: QuicCarrierProtocol) -> None:
        if self._connections.get(key) is connection:
            del self._connections[key]
        timer = self._expiry.pop(key, None)
        if timer is not None:
            timer.cancel()

    async def aclose(self, timeout: float = 2.0) -> None:
        """Close every cached connection and wait (bounded) until they terminated."""
        connections = list(self._connections.values())
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
        self._connections.clear()
        for connection in connections:
            connection.close_connection("pool closed")
        waiting = [asyncio.shield(c.terminated) for c in connections if not c.terminated.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        for connection in connections:
            if connection._udp is not None:
                connection._udp.close()


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
            protocol._release("server closing")
            protocol.close_connection("server closing")
            for carrier in list(protocol._streams.values()):
                carrier._connection_gone(ConnectionError("QUIC server closed"))
            protocol._streams.clear()
            if protocol._timer is not None:
                protocol._timer.cancel()
                protocol._timer = None
        self.protocols.clear()
        self._server.close()  # type: ignore[no-untyped-call]  # qh3 leaves it unannotated

    async def wait_closed(self) -> None:
        await asyncio.sleep(0)


class _AdmittingQuicServer(QuicServer):
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
        server = QuicServer(configuration=configuration, create_protocol=create_protocol)
    # qh3's own serve() uses a plain datagram endpoint; this one reads in bursts (GRO)
    await create_udp_endpoint(lambda: server, host, port)
    return QuicCarrierServer(server, protocols)
