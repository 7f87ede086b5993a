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
import ssl
from asyncio import sslproto
from collections.abc import Callable
from typing import Any, Protocol, cast


class HandshakeAdmission(Protocol):
    def admit(self, address: str) -> bool: ...

    def done(self, address: str, error: str | None) -> None: ...


class _PreTls(asyncio.Protocol):
    """The protocol of an accepted socket until its TLS handshake is over."""

    def __init__(self, server: TlsAcceptor) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._server._accepted(transport)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # start_tls (which owns the socket from now on) sees it


class TlsAcceptor:
    """The accepting half of :func:`serve_tls`: admits, then wraps the socket in TLS."""

    def __init__(
        self,
        make_protocol: Callable[[], asyncio.BaseProtocol],
        context: ssl.SSLContext,
        admission: HandshakeAdmission,
        handshake_timeout: float,
    ) -> None:
        self._make_protocol = make_protocol
        self._context = context
        self._admission = admission
        self._timeout = handshake_timeout
        self.handshaking = 0

    def _accepted(self, accepted: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, accepted)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if not self._admission.admit(address):
            transport.abort()
            return
        # What loop.create_server(ssl=...) does for each socket, with our deadline: the
        # TLS protocol calls the carrier's connection_made once the handshake is over
        # (``loop.start_tls`` would leave that to us, after data may have arrived).
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        tls = _ssl_protocol_class(loop)(
            loop,
            self._make_protocol(),
            self._context,
            waiter,
            server_side=True,
            call_connection_made=True,
            ssl_handshake_timeout=self._timeout,
        )
        transport.set_protocol(tls)
        tls.connection_made(transport)
        self.handshaking += 1

        def finished(done: asyncio.Future[None]) -> None:
            self.handshaking -= 1
            error = None if done.cancelled() else done.exception()
            if error is None and not done.cancelled():
                self._admission.done(address, None)
                return
            transport.abort()
            reason = "cancelled" if error is None else _failure(error)
            self._admission.done(address, reason)

        waiter.add_done_callback(finished)


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
) -> tuple[asyncio.Server, TlsAcceptor]:
    """Listen on ``host:port``; admitted connections get TLS within ``handshake_timeout``."""
    acceptor = TlsAcceptor(make_protocol, context, admission, handshake_timeout)
    server = await asyncio.get_running_loop().create_server(
        lambda: _PreTls(acceptor), host, port, reuse_address=True, backlog=backlog
    )
    return server, acceptor
