"""The kernel's own view of one TCP connection (``TCP_INFO``): RTT, loss, retransmits.

``getsockopt(IPPROTO_TCP, TCP_INFO)`` copies the kernel's ``struct tcp_info``
(``include/uapi/linux/tcp.h``), cut to the length asked for or to the kernel's own
size, whichever is smaller: fields were appended over the years, so a field is read
only when the returned bytes reach it (``bytes_sent`` and ``bytes_retrans`` since
Linux 4.19, ``total_rto`` since 6.7) and is ``None`` otherwise.  Offsets are those of
the x86-64/aarch64 ABI (natural alignment, no packing), in native byte order.

:class:`TcpInfoProbe` is what the TCP and WebSocket carriers hand the node's metrics:
it reads the carrier's socket when asked (at scrape time, never per packet) and
answers with its last sample once the socket is gone.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from accessfabric.carriers.base import CarrierStats

TCP_INFO = getattr(socket, "TCP_INFO", 11)  # Linux value
TCP_INFO_MAX = 256
"""Bytes asked for: more than any field read here needs (the kernel returns at most its size)."""

# name -> (offset, struct format) in struct tcp_info.
_FIELDS: dict[str, tuple[int, str]] = {
    "state": (0, "B"),
    "retransmits": (2, "B"),  # consecutive RTOs of the segment at the head, now
    "unacked": (24, "I"),
    "lost": (32, "I"),
    "retrans": (36, "I"),  # retransmitted segments not yet acknowledged
    "rtt": (68, "I"),  # microseconds
    "rttvar": (72, "I"),
    "total_retrans": (100, "I"),  # every segment retransmission of the connection
    "bytes_acked": (120, "Q"),
    "segs_out": (136, "I"),
    "min_rtt": (148, "I"),
    "bytes_sent": (200, "Q"),
    "bytes_retrans": (208, "Q"),
    "total_rto": (240, "H"),
}
_MINIMUM = 104
"""Length of the oldest ``struct tcp_info`` this parser accepts (ends at ``total_retrans``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpInfo:
    """The fields of ``struct tcp_info`` the node exports (times in seconds)."""

    state: int
    retransmits: int
    unacked: int
    lost: int
    retrans: int
    rtt: float
    rttvar: float
    total_retrans: int
    bytes_acked: int | None
    segs_out: int | None
    min_rtt: float | None
    bytes_sent: int | None
    bytes_retrans: int | None
    total_rto: int | None

    def carrier_stats(self) -> CarrierStats:
        return CarrierStats(
            rtt=self.rtt,
            rtt_var=self.rttvar,
            segments_sent=self.segs_out,
            segments_retransmitted=self.total_retrans,
            lost_now=self.lost,
            bytes_sent=self.bytes_sent,
            bytes_retransmitted=self.bytes_retrans,
            timeouts=self.total_rto,
        )


def parse_tcp_info(raw: bytes) -> TcpInfo:
    """Decode what ``getsockopt(TCP_INFO)`` returned; ``ValueError`` if it is too short."""
    if len(raw) < _MINIMUM:
        raise ValueError(f"TCP_INFO of {len(raw)} bytes; at least {_MINIMUM} expected")
    values: dict[str, Any] = {}
    for name, (offset, fmt) in _FIELDS.items():
        end = offset + struct.calcsize(fmt)
        values[name] = struct.unpack_from("=" + fmt, raw, offset)[0] if end <= len(raw) else None
    for name in ("rtt", "rttvar", "min_rtt"):
        if values[name] is not None:
            values[name] = values[name] / 1e6
    return TcpInfo(**values)


def read_tcp_info(sock: Any) -> TcpInfo | None:
    """The socket's ``TCP_INFO`` (a ``socket.socket`` or asyncio's ``TransportSocket``).

    ``None`` when it cannot be read: the socket is closed, is not TCP, or the
    platform has no ``TCP_INFO``.
    """
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, TCP_INFO_MAX)
        return parse_tcp_info(raw)
    except (OSError, ValueError, TypeError):
        return None


_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_AT = _FIELDS["bytes_acked"][0]
_BYTES_ACKED_END = _BYTES_ACKED_AT + _BYTES_ACKED.size


def read_bytes_acked(sock: Any) -> int | None:
    """The socket's ``tcpi_bytes_acked`` alone, read cheaply enough for a write path;
    ``None`` when it cannot be read (closed, not TCP, a kernel before 4.2)."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, _BYTES_ACKED_END)
    except (OSError, TypeError, AttributeError):
        return None
    if len(raw) < _BYTES_ACKED_END:
        return None
    acked: int = _BYTES_ACKED.unpack_from(raw, _BYTES_ACKED_AT)[0]
    return acked


class TcpInfoProbe:
    """A :class:`~accessfabric.carriers.base.CarrierStatsProbe` over an asyncio transport.

    ``transport`` returns the carrier's transport (``None`` before it is connected);
    the socket comes from its ``get_extra_info("socket")``.  A closing transport is
    not read: uvloop's socket object is a bare descriptor number, which the kernel may
    already have given to another connection.
    """

    def __init__(self, transport: Callable[[], Any]) -> None:
        self._transport = transport
        self.last: CarrierStats | None = None

    def sample(self) -> CarrierStats | None:
        transport = self._transport()
        if transport is not None and not transport.is_closing():
            info = read_tcp_info(transport.get_extra_info("socket"))
            if info is not None:
                self.last = info.carrier_stats()
        return self.last
