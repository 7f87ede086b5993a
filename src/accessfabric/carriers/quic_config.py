"""QUIC carrier settings, the pin a dial must meet, and the application error codes.

Shared by the stream carrier (:mod:`accessfabric.carriers.quic_stream`), the connection
(:mod:`accessfabric.carriers.quic_protocol`), the server
(:mod:`accessfabric.carriers.quic_server`) and the node's connection pool
(:mod:`accessfabric.node.dialing.quic_pool`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qh3.quic.packet import QuicErrorCode

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.identity.node_id import parse_node_id
from accessfabric.identity.tls import PeerTlsInfo

KiB = 1024
MiB = 1024 * KiB
STREAM_LIMIT_CODE = 0x1
"""QUIC application error code: stream refused, per-connection stream limit reached."""
CANCEL_CODE = 0x8
PIN_MISMATCH_CODE = 0x2
BAD_CERTIFICATE_ALERT = QuicErrorCode.CRYPTO_ERROR + 42

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
