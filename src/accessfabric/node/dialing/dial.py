"""Dial or listen on an :class:`Endpoint` with the carrier it names.

The one place that maps a carrier name (``tcp``, ``websocket``, ``quic``, ``https``)
onto the functions in :mod:`accessfabric.node.dialing.endpoints`, ``quic_endpoints`` and
``https_endpoints``.  A carrier whose functions do not exist yet raises
:class:`CarrierUnavailableError`.  QUIC dials always pin the node id; pass a node-wide
``quic_pool`` to reuse connections per peer endpoint.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from accessfabric.node.dialing import endpoints
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.dialing.endpoints import LocalNode
from accessfabric.node.dialing.https_endpoints import connect_https, serve_https
from accessfabric.node.dialing.quic_endpoints import connect_quic, serve_quic
from accessfabric.node.dialing.quic_pool import QuicConnectionPool
from accessfabric.node.streams.connection import SessionConnection

DEFAULT_DIAL_TIMEOUT = 10.0


class CarrierUnavailableError(RuntimeError):
    """The endpoint names a carrier this build cannot use."""

    def __init__(self, carrier: str) -> None:
        super().__init__(f"carrier {carrier!r} is not available yet")
        self.carrier = carrier


class _Server(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BoundListener:
    """A running listener: the endpoint it actually bound (port 0 resolved) and its server."""

    endpoint: Endpoint
    server: _Server

    def close(self) -> None:
        self.server.close()


def carrier_available(carrier: str) -> bool:
    if carrier in ("tcp", "quic", "https"):
        return True
    if carrier == "websocket":
        return _websocket("connect_ws") is not None and _websocket("serve_ws") is not None
    return False


def _websocket(name: str) -> Callable[..., Any] | None:
    """``connect_ws`` / ``serve_ws`` once the WebSocket carrier exists."""
    function: Callable[..., Any] | None = getattr(endpoints, name, None)
    return function


async def dial(
    local: LocalNode,
    endpoint: Endpoint,
    *,
    expected_peer_id: str | None = None,
    timeout: float = DEFAULT_DIAL_TIMEOUT,
    quic_pool: QuicConnectionPool | None = None,
    certificate_fingerprint: bytes | None = None,
) -> SessionConnection:
    """Open a carrier to ``endpoint`` and run the fabric handshake; return once ready.

    Raises what the carrier's connect function raises (``OSError``, ``ssl.SSLError``,
    ``TimeoutError``, ``IdentityMismatchError``, ``AuthenticationError``, ``ProtocolError``,
    for QUIC ``CarrierCapacityLimited``, for QUIC and HTTPS ``CertificatePinMismatch``)
    or :class:`CarrierUnavailableError`.  ``certificate_fingerprint`` pins QUIC and HTTPS.
    """
    if endpoint.carrier == "tcp":
        return await endpoints.connect_tcp(
            local, endpoint.host, endpoint.port, expected_peer_id=expected_peer_id, timeout=timeout
        )
    if endpoint.carrier == "quic":
        return await connect_quic(
            local, endpoint.host, endpoint.port, expected_peer_id=expected_peer_id,
            timeout=timeout, certificate_fingerprint=certificate_fingerprint, pool=quic_pool,
        )  # fmt: skip
    if endpoint.carrier == "https":
        return await connect_https(
            local, endpoint.url, expected_peer_id=expected_peer_id, timeout=timeout,
            certificate_fingerprint=certificate_fingerprint,
        )  # fmt: skip
    connect_ws = _websocket("connect_ws")
    if endpoint.carrier == "websocket" and connect_ws is not None:
        connection: SessionConnection = await connect_ws(
            local, endpoint.url, expected_peer_id=expected_peer_id, timeout=timeout
        )
        return connection
    raise CarrierUnavailableError(endpoint.carrier)


async def listen(
    local: LocalNode,
    endpoint: Endpoint,
    on_connection: Callable[[SessionConnection], None],
) -> BoundListener:
    """Start accepting carriers on ``endpoint``; every new connection goes to ``on_connection``."""
    if endpoint.carrier == "tcp":
        server = await endpoints.serve_tcp(local, endpoint.host, endpoint.port, on_connection)
        return BoundListener(_bound(endpoint, server.sockets), server)
    if endpoint.carrier == "quic":
        quic = await serve_quic(local, endpoint.host, endpoint.port, on_connection)
        return BoundListener(_with_port(endpoint, quic.port), quic)
    if endpoint.carrier == "https":
        https = await serve_https(
            local, endpoint.host, endpoint.port, on_connection, path=endpoint.path
        )
        return BoundListener(_with_port(endpoint, https.port), https)
    serve_ws = _websocket("serve_ws")
    if endpoint.carrier == "websocket" and serve_ws is not None:
        ws_server = await serve_ws(
            local, endpoint.host, endpoint.port, on_connection, path=endpoint.path,
            behind_proxy=endpoint.behind_proxy, tls=endpoint.tls,
        )  # fmt: skip
        return BoundListener(_bound(endpoint, getattr(ws_server, "sockets", ())), ws_server)
    raise CarrierUnavailableError(endpoint.carrier)


def _with_port(endpoint: Endpoint, port: int) -> Endpoint:
    return Endpoint(carrier=endpoint.carrier, host=endpoint.host, port=port, path=endpoint.path)


def _bound(endpoint: Endpoint, sockets: Any) -> Endpoint:
    """The endpoint with the port the kernel picked (when it was 0)."""
    for sock in sockets or ():
        if isinstance(sock, socket.socket) or hasattr(sock, "getsockname"):
            name = sock.getsockname()
            if isinstance(name, tuple) and len(name) >= 2:
                return Endpoint(
                    carrier=endpoint.carrier, host=endpoint.host, port=name[1], path=endpoint.path
                )
    return endpoint


async def close_listeners(listeners: list[BoundListener]) -> None:
    for listener in listeners:
        listener.close()
    await asyncio.sleep(0)
