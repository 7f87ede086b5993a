"""TCP + TLS 1.3 carrier: an asyncio ``BufferedProtocol`` that moves bytes and nothing else.

Receives land in buffers shared by every carrier of the thread (:class:`ReceiveBuffers`),
so an idle connection holds no receive buffer at all (256 KiB each made an idle session
cost ~300 KiB of RSS).  A buffer is lent to the listener (``owned=True``): DATA
payloads stay views of it until the reader copies them out, the one copy of the
receive path (ADR 0054); it is written again only once no view of it is left.  When
every pooled buffer is still viewed, receives land in a scratch buffer the listener
must copy from before ``data_received`` returns (``owned=False``).  The kernel's
unsent queue is kept small with ``TCP_NOTSENT_LOWAT`` and the transport's own
buffer with a low high-water mark, so the session — where priority applies —
holds the queue instead of the socket.  A lone lost segment is resent after tens of
milliseconds, not Linux's 200 ms minimum RTO (``carriers/tcp_timers.py``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import cast

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.carriers.tcp_info import TcpInfoProbe
from accessfabric.carriers.tcp_timers import DEFAULT_RTO_MIN, set_loss_recovery_timers
from accessfabric.errors import AuthenticationError
from accessfabric.identity.tls import PeerTlsInfo, peer_identity_from_ssl_object

TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)  # Linux value
RECEIVE_BUFFER = 256 * 1024
# Bytes that may wait below the session, where no priority applies: at 800 Mbit/s,
# 32 KiB unsent in the kernel plus up to 128 KiB in the transport are ~1.6 ms ahead of
# an interactive frame (was 128 + 256 KiB: ~3.9 ms); loopback bulk showed no cost.
NOTSENT_LOWAT = 32 * 1024
WRITE_HIGH_WATER = 128 * 1024

RECEIVE_BUFFERS = 8
"""Receive buffers a thread may lend out at once (2 MiB): beyond that, payloads are copied."""

_shared = threading.local()


def _viewed(buffer: bytearray) -> bool:
    """Whether any memoryview of ``buffer`` is alive (a resize is refused while one is)."""
    try:
        buffer.pop()
    except BufferError:
        return True
    buffer.append(0)  # within its allocation: no copy
    return False


class ReceiveBuffers:
    """The receive buffers of one thread's carriers (one event loop per thread).

    :meth:`take` returns a buffer no view of which is alive, making one while fewer
    than ``limit`` exist, else ``None`` (the caller then uses :attr:`scratch` and its
    listener copies).  A buffer whose views die is taken again: no allocation (and no
    zeroing) per receive once the pool has grown to what the readers hold.
    """

    __slots__ = ("_buffers", "_next", "limit", "scratch", "size")

    def __init__(self, size: int = RECEIVE_BUFFER, limit: int = RECEIVE_BUFFERS) -> None:
        self.size = size
        self.limit = limit
        self._buffers: list[bytearray] = []
        self._next = 0
        self.scratch = memoryview(bytearray(size))

    def take(self) -> bytearray | None:
        buffers = self._buffers
        count = len(buffers)
        start = self._next
        for step in range(count):  # round robin: the one lent last is likely still viewed
            index = (start + step) % count
            buffer = buffers[index]
            if not _viewed(buffer):
                self._next = index + 1
                return buffer
        if count < self.limit:
            buffer = bytearray(self.size)
            buffers.append(buffer)
            self._next = count + 1
            return buffer
        return None

    @property
    def lent(self) -> int:
        """Buffers of which a view is alive now."""
        return sum(_viewed(buffer) for buffer in self._buffers)


def receive_buffers() -> ReceiveBuffers:
    """This thread's :class:`ReceiveBuffers`."""
    buffers: ReceiveBuffers | None = getattr(_shared, "buffers", None)
    if buffers is None:
        buffers = _shared.buffers = ReceiveBuffers()
    return buffers


ListenerFactory = Callable[[CarrierInfo, ByteTransport, PeerTlsInfo | None], CarrierListener]


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
        "_buffer",
        "_buffers",
        "_dialer",
        "_factory",
        "_listener",
        "_paused",
        "_rto_min",
        "_transport",
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
        self._buffers = receive_buffers()
        self._buffer: bytearray | None = None
        """The pooled buffer of the receive under way (None: the scratch buffer)."""
        self._transport: asyncio.Transport | None = None
        self._listener: CarrierListener | None = None
        self.stats_probe = TcpInfoProbe(lambda: self._transport)
        self._paused = False
        self.up: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio protocol side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        tune_socket(transport.get_extra_info("socket"), self._rto_min)
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
        # A view, never the bytearray: asyncio's TLS layer slices what it gets and reads
        # into the slices.  The transport drops it before it asks for the next buffer.
        buffer = self._buffer = self._buffers.take()
        return self._buffers.scratch if buffer is None else memoryview(buffer)

    def buffer_updated(self, nbytes: int) -> None:
        listener = self._listener
        if listener is None:
            return
        buffer = self._buffer
        if buffer is None:
            # The scratch buffer is only valid during this call: the next receive of any
            # carrier of this thread overwrites it (the session's decoder copies).
            listener.data_received(self._buffers.scratch[:nbytes])
        else:
            # Lent: taken again only once the views the listener kept are gone.
            self._buffer = None
            listener.data_received(memoryview(buffer)[:nbytes], owned=True)

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
        if self._transport is not None:
            self._transport.write(data)

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
