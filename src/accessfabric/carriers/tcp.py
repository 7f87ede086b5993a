"""TCP + TLS 1.3 carrier: an asyncio ``BufferedProtocol`` that moves bytes and nothing else.

Receives land in one reused buffer (no allocation per receive), shared by every
carrier of the thread: the listener consumes (copies) the bytes before
``data_received`` returns, so an idle connection holds no receive buffer at all
(256 KiB each made an idle session cost ~300 KiB of RSS).  The kernel's
unsent queue is kept short with ``TCP_NOTSENT_LOWAT`` and the transport's own
buffer with a low high-water mark, so the session — where priority applies —
holds the queue instead of the socket.  Short in time, not bytes: the unsent mark
follows the rate the peer acknowledges (``NOTSENT_TIME`` of it: 32 KiB at 800 Mbit/s,
up to 1 MiB on loopback), because a fixed 32 KiB made a fast path's sender wake and
refill the socket every 32 KiB (issue 18, ADR 0059).  A lone lost segment is resent
after tens of milliseconds, not Linux's 200 ms minimum RTO (``carriers/tcp_timers.py``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import cast

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.carriers.tcp_info import TcpInfoProbe, read_bytes_acked
from accessfabric.carriers.tcp_timers import DEFAULT_RTO_MIN, set_loss_recovery_timers
from accessfabric.errors import AuthenticationError
from accessfabric.identity.tls import PeerTlsInfo, peer_identity_from_ssl_object

TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)  # Linux value
RECEIVE_BUFFER = 256 * 1024
# Bytes that may wait below the session, where no priority applies: at 800 Mbit/s,
# 32 KiB unsent in the kernel plus up to 128 KiB in the transport are ~1.6 ms ahead of
# an interactive frame (was 128 + 256 KiB: ~3.9 ms); loopback bulk showed no cost.
NOTSENT_LOWAT = 32 * 1024
NOTSENT_TIME = NOTSENT_LOWAT / 100e6
"""Seconds of the connection's acknowledged rate the kernel may hold unsent (ADR 0059):
32 KiB at 800 Mbit/s (~0.33 ms).  On loopback at ~1.2 GB/s that is ~400 KB; with 32 KiB
there the sender woke to refill the socket per 32 KiB drained."""
NOTSENT_LOWAT_MAX = 1024 * 1024
RETUNE_WRITES = 64
"""Writes between two looks at the acknowledged bytes (one ``getsockopt``)."""
RETUNE_MIN_SECONDS = 0.002
"""The shortest interval a rate is measured over (a shorter one waits for more writes)."""
WRITE_HIGH_WATER = 128 * 1024

_shared = threading.local()


def _receive_view() -> memoryview:
    """The receive buffer of this thread's carriers (one event loop per thread)."""
    view: memoryview | None = getattr(_shared, "view", None)
    if view is None:
        view = _shared.view = memoryview(bytearray(RECEIVE_BUFFER))
    return view


ListenerFactory = Callable[[CarrierInfo, ByteTransport, PeerTlsInfo | None], CarrierListener]


def notsent_lowat(rate: float | None) -> int:
    """The unsent mark for a connection whose peer acknowledges ``rate`` bytes/s:
    ``NOTSENT_TIME`` of it, within [``NOTSENT_LOWAT``, ``NOTSENT_LOWAT_MAX``]."""
    if not rate:
        return NOTSENT_LOWAT
    return max(NOTSENT_LOWAT, min(NOTSENT_LOWAT_MAX, int(rate * NOTSENT_TIME)))


def tune_socket(sock: socket.socket | None, rto_min: float | None = DEFAULT_RTO_MIN) -> None:
    """No Nagle delay; a small unsent kernel queue; a minimum RTO of ``rto_min`` seconds
    (None: the kernel's)."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
    except OSError:
        return  # not a TCP socket (tests over socketpair) or an old kernel
    set_loss_recovery_timers(sock, rto_min)


class TcpCarrier(asyncio.BufferedProtocol):
    """One TCP(+TLS) connection; hands bytes to the listener the factory returns."""

    __slots__ = (
        "_acked",
        "_dialer",
        "_factory",
        "_listener",
        "_paused",
        "_rto_min",
        "_socket",
        "_transport",
        "_view",
        "_writes",
        "notsent_lowat",
        "stats_probe",
        "up",
    )

    kind = "tcp_tls"

    def __init__(
        self, factory: ListenerFactory, *, dialer: bool, rto_min: float | None = DEFAULT_RTO_MIN
    ) -> None:
        self._factory = factory
        self._dialer = dialer
        self._rto_min = rto_min
        self._view = _receive_view()
        self._transport: asyncio.Transport | None = None
        self._listener: CarrierListener | None = None
        self.stats_probe = TcpInfoProbe(lambda: self._transport)
        self._paused = False
        self._socket: socket.socket | None = None
        self._writes = 0
        self._acked: tuple[float, int] | None = None
        """(when, ``tcpi_bytes_acked``) at the last retune."""
        self.notsent_lowat = NOTSENT_LOWAT
        """The ``TCP_NOTSENT_LOWAT`` last set (``notsent_lowat()`` of the acknowledged rate)."""
        self.up: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio protocol side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._socket = transport.get_extra_info("socket")
        tune_socket(self._socket, self._rto_min)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        ssl_object = transport.get_extra_info("ssl_object")
        try:
            tls = peer_identity_from_ssl_object(ssl_object) if ssl_object is not None else None
        except (AuthenticationError, ValueError) as error:
            # Not a fabric peer (e.g. an ordinary HTTPS server with an RSA certificate):
            # report it to whoever awaits ``up`` instead of raising into asyncio's TLS code.
            if not self.up.done():
                self.up.set_exception(error)
            self._transport.abort()
            return
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        info = CarrierInfo(
            kind=self.kind,
            dialer=self._dialer,
            peer_address=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
            channel_binding=tls.channel_binding if tls else b"",
            peer_certificate_key=tls.public_key_bytes if tls else None,
            local_address=str(local[0]) if isinstance(local, tuple) else "",
        )
        self._listener = self._factory(info, self, tls)
        if not self.up.done():
            self.up.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        # The view is only valid during this call: the next receive of any carrier of
        # this thread overwrites it (the session's decoder copies what it keeps).
        if self._listener is not None:
            self._listener.data_received(self._view[:nbytes])

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._listener is not None:
            self._listener.writable()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.up.done():
            self.up.set_exception(exc or ConnectionError("connection closed during set-up"))
        if self._listener is not None:
            self._listener.connection_lost(exc)
        self._listener = None

    # ByteTransport side
    def write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None:
            transport.write(data)
            self._writes += 1
            if self._writes >= RETUNE_WRITES:
                self._retune()

    def _retune(self) -> None:
        """Move the unsent mark to ``NOTSENT_TIME`` of the rate acknowledged since the last
        retune: what the peer took, so a CPU-bound reader (a closed receive window) lowers it."""
        self._writes = 0
        transport = self._transport
        if self._socket is None or transport is None or transport.is_closing():
            return  # uvloop's socket is a bare descriptor: never read one being closed
        acked = read_bytes_acked(self._socket)
        if acked is None:
            return
        now = time.monotonic()
        last, self._acked = self._acked, (now, acked)
        if last is None:
            return
        seconds = now - last[0]
        if seconds < RETUNE_MIN_SECONDS:
            self._acked = last  # too short to tell a rate: measure over more writes
            return
        lowat = notsent_lowat((acked - last[1]) / seconds)
        if lowat != self.notsent_lowat:
            try:
                self._socket.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, lowat)
            except OSError:
                return
            self.notsent_lowat = lowat

    def write_capacity(self) -> int:
        transport = self._transport
        if transport is None or self._paused or transport.is_closing():
            return 0
        return max(0, WRITE_HIGH_WATER - transport.get_write_buffer_size())

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
