"""Accept TCP connections and start TLS only on those admitted, within a deadline.

``loop.create_server(ssl=...)`` starts TLS on every accepted socket with asyncio's
default 60 s handshake timeout and never says who connected before the handshake ends,
so nothing can cap connections that never finish it.  :func:`serve_tls` accepts plain
TCP, asks ``admission.admit(address)`` first (a refused connection is closed at once,
before any TLS work), then wraps the socket in asyncio's TLS protocol with
``ssl_handshake_timeout`` set (what ``create_server`` does inside), so the carrier sees
the TLS transport as usual.
``admission.done(address, error)`` is called exactly once per admitted connection,
when its handshake ended (``error`` None on success).
"""

from __future__ import annotations

import asyncio
import math
import ssl
from asyncio import sslproto
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, cast

from accessfabric.carriers.buffer_pages import release_pages, resident_bytes

RELEASE_INTERVAL = 30.0
"""Seconds between two releases of one connection's receive-buffer pages (ADR 0050)."""
RELEASE_KEEP = 8 * 1024
"""Resident bytes a sweep leaves alone: what an idle connection's keepalives touch."""
_SWEEP_TICK = 1.0
_SWEEP_MAX = 256
"""Connections a sweep tick visits at most (bounded work per tick)."""


class HandshakeAdmission(Protocol):
    def admit(self, address: str) -> bool: ...

    def done(self, address: str, error: str | None) -> None: ...


class _PreTls(asyncio.Protocol):
    """An admitted socket before its first byte: no TLS state yet.

    A TLS protocol costs about 280 KiB at once (its 256 KiB receive buffer, OpenSSL's
    state), which 2000 idle connections turned into half a gigabyte of allocator
    high-water.  So the TLS protocol is made only when the ClientHello's first bytes
    arrive; until then the socket costs a few KiB, and the handshake deadline, which
    counts from accept, is this protocol's own timer."""

    __slots__ = ("_accepted_at", "_acceptor", "_address", "_deadline", "_transport")

    def __init__(self, acceptor: TlsAcceptor) -> None:
        self._acceptor = acceptor
        self._transport: asyncio.Transport | None = None
        self._address = ""
        self._accepted_at = 0.0
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        accepted = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = accepted.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if not self._acceptor._admission.admit(self._address):
            accepted.abort()
            return
        self._transport = accepted
        loop = asyncio.get_running_loop()
        self._accepted_at = loop.time()
        self._deadline = loop.call_later(self._acceptor._timeout, self._timed_out)
        self._acceptor.handshaking += 1

    def _timed_out(self) -> None:
        self._deadline = None
        transport = self._transport
        self._end("timed out")
        if transport is not None:
            transport.abort()

    def _end(self, error: str | None) -> None:
        if self._transport is None:
            return
        self._transport = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._acceptor.handshaking -= 1
        self._acceptor._admission.done(self._address, error)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        self._transport = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        acceptor = self._acceptor
        left = acceptor._timeout - (asyncio.get_running_loop().time() - self._accepted_at)
        acceptor._wrap(transport, self._address, data, max(left, 0.001))
        # The loop's transport may keep a bound method of this protocol for the
        # connection's life (uvloop does): keep nothing here that it would hold.
        self._address = ""

    def connection_lost(self, exc: Exception | None) -> None:
        self._end("closed before TLS")


class TlsAcceptor:
    """The accepting half of :func:`serve_tls`: admits, then wraps the socket in TLS."""

    def __init__(
        self,
        make_protocol: Callable[[], asyncio.BaseProtocol],
        context: ssl.SSLContext,
        admission: HandshakeAdmission,
        handshake_timeout: float,
        release_interval: float = RELEASE_INTERVAL,
    ) -> None:
        self._make_protocol = make_protocol
        self._context = context
        self._admission = admission
        self._timeout = handshake_timeout
        self._release_interval = release_interval
        self.handshaking = 0
        """Admitted connections whose TLS handshake has not ended."""
        self.released = 0
        """Receive-buffer bytes given back after handshakes (``buffer_pages``)."""
        self.swept = 0
        """Resident receive-buffer bytes given back by the periodic sweep."""
        self._live: deque[asyncio.Transport] = deque()
        """Established connections' sockets, visited in turn by the sweep.  The socket
        transport, not the TLS protocol: a closed transport lets its protocol go."""
        self._sweep: asyncio.TimerHandle | None = None

    def _track(self, transport: asyncio.Transport) -> None:
        self._live.append(transport)
        if self._sweep is None and self._release_interval > 0:
            tick = min(_SWEEP_TICK, self._release_interval)
            self._sweep = asyncio.get_running_loop().call_later(tick, self._sweep_tick)

    def _sweep_tick(self) -> None:
        """Give back the receive-buffer pages of a share of the established connections,
        so each is visited once per ``release_interval``: a connection that went idle
        after a bulk transfer keeps the pages its reads touched (up to 256 KiB) only
        until then.  A busy connection's next reads fault a few zeroed pages back in."""
        self._sweep = None
        live = self._live
        tick = min(_SWEEP_TICK, self._release_interval)
        visits = min(_SWEEP_MAX, len(live), math.ceil(len(live) * tick / self._release_interval))
        for _ in range(visits):
            transport = live.popleft()
            tls = None if transport.is_closing() else transport.get_protocol()
            if tls is None or not hasattr(tls, "get_buffer"):
                continue  # ended: forgotten
            live.append(transport)
            view = tls.get_buffer(0)  # scratch between reads: every read is copied out
            resident = resident_bytes(view)
            if resident > RELEASE_KEEP and release_pages(view):
                self.swept += resident
        if live:
            self._sweep = asyncio.get_running_loop().call_later(tick, self._sweep_tick)

    def close(self) -> None:
        """Stop the sweep (the connections themselves are the server's to end)."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._live.clear()

    def _wrap(self, transport: asyncio.Transport, address: str, first: bytes, left: float) -> None:
        """What loop.create_server(ssl=...) does for each socket, with our deadline: the TLS
        protocol calls the carrier's connection_made once the handshake is over
        (``loop.start_tls`` would leave that to us, after data may have arrived)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        tls = _ssl_protocol_class(loop)(
            loop,
            self._make_protocol(),
            self._context,
            waiter,
            server_side=True,
            call_connection_made=True,
            ssl_handshake_timeout=left,
        )

        def finished(done: asyncio.Future[None]) -> None:
            self.handshaking -= 1
            error = None if done.cancelled() else done.exception()
            if error is None and not done.cancelled():
                self._admission.done(address, None)
                # The handshake's reads left pages in the TLS protocol's receive buffer
                # (or its heap block brought them along): an idle session needs none.
                self.released += release_pages(tls.get_buffer(0))
                self._track(transport)
                return
            transport.abort()
            reason = "cancelled" if error is None else _failure(error)
            self._admission.done(address, reason)

        waiter.add_done_callback(finished)
        transport.set_protocol(tls)
        tls.connection_made(transport)
        # The bytes that woke us (the ClientHello's start) go to the TLS protocol as if
        # it had received them itself.
        view = memoryview(first)
        while view and not waiter.done():
            buffer = tls.get_buffer(len(view))
            count = min(len(buffer), len(view))
            buffer[:count] = view[:count]
            tls.buffer_updated(count)
            view = view[count:]


def _ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    """The loop's own TLS protocol: uvloop's (in C) on uvloop, asyncio's otherwise."""
    if type(loop).__module__.startswith("uvloop"):
        import uvloop.loop

        return uvloop.loop.SSLProtocol  # type: ignore[attr-defined]
    return sslproto.SSLProtocol


def _failure(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, TimeoutError) or "taking longer" in text:
        return "timed out"
    return f"{type(error).__name__}: {text[:120]}" if text else type(error).__name__


async def serve_tls(
    make_protocol: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
    context: ssl.SSLContext,
    admission: HandshakeAdmission,
    handshake_timeout: float,
    *,
    backlog: int = 1024,
    release_interval: float | None = None,
) -> tuple[asyncio.Server, TlsAcceptor]:
    """Listen on ``host:port``; admitted connections get TLS within ``handshake_timeout``;
    every ``release_interval`` seconds (default :data:`RELEASE_INTERVAL`) their receive
    buffers' pages are given back (0: never)."""
    interval = RELEASE_INTERVAL if release_interval is None else release_interval
    acceptor = TlsAcceptor(make_protocol, context, admission, handshake_timeout, interval)
    server = await asyncio.get_running_loop().create_server(
        lambda: _PreTls(acceptor), host, port, reuse_address=True, backlog=backlog
    )
    return server, acceptor
