"""Per-socket TCP timers so that a lone lost segment is resent in tens of milliseconds.

A lost segment that no later segment follows (a keystroke, a ping, the tail of a burst)
gets no fast retransmit: only the tail loss probe (``2 x srtt + minimum RTO`` when it is
the only segment in flight) or the retransmission timeout (``srtt + max(4 x rttvar,
minimum RTO)``) resends it, and Linux's minimum RTO is 200 ms whatever the path's RTT.
Linux 6.15+ lets a socket lower it (``TCP_RTO_MIN_US``) and cap its own delayed ACK
(``TCP_DELACK_MAX_US``); ``TCP_THIN_LINEAR_TIMEOUTS`` keeps the timeout from doubling
while the stream is thin (fewer than four segments in flight).  The default and what it
costs on real paths: ``docs/adr/0011-tcp-minimum-rto.md``.

Kernels without an option (``ENOPROTOOPT``) or that refuse a value (``EINVAL``: outside
2 jiffies .. 200 ms) keep their default: logged once at debug level, never an error.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

TCP_THIN_LINEAR_TIMEOUTS = getattr(socket, "TCP_THIN_LINEAR_TIMEOUTS", 16)
TCP_RTO_MIN_US = 45  # Linux 6.15 (include/uapi/linux/tcp.h)
TCP_DELACK_MAX_US = 46  # Linux 6.15
DEFAULT_RTO_MIN = 0.025
"""Seconds: the loss-free RTO margin over srtt (QUIC's: 25 ms max_ack_delay + 1 ms)."""
MAX_RTO_MIN = 0.200
"""The kernel refuses a larger minimum RTO (its default, ``TCP_RTO_MIN``)."""

log = logging.getLogger(__name__)
_reported: set[str] = set()


def set_loss_recovery_timers(sock: Any, rto_min: float | None) -> None:
    """Lower the minimum RTO of a connected TCP socket to ``rto_min`` seconds (None:
    leave the kernel's timers alone), cap its delayed ACK at half of it so a peer with the
    same minimum never times out waiting for our ACK, and use linear timeouts while the
    stream is thin.  ``sock`` is a socket or asyncio's ``TransportSocket``."""
    if rto_min is None:
        return
    micros = round(rto_min * 1_000_000)
    _set(sock, "TCP_RTO_MIN_US", TCP_RTO_MIN_US, micros)
    _set(sock, "TCP_DELACK_MAX_US", TCP_DELACK_MAX_US, micros // 2)
    _set(sock, "TCP_THIN_LINEAR_TIMEOUTS", TCP_THIN_LINEAR_TIMEOUTS, 1)


def _set(sock: Any, name: str, option: int, value: int) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError as error:
        if name not in _reported:
            _reported.add(name)
            log.debug("tcp %s=%d not applied (kernel default kept): %s", name, value, error)
