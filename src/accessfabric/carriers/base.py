"""What every carrier gives the node: a byte pipe with a notion of how much it can absorb.

A carrier moves bytes only.  It calls the :class:`CarrierListener` (the
node's session connection) when bytes arrive, when it can take more, and when
it is gone; the listener pulls from the session only as much as
:meth:`ByteTransport.write_capacity` says, so queues form in the session,
where priority applies, not in socket buffers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class CarrierInfo:
    """Facts about one carrier connection, known once it is up."""

    kind: str
    """``tcp_tls``, ``websocket``, ``memory``..."""
    dialer: bool
    peer_address: str
    channel_binding: bytes
    """Bytes both ends derive from this one connection (TLS ``tls-exporter`` (RFC 9266))."""
    peer_certificate_key: bytes | None = None
    """The Ed25519 key in the peer's TLS certificate, when it sent one."""
    forwarded_for: str | None = None
    """The client address a trusted reverse proxy reported (``peer_address`` is the proxy)."""
    local_address: str = ""
    """This end's IP address (``""``: the carrier does not say); a session bound to an
    address the machine no longer has is dead (``node/dialing/network_watch.py``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CarrierStats:
    """Loss and RTT as the carrier's own transport measures them (TCP_INFO, QUIC recovery).

    Counters count from the connection's start; ``None`` means this transport (or this
    kernel) does not say.  One sample describes one carrier *connection*, which several
    sessions may share (QUIC streams).
    """

    rtt: float | None = None
    """Smoothed RTT in seconds."""
    rtt_var: float | None = None
    segments_sent: int | None = None
    segments_retransmitted: int | None = None
    packets_lost: int | None = None
    """Packets declared lost so far (QUIC; TCP reports only the gauge below)."""
    lost_now: int | None = None
    """Segments the sender considers lost and not yet repaired (TCP ``tcpi_lost``)."""
    bytes_sent: int | None = None
    bytes_retransmitted: int | None = None
    timeouts: int | None = None
    """Retransmission (TCP RTO) or probe (QUIC PTO) timeouts."""


class CarrierStatsProbe(Protocol):
    """Reads a carrier connection's :class:`CarrierStats` (cheap; call at scrape time).

    After the connection is gone it keeps answering with the last sample it took, so
    the counters a scrape saw never go backwards.
    """

    def sample(self) -> CarrierStats | None: ...


class ByteTransport(Protocol):
    def write(self, data: bytes) -> None: ...

    def write_capacity(self) -> int:
        """Bytes the carrier can take now without queueing beyond its small buffer."""
        ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class CarrierListener(Protocol):
    def data_received(self, data: bytes | bytearray | memoryview) -> None: ...

    def writable(self) -> None:
        """The carrier drained: pull more from the session."""
        ...

    def connection_lost(self, exc: BaseException | None) -> None: ...
