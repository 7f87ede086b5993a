"""The typed boundary to qh3: configurations, the TLS exporter, peer certificates, UDP sockets.

Everything that reaches into qh3 beyond its public API lives here, so a qh3 upgrade
touches one file (the version is pinned in ``pyproject.toml``).

**Channel binding.**  qh3 does not expose RFC 8446's exporter, so we compute it.  On
each side the first 1-RTT traffic secret is installed right after the key schedule
extracted the master secret, with the transcript hash covering ClientHello ..
server Finished (client: on receiving the server Finished; server: right after
sending it).  At exactly that moment we derive

    exporter_master_secret = Derive-Secret(master_secret, "exp master", CH..server Finished)

which is the RFC 8446 §7.1 value, and later

    TLS-Exporter(label, context, 32)
      = HKDF-Expand-Label(Derive-Secret(exporter_master_secret, label, ""),
                          "exporter", Hash(context), 32)              (RFC 8446 §7.5)

with label ``EXPORTER-accessfabric-quic-session`` and context = the QUIC stream id
(8 bytes, big endian).  Both ends compute it from their own key schedule; it never
goes on the wire.  It is unique per QUIC connection (the master secret depends on
the fresh (EC)DHE share) and per stream, and a man in the middle who terminates QUIC
separately towards each side has two different master secrets, so the AUTH
signatures he relays fail — the same argument as ``tls-exporter`` (RFC 9266) for TCP
(``docs/identity.md``).  An exporter output reveals nothing about traffic keys
(HKDF with distinct labels).  Session resumption and 0-RTT are off (no ticket
handlers), so every connection is a full handshake.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
import struct
import time
from typing import Any

from qh3._hazmat import pull_quic_header
from qh3.asyncio._transport import create_optimized_datagram_transport
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection, QuicConnectionError
from qh3.quic.packet import QuicErrorCode, QuicPacketType
from qh3.quic.tls_bridge import QuicTlsBridge
from qh3.tls import (
    CipherSuite,
    Direction,
    Epoch,
    KeySchedule,
    SignatureAlgorithm,
    hkdf_expand_label,
)

from accessfabric.carriers.base import CarrierStats
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.tls import (
    certificate_fingerprint,
    public_key_from_certificate,
    write_certificate_files,
)
from accessfabric.observe.log_rate import RateLimitedLog

__all__ = [
    "ALPN",
    "EXPORTER_LABEL",
    "ExporterQuicConnection",
    "client_configuration",
    "create_udp_endpoint",
    "exporter_connection",
    "new_connection_cid",
    "peer_certificate",
    "quiet_qh3_log",
    "server_configuration",
]

ALPN = "accessfabric/1"
EXPORTER_LABEL = b"EXPORTER-accessfabric-quic-session"
BINDING_LENGTH = 32
# qh3's client leaves EdDSA out of its default signature_algorithms; our certificates are
# Ed25519, so offer it first and keep the rest of the defaults behind it.
CLIENT_SIGNATURE_ALGORITHMS: list[int] = [
    SignatureAlgorithm.ED25519,
    SignatureAlgorithm.ECDSA_SECP256R1_SHA256,
    SignatureAlgorithm.RSA_PSS_RSAE_SHA256,
    SignatureAlgorithm.ECDSA_SECP384R1_SHA384,
    SignatureAlgorithm.RSA_PSS_RSAE_SHA384,
    SignatureAlgorithm.RSA_PSS_RSAE_SHA512,
]
CIPHER_SUITES = [
    CipherSuite.AES_128_GCM_SHA256,
    CipherSuite.AES_256_GCM_SHA384,
    CipherSuite.CHACHA20_POLY1305_SHA256,
]


def server_configuration(
    key: NodeKey,
    cert_dir: Any,
    *,
    idle_timeout: float,
    max_data: int,
    max_stream_data: int,
) -> QuicConfiguration:
    """A server configuration presenting ``key``'s self-signed Ed25519 certificate."""
    cert_path, key_path = write_certificate_files(key, cert_dir)
    configuration = QuicConfiguration(
        is_client=False,
        alpn_protocols=[ALPN],
        idle_timeout=idle_timeout,
        max_data=max_data,
        max_stream_data=max_stream_data,
        cipher_suites=list(CIPHER_SUITES),
    )
    configuration.load_cert_chain(str(cert_path), str(key_path))
    return configuration


def client_configuration(
    *,
    certificate_fingerprint: bytes | None,
    idle_timeout: float,
    max_data: int,
    max_stream_data: int,
) -> QuicConfiguration:
    """A client configuration; with a fingerprint qh3 rejects any other server certificate.

    There is no CA, so chain verification is replaced by a pin: the certificate
    fingerprint here (checked inside the TLS handshake, ``bad_certificate`` alert), and
    the node id of the certificate key checked by the carrier right after the handshake.
    The CertificateVerify signature is always checked, so the server holds the key.
    """
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        idle_timeout=idle_timeout,
        max_data=max_data,
        max_stream_data=max_stream_data,
        cipher_suites=list(CIPHER_SUITES),
        signature_algorithms=list(CLIENT_SIGNATURE_ALGORITHMS),
        verify_mode=ssl.CERT_NONE,
        verify_hostname=False,
        # a migrating client needs spare connection ids from the server
        active_connection_id_limit=4,
    )
    if certificate_fingerprint is not None:
        configuration.assert_fingerprint = certificate_fingerprint.hex()
    return configuration


class ExporterQuicConnection(QuicConnection):
    """A qh3 connection that keeps the RFC 8446 exporter master secret of its handshake."""

    exporter_master_secret: bytes | None = None
    exporter_hash: int = 256

    def _create_tls(self, remote_source_cid: bytes | None) -> QuicTlsBridge:
        bridge = super()._create_tls(remote_source_cid)
        context = bridge.tls
        install = context.update_traffic_key_cb
        self.exporter_master_secret = None

        def capture(direction: Direction, epoch: Epoch, suite: CipherSuite, secret: bytes) -> None:
            schedule = context.key_schedule
            if (
                epoch == Epoch.ONE_RTT
                and self.exporter_master_secret is None
                and isinstance(schedule, KeySchedule)
            ):
                # first 1-RTT secret: the schedule holds the master secret and the
                # transcript up to the server Finished (see the module docstring)
                self.exporter_hash = schedule.algorithm
                self.exporter_master_secret = schedule.derive_secret(b"exp master")
            install(direction, epoch, suite, secret)

        context.update_traffic_key_cb = capture
        return bridge

    def export_keying_material(self, label: bytes, context: bytes, length: int) -> bytes:
        """RFC 8446 §7.5 TLS-Exporter; raises ``RuntimeError`` before the handshake."""
        secret = self.exporter_master_secret
        if secret is None:
            raise RuntimeError("the TLS handshake has not reached the 1-RTT keys")
        algorithm = self.exporter_hash
        digest = hashlib.new(f"sha{algorithm}")
        empty_hash = digest.copy().digest()
        derived = hkdf_expand_label(algorithm, secret, label, empty_hash, digest.digest_size)
        digest.update(context)
        return hkdf_expand_label(algorithm, derived, b"exporter", digest.digest(), length)

    def stream_binding(self, stream_id: int) -> bytes:
        """The channel binding of the fabric session on ``stream_id``."""
        context = struct.pack("!Q", stream_id)
        return self.export_keying_material(EXPORTER_LABEL, context, BINDING_LENGTH)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        """qh3's loop without its per-datagram logging calls when there is no QUIC logger.

        qh3 calls ``_log_datagram`` and ``_log_packets`` (which parses every packet header
        of the datagram) for each datagram it sends, and they return at once without a
        logger: about a tenth of the carrier's CPU at bulk (docs/benchmarks.md).
        """
        core = self._core
        if core is None or self._quic_logger is not None:
            return super().datagrams_to_send(now)
        poll = core.poll_transmit
        datagrams: list[tuple[bytes, Any]] = []
        try:
            while (transmit := poll(now)) is not None:
                datagrams.append((transmit[0], transmit[1]))
        except RuntimeError as error:  # as qh3's _call_core reports it
            raise QuicConnectionError(QuicErrorCode.INTERNAL_ERROR, None, str(error)) from error
        return datagrams


def exporter_connection(connection: QuicConnection) -> ExporterQuicConnection:
    """Turn a connection qh3's server made into an :class:`ExporterQuicConnection`.

    qh3's ``QuicServer`` constructs ``QuicConnection`` itself; the subclass adds no
    state that ``__init__`` would set, so switching the class of a connection that has not
    received a datagram yet is safe.
    """
    if not isinstance(connection, ExporterQuicConnection):
        if connection.tls is not None:
            raise RuntimeError("the connection already started its TLS handshake")
        connection.__class__ = ExporterQuicConnection
    assert isinstance(connection, ExporterQuicConnection)
    return connection


class _Qh3LogLimit(logging.Filter):
    """qh3 logs a WARNING (``Native peer close: ...``) for every connection the peer closes:
    a line any client can cause.  Its lines pass at most once per interval per message
    template, the next one saying how many were suppressed (ADR 0028)."""

    def __init__(self) -> None:
        super().__init__()
        self.limit = RateLimitedLog(logging.getLogger("quic"))

    def filter(self, record: logging.LogRecord) -> bool:
        suppressed = self.limit.admit(str(record.msg)[:80], time.monotonic())
        if suppressed is None:
            return False
        if suppressed:
            record.msg = f"{record.msg} (+{suppressed} suppressed)"
        return True


def quiet_qh3_log() -> None:
    """Rate-limit qh3's own log lines (logger ``quic``); idempotent."""
    logger = logging.getLogger("quic")
    if not any(isinstance(f, _Qh3LogLimit) for f in logger.filters):
        logger.addFilter(_Qh3LogLimit())


def new_connection_cid(data: bytes, configuration: QuicConfiguration) -> bytes | None:
    """The destination connection id of a datagram qh3's server would start a connection
    for (a long-header Initial of at least 1200 bytes in a version it speaks, the same
    test as ``QuicServer.datagram_received``), else None: an admission check runs on
    exactly these, before any TLS state exists."""
    if len(data) < 1200:
        return None
    try:
        header = pull_quic_header(data, 0, configuration.connection_id_length)
    except ValueError:
        return None
    version, packet_type, destination_cid = header[0], header[1], header[3]
    if version is None or version not in configuration.supported_versions:
        return None
    if packet_type != QuicPacketType.INITIAL:
        return None
    return bytes(destination_cid)


def peer_certificate(connection: QuicConnection) -> tuple[bytes, bytes] | None:
    """``(SHA-256 fingerprint, raw Ed25519 key)`` of the peer's certificate, if it sent one.

    Raises ``AuthenticationError`` when the certificate is not an Ed25519 one.
    """
    certificate = connection.get_peercert()
    if certificate is None:
        return None
    der = certificate.public_bytes()
    return certificate_fingerprint(der), public_key_from_certificate(der)


async def create_udp_endpoint(protocol_factory: Any, local_host: str, local_port: int = 0) -> Any:
    """A UDP socket bound to ``local_host`` with qh3's GSO/GRO transport on Linux.

    Returns the asyncio ``DatagramTransport``.
    """
    import asyncio

    family = socket.AF_INET6 if ":" in local_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((local_host, local_port))
    except BaseException:
        sock.close()
        raise
    transport, _ = await create_optimized_datagram_transport(
        asyncio.get_running_loop(), protocol_factory, sock=sock
    )
    return transport


def recovery_stats(quic: QuicConnection) -> CarrierStats | None:
    """qh3's loss-recovery figures of one connection (its core is private and Rust-backed).

    qh3 counts packets declared lost and probe timeouts, and the smoothed RTT; it does
    not count packets sent.  ``None`` before the connection has a core or after qh3
    dropped it.
    """
    core = getattr(quic, "_core", None)
    if core is None:
        return None
    try:
        return CarrierStats(
            rtt=core.smoothed_rtt,
            packets_lost=int(core.loss_total),
            timeouts=int(core.pto_total),
        )
    except (AttributeError, TypeError, ValueError):
        return None
