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
    """Bytes both ends derive from this one connection (TLS ``tls-unique``)."""
    peer_certificate_key: bytes | None = None
    """The Ed25519 key in the peer's TLS certificate, when it sent one."""
    forwarded_for: str | None = None
    """The client address a trusted reverse proxy reported (``peer_address`` is the proxy)."""


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
