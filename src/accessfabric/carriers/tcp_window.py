"""A bound on the bytes that wait in a TCP carrier's receive path (issue 18, ADR 0055).

Linux sizes a socket's receive buffer from the bytes the application copied per
*measured* receive RTT (dynamic right-sizing).  When the receiving process is what
limits the rate (a CPU-bound VPN exit, loopback, veth between namespaces), that RTT is
the queue itself: the buffer grows to megabytes and the peer keeps them full, 0.7-1.5 MB
unread here and 1-2 MB in flight towards here, all of it ahead of the next interactive
frame on the connection (8-25 ms at the rates measured).  One TCP connection is FIFO,
so the session's priorities cannot reach those bytes; only their amount can be bounded.

Every :data:`BUSY_TICK` (:data:`IDLE_TICK` while the connection is quiet) the carrier
reads ``TCP_INFO``: the payload bytes received since the last tick (the rate the
receiver actually drains) and ``min_rtt`` (the path without its queue).  The bound is
what that rate fills in :data:`BDP_RTTS` minimum RTTs plus :data:`QUEUE_TIME`, at least
:data:`FLOOR` (:func:`receive_bound`).  On a WAN path ``min_rtt`` dominates and the bound
stays above the bandwidth-delay product (4x it, so a window-limited rate can still grow
4x per tick); on loopback or veth ``min_rtt`` is tens of microseconds and the bound is
about :data:`QUEUE_TIME` of the rate.  No constant is a window for every path.

The bound is applied as ``SO_RCVBUF`` (``SO_RCVBUFFORCE`` when the process may, so the
bound can also exceed ``net.core.rmem_max``), which also bounds the peer's bytes in
flight: the advertised window never exceeds the free buffer.  Setting it switches the
kernel's autotuning off for the socket for good, so the bound engages only when it is
needed — the connection is busy and the kernel's buffer is more than twice the bound —
and then follows the measured rate both ways, shrinking to no less than a quarter per tick (what the
old window allowed may still be in flight).  Without the privilege it engages only where
``net.core.rmem_max`` leaves it room to grow 4x.  Idle and lightly used connections are
never touched.

**Off by default** (``TcpCarrier(bound_receive=True)`` turns it on): through ``vpn up``
under iperf3 TCP it halved the carrier's standing queue (exit Recv-Q p90 0.2-0.4 MB
against 0.6-0.8 MB) but neither ping p50 nor p99 improved and bulk fell by ~20 % in
three of three interleaved pairs on the loaded development machine; the ping's time is
mostly loop turns and the run queue, in both directions (ADR 0055,
docs/benchmarks.md "Issue 18: ping p99 and the carrier's receive queue").
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from accessfabric.carriers.tcp_info import read_tcp_info

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux value
BDP_RTTS = 4
"""Minimum RTTs of the measured rate the bound always allows (the path's own window)."""
QUEUE_TIME = 0.002
"""Seconds of the measured rate allowed beyond ``BDP_RTTS`` minimum RTTs: the slack for
the receiver's scheduling (a loop turn, a time slice); what an interactive frame may wait
behind in this connection."""
FLOOR = 128 * 1024
"""The bound never goes below this many bytes (a socket's default buffer)."""
BUSY_TICK = 0.25
"""Seconds between samples while the connection is busy."""
IDLE_TICK = 2.0
BUSY_RATE = FLOOR
"""Bytes/s below which a connection is quiet: its buffer is left as it is."""
HYSTERESIS = 8
"""A new buffer is set only when it differs from the socket's by more than 1/this."""
SHRINK = 4
"""A buffer above the bound shrinks by at most this factor per tick: what the old window
allowed may still be in flight, and what exceeds the new buffer is dropped and resent."""
STEADY = 1.25
"""The bound first engages only when the rate grew less than this factor over a tick
(a connection in slow start on a long path is measured again, not bounded)."""

log = logging.getLogger(__name__)
_rmem_max: int | None = None


def receive_bound(rate: float, min_rtt: float) -> int:
    """Bytes the receive path may hold at ``rate`` bytes/s over a path of ``min_rtt`` s."""
    return max(FLOOR, int(rate * (BDP_RTTS * min_rtt + QUEUE_TIME)))


def next_buffer(bound: int, current: int, *, engaged: bool, ceiling: int) -> int | None:
    """The ``SO_RCVBUF`` value that makes the socket's buffer ``bound`` bytes, or None to
    leave the socket as it is.

    ``current`` is what ``getsockopt(SO_RCVBUF)`` reports, the kernel's buffer; the
    kernel doubles a value set (room for its overhead, which is small for the 64 KiB
    segments of a busy loopback or veth path), so half the bound is set.  ``ceiling`` is
    the largest value this process may set.  Not yet ``engaged``: only when the kernel's
    buffer exceeds twice the bound and the ceiling leaves the bound room to grow
    ``BDP_RTTS``-fold.
    """
    if not engaged and (current <= 2 * bound or BDP_RTTS * bound > 2 * ceiling):
        return None
    target = bound if bound >= current else max(bound, current // SHRINK)
    if abs(target - current) * HYSTERESIS <= current:
        return None
    return min(target // 2, ceiling)


def _read_rmem_max() -> int:
    global _rmem_max
    if _rmem_max is None:
        try:
            with open("/proc/sys/net/core/rmem_max", encoding="ascii") as handle:
                _rmem_max = int(handle.read())
        except (OSError, ValueError):
            _rmem_max = 212992  # the kernel's default
    return _rmem_max


class ReceiveBound:
    """Keeps one TCP carrier's receive buffer near :func:`receive_bound` (module doc).

    ``transport`` returns the carrier's asyncio transport (None once gone); a closing
    transport's socket is never touched (uvloop's is a bare descriptor number, which the
    kernel may already have given to another connection).
    """

    def __init__(self, transport: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._received: int | None = None
        self._rate: float | None = None
        self._at = loop.time()
        self._force = True
        self.engaged = False
        self.bound: int | None = None
        """The last bound applied (bytes), None while not engaged."""
        self._handle: asyncio.TimerHandle | None = loop.call_later(BUSY_TICK, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._handle = None
        transport = self._transport()
        if transport is None or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        busy = self._sample(sock)
        self._handle = self._loop.call_later(BUSY_TICK if busy else IDLE_TICK, self._tick)

    def _sample(self, sock: Any) -> bool:
        """Measure, apply; whether the connection is busy.  A quiet connection is left
        alone, engaged or not: its next burst starts from the last busy bound."""
        info = read_tcp_info(sock)
        now = self._loop.time()
        if info is None or info.bytes_received is None or info.min_rtt is None:
            return False
        received, self._received = self._received, info.bytes_received
        elapsed, self._at = now - self._at, now
        if received is None or elapsed <= 0:
            return True  # first sample: measure the next interval closely
        rate = (info.bytes_received - received) / elapsed
        if rate < BUSY_RATE:
            return False  # quiet: leave the buffer as it is, engaged or not
        bound = receive_bound(rate, info.min_rtt)
        previous, self._rate = self._rate, rate
        if not self.engaged and (previous is None or rate > STEADY * previous):
            return True  # still ramping up (slow start on a long path): measure again
        try:
            current = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except OSError:
            return True
        ceiling = (1 << 30) if self._force else _read_rmem_max()
        value = next_buffer(bound, current, engaged=self.engaged, ceiling=ceiling)
        if value is not None and self._apply(sock, value):
            if not self.engaged:
                log.debug(
                    "carrier receive bound %d B (rate %.0f B/s, min_rtt %.0f us, autotuned %d B)",
                    bound, rate, info.min_rtt * 1e6, current,
                )  # fmt: skip
            self.engaged = True
            self.bound = bound
        return True

    def _apply(self, sock: Any, value: int) -> bool:
        if self._force:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, value)
                return True
            except PermissionError:
                self._force = False
                if not self.engaged and BDP_RTTS * value > _read_rmem_max():
                    return False  # no room to grow again once autotuning is off
                value = min(value, _read_rmem_max())
            except OSError:
                return False
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, value)
        except OSError:
            return False
        return True
