"""aiohttp sites whose TLS connections are admitted first (``tls_accept``) and, once
their handshake is over, counted against a cap on established connections.

``AdmittedTlsSite`` is what ``web.TCPSite(ssl_context=...)`` would be, but a connection
is asked about (``admission.admit``) at accept, before any TLS work, and its handshake
must end within ``handshake_timeout`` of accept (asyncio's default is 60 s).  With
``established`` (a :class:`ConnectionCap`), a connection that finished its handshake is
closed at once when its address, or the site, already holds as many as allowed; an idle
one is closed by aiohttp's keep-alive timer (the runner's ``keepalive_timeout``).
The control API and the node's HTTPS fallback listener use it (ADR 0017, 0028), and
:class:`PeerErrorLog` so that a malformed request costs a bounded warning, not a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from accessfabric.carriers.tls_accept import HandshakeAdmission, serve_tls
from accessfabric.observe.log_rate import RateLimitedLog

log = logging.getLogger("accessfabric.carriers.tls_site")


class PeerErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, minus tracebacks for a client's malformed request: those
    become one warning line per interval per (client, reason) on ``refusals`` (a logger of
    ours) with a suppressed count."""

    def __init__(self, refusals: logging.Logger) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self.refusals = RateLimitedLog(refusals)

    def exception(self, msg: object, *args: object, exc_info: object = True, **kw: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            remote = args[0] if args else "-"
            reason = type(exc_info).__name__
            self.refusals.log(
                (remote, reason), logging.WARNING,
                "request refused client=%s reason=%s status=%s",
                remote, reason, exc_info.code, now=time.monotonic(),
            )  # fmt: skip
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kw)


class ConnectionCap:
    """Connections past their TLS handshake, capped in total and per source address."""

    def __init__(
        self,
        total: int,
        per_address: int,
        *,
        logger: logging.Logger = log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.per_address = per_address
        self.open = 0
        self.by_address: Counter[str] = Counter()
        self.refused = 0
        self._log = RateLimitedLog(logger)
        self._clock = clock

    def take(self, address: str) -> bool:
        """Whether one more established connection from ``address`` may stay (True: it
        holds a slot until :meth:`give_back`)."""
        if self.open >= self.total or self.by_address[address] >= self.per_address:
            self.refused += 1
            reason = "connections" if self.open >= self.total else "connections per address"
            self._log.log(
                (address, reason), logging.WARNING,
                "connection refused client=%s reason=%s", address, reason, now=self._clock(),
            )  # fmt: skip
            return False
        self.open += 1
        self.by_address[address] += 1
        return True

    def give_back(self, address: str) -> None:
        self.open -= 1
        left = self.by_address[address] - 1
        if left > 0:
            self.by_address[address] = left
        else:
            del self.by_address[address]


class _Counted(asyncio.Protocol):
    """The application protocol of one TLS connection, inside a slot of a :class:`ConnectionCap`
    (or closed at once when there is none)."""

    def __init__(self, inner: asyncio.Protocol, cap: ConnectionCap) -> None:
        self._inner = inner
        self._cap = cap
        self._address: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if not self._cap.take(address):
            cast(asyncio.Transport, transport).abort()
            return
        self._address = address
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        address, self._address = self._address, None
        if address is None:
            return
        self._cap.give_back(address)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._address is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._address is not None else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class AdmittedTlsSite(web.TCPSite):
    """A TCP site whose TLS handshakes are admitted (``admission``) and must end within
    ``handshake_timeout`` of accept; with ``established``, whose finished connections are
    capped too."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        context: ssl.SSLContext,
        admission: HandshakeAdmission,
        handshake_timeout: float,
        *,
        established: ConnectionCap | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=context, reuse_address=True, **kwargs)
        self._context = context
        self._admission = admission
        self._handshake_timeout = handshake_timeout
        self._established = established

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None and self._host is not None
        cap = self._established
        make: Callable[[], asyncio.BaseProtocol] = server
        if cap is not None:
            make = lambda: _Counted(server(), cap)  # noqa: E731
        self._server, _ = await serve_tls(
            make, self._host, self._port, self._context, self._admission, self._handshake_timeout
        )
