"""QUIC carrier (qh3): one fabric session per bidirectional QUIC stream, bytes only.

Each fabric session rides one client-initiated bidirectional QUIC stream and carries
exactly the bytes it would carry over TCP+TLS; the fabric multiplexes its own streams
inside.

This module is the connection (:class:`QuicCarrierProtocol`, either side) and the
client's dial (:func:`dial_quic`); one stream is :mod:`accessfabric.carriers.quic_stream`,
the listening side :mod:`accessfabric.carriers.quic_server`, and the node reuses client
connections per peer endpoint in :mod:`accessfabric.node.dialing.quic_pool`.

Identity: the server presents its Ed25519 node certificate; the client pins it by
certificate fingerprint (inside the TLS handshake) and/or node id (right after it),
and after AUTH checks the certificate key is the key AUTH proved.  The channel binding
is an RFC 8446 exporter of the QUIC handshake per stream (``quic_adapter``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from qh3.asyncio.protocol import QuicConnectionProtocol
from qh3.quic import events
from qh3.quic.connection import QuicConnection, QuicConnectionError
from qh3.quic.packet import QuicErrorCode, stream_is_client_initiated, stream_is_unidirectional

from accessfabric.carriers.base import CarrierInfo
from accessfabric.carriers.errors import CarrierCapacityLimited, CertificatePinMismatch
from accessfabric.carriers.quic_adapter import (
    ExporterQuicConnection,
    client_configuration,
    create_udp_endpoint,
    exporter_connection,
    peer_certificate,
    quiet_qh3_log,
)
from accessfabric.carriers.quic_config import (
    BAD_CERTIFICATE_ALERT,
    CANCEL_CODE,
    PIN_MISMATCH_CODE,
    STREAM_LIMIT_CODE,
    ListenerFactory,
    QuicCarrierConfig,
    QuicPin,
)
from accessfabric.carriers.quic_stream import QuicStatsProbe, QuicStreamCarrier
from accessfabric.identity.node_id import node_id_from_public_key
from accessfabric.identity.tls import PeerTlsInfo

log = logging.getLogger(__name__)
quiet_qh3_log()  # qh3 logs every peer close as a WARNING: bounded (ADR 0028)

MIGRATION_COALESCE = 0.5
"""Seconds in which further migrate() calls (the connection's other sessions) join one."""


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
        self.blocked: set[QuicStreamCarrier] = set()
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
    def quic(self) -> QuicConnection:
        return self._quic

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

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

    def stream_op(self, operation: Callable[..., None], *args: Any) -> None:
        """Run a qh3 stream operation; once the connection is closing there is nothing to do."""
        if self.is_closing:
            return
        try:
            operation(*args)
        except (QuicConnectionError, ValueError) as error:  # closed or reset meanwhile
            log.debug("%s: stream operation after close: %s", self.endpoint, error)
            return
        self._transmit_soon()

    def deliver_soon(self, carrier: QuicStreamCarrier) -> None:
        self._arrived.add(carrier)
        if self._delivery is None:
            # after the rest of this receive burst (up to 32 datagrams per wake-up)
            self._delivery = self._loop.call_soon(self._deliver_arrived)

    def _deliver_arrived(self) -> None:
        self._delivery = None
        arrived, self._arrived = self._arrived, set()
        for carrier in arrived:
            carrier.deliver()

    def transmit(self) -> None:
        super().transmit()
        if self.blocked:
            low_water = self.config.write_high_water // 2
            quic = self._quic
            for carrier in list(self.blocked):
                if quic.get_send_buffer_size(carrier.stream_id) <= low_water:
                    self.blocked.discard(carrier)
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
            carrier.received(event.data, event.end_stream)
        elif isinstance(event, events.StreamReset):
            carrier = self._streams.get(event.stream_id)
            if carrier is not None:
                carrier.peer_refused(event.error_code, stop_sending=False)
        elif isinstance(event, events.StopSendingReceived):
            carrier = self._streams.get(event.stream_id)
            if carrier is not None:
                carrier.peer_refused(event.error_code, stop_sending=True)
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
            carrier.connection_gone(lost or ConnectionError("QUIC connection closed"))
        self._streams.clear()
        self.blocked.clear()
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
            self.stream_op(self._quic.reset_stream, stream_id, STREAM_LIMIT_CODE)
            self.stream_op(self._quic.stop_stream, stream_id, STREAM_LIMIT_CODE)
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

    def forget_if_done(self, carrier: QuicStreamCarrier) -> None:
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

    def server_closing(self) -> None:
        """The server closes: CONNECTION_CLOSE to the client, every stream ends now."""
        self._release("server closing")
        self.close_connection("server closing")
        for carrier in list(self._streams.values()):
            carrier.connection_gone(ConnectionError("QUIC server closed"))
        self._streams.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close_socket(self) -> None:
        """Client side: close the UDP socket (the connection terminated or was given up)."""
        if self._udp is not None:
            self._udp.close()

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
