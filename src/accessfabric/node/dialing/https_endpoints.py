"""Dial and accept fabric sessions over the HTTPS fallback carrier (long-poll).

The same rules as the WebSocket carrier (``docs/adr/0005``, ``docs/adr/0009``): by
default TLS ends at the node and the session binds to ``tls-exporter`` (RFC 9266) of the connection
that opened the carrier; ``behind_proxy`` listeners and ``proxy_tls`` dialers run on an
empty binding, the dialer verifying the proxy's certificate and pinning the node id.
Sessions on this carrier run without the delay-based pacer (request batching is not a
queue it could read).  Every open is logged as the fallback it is, at a bounded rate.
A TLS listener admits connections like the TCP one (the node's pre-TLS caps, handshake
budget and ``handshake_timeout``, ADR 0017 and 0028); an idle connection is closed after
``IDLE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.carriers.https_fallback import IDLE_TIMEOUT, FallbackServer
from accessfabric.carriers.https_fallback_client import FallbackClientCarrier
from accessfabric.carriers.tls_site import AdmittedTlsSite, PeerErrorLog
from accessfabric.identity.tls import PeerTlsInfo
from accessfabric.node.dialing.endpoints import LocalNode, dial_context, handshake_within
from accessfabric.node.streams.connection import SessionConnection

__all__ = ["HttpsFallbackListener", "connect_https", "fallback_node", "serve_https"]

log = logging.getLogger(__name__)

DEFAULT_PATH = "/fabric-poll"
SHUTDOWN_TIMEOUT = 1.0


def fallback_node(local: LocalNode) -> LocalNode:
    """``local`` with the pacer off (shares its key, rate limiter and counters' owner)."""
    if local.session_config.pacing_target_delay is None:
        return local
    config = dataclasses.replace(local.session_config, pacing_target_delay=None)
    return dataclasses.replace(local, session_config=config)


def parse_https_url(url: str) -> tuple[str, int, str]:
    """(host, port, path) of ``https://host[:port]/path`` (path defaults to ``/fabric-poll``)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"an https fallback URL is https://host:port/path, not {url!r}")
    return parts.hostname, parts.port or 443, parts.path.rstrip("/") or DEFAULT_PATH


async def connect_https(
    local: LocalNode,
    url: str,
    *,
    expected_peer_id: str | None = None,
    timeout: float = 10.0,
    proxy_tls: ssl.SSLContext | None = None,
    certificate_fingerprint: bytes | None = None,
) -> SessionConnection:
    """Open an HTTPS fallback carrier to ``url`` and run the fabric handshake; return once ready.

    Raises ``ValueError`` (bad URL or options), ``OSError``, ``ssl.SSLError``,
    ``ConnectionError`` (HTTP refused: :class:`FallbackRefused`), ``TimeoutError``,
    :class:`CertificatePinMismatch` (fingerprint pin), ``IdentityMismatchError``,
    ``AuthenticationError`` or another ``ProtocolError``.
    """
    host, port, path = parse_https_url(url)
    context = dial_context(local, proxy_tls, expected_peer_id)
    if proxy_tls is not None and certificate_fingerprint is not None:
        raise ValueError("a certificate fingerprint pin cannot hold through a proxy")
    node = fallback_node(local)
    made: list[SessionConnection] = []
    factory = node.dial_factory(expected_peer_id, made)
    carrier = FallbackClientCarrier(
        factory,
        host=host,
        port=port,
        path=path,
        context=context,
        bind_tls=proxy_tls is None,
        certificate_fingerprint=certificate_fingerprint,
    )

    async def handshake() -> SessionConnection:
        await carrier.open()
        connection = made[0]
        await connection.ready()
        return connection

    connection = await handshake_within(handshake(), timeout, made, (carrier,))
    log.warning("https fallback carrier in use: dialed %s (emergency path)", url)
    return connection


class HttpsFallbackListener:
    """A running fallback listener: ``port``, ``sockets``, ``close()`` / ``wait_closed()``."""

    def __init__(self, server: FallbackServer, runner: web.AppRunner) -> None:
        self.server = server
        self._runner = runner
        self._closing: asyncio.Task[None] | None = None

    @property
    def sockets(self) -> list[socket.socket]:
        found: list[socket.socket] = []
        for site in self._runner.sites:
            inner = getattr(site, "_server", None)
            found.extend(getattr(inner, "sockets", None) or ())
        return found

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._closing is None:
            self.server.abort_all()
            self._closing = asyncio.get_running_loop().create_task(self._runner.cleanup())

    async def wait_closed(self) -> None:
        self.close()
        assert self._closing is not None
        await self._closing


async def serve_https(
    local: LocalNode,
    host: str,
    port: int,
    on_connection: Callable[[SessionConnection], None],
    *,
    path: str = DEFAULT_PATH,
    behind_proxy: bool = False,
    tls: bool = True,
) -> HttpsFallbackListener:
    """Accept HTTPS fallback carriers under ``path`` (other paths get 404).

    ``behind_proxy`` / ``tls=False`` as for ``serve_ws``: a listener only a
    TLS-terminating proxy reaches; plain HTTP is allowed only there.
    """
    if not tls and not behind_proxy:
        raise ValueError("an https fallback listener without TLS must be behind_proxy")
    session_config = fallback_node(local).session_config
    context = local.tls_context(server=True) if tls else None

    def factory(
        info: CarrierInfo, transport: ByteTransport, tls_info: PeerTlsInfo | None
    ) -> CarrierListener:
        address = info.forwarded_for or info.peer_address
        local.admission.refusal_log.log(  # an outsider can cause it: bounded (ADR 0017)
            (address.rsplit(":", 1)[0], "https fallback"), logging.WARNING,
            "https fallback carrier accepted from %s (emergency path)", address,
            now=asyncio.get_running_loop().time(),
        )  # fmt: skip
        return local.accept_connection(
            info, transport, tls_info, on_connection, session_config=session_config
        )

    server = FallbackServer(factory, path=path, bind_tls=not behind_proxy)
    runner = web.AppRunner(
        server.app, access_log=None, handle_signals=False, keepalive_timeout=IDLE_TIMEOUT,
        logger=PeerErrorLog(log),  # a malformed request: a bounded line, no traceback
    )  # fmt: skip
    await runner.setup()
    site: web.TCPSite
    if context is not None:  # admitted at accept, handshake within handshake_timeout
        site = AdmittedTlsSite(
            runner, host, port, context, local, local.handshake_timeout,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )  # fmt: skip
    else:  # behind a TLS-terminating proxy: the proxy is the only client
        site = web.TCPSite(
            runner, host, port, reuse_address=True, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return HttpsFallbackListener(server, runner)
