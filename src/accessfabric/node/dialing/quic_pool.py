"""Client QUIC connections reused per peer endpoint: node policy over the QUIC carrier.

A client keeps one QUIC connection per peer endpoint in a
:class:`QuicConnectionPool` (key: host, port, expected node id); a new session to the
same endpoint — typically the replacement of a draining one — opens another QUIC
stream instead of another handshake, up to ``max_streams_per_connection``.  A
connection without streams closes after ``idle_ttl``.  Going over the limit, locally
or because the peer refused the stream, raises :class:`CarrierCapacityLimited`:
capacity pressure, not an endpoint failure (``docs/adr/0007-quic-library.md``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from accessfabric.carriers.errors import CarrierCapacityLimited, CertificatePinMismatch
from accessfabric.carriers.quic_config import ListenerFactory, QuicCarrierConfig, QuicPin
from accessfabric.carriers.quic_protocol import QuicCarrierProtocol, dial_quic
from accessfabric.carriers.quic_stream import QuicStreamCarrier
from accessfabric.identity.node_id import parse_node_id

PoolKey = tuple[str, int, str | None]


@dataclass
class QuicPoolStats:
    connections_opened: int = 0
    connections_reused: int = 0
    connections_expired: int = 0
    capacity_limited: int = 0


@dataclass
class QuicConnectionPool:
    """Client QUIC connections reused per peer endpoint ``(host, port, expected node id)``."""

    config: QuicCarrierConfig = field(default_factory=QuicCarrierConfig)
    local_host: str | None = None
    stats: QuicPoolStats = field(default_factory=QuicPoolStats)
    _connections: dict[PoolKey, QuicCarrierProtocol] = field(default_factory=dict)
    _dialing: dict[PoolKey, asyncio.Future[QuicCarrierProtocol]] = field(default_factory=dict)
    _expiry: dict[PoolKey, asyncio.TimerHandle] = field(default_factory=dict)

    def connection(self, host: str, port: int, node_id: str | None) -> QuicCarrierProtocol | None:
        key = (host, port, parse_node_id(node_id) if node_id else None)
        return self._connections.get(key)

    def __len__(self) -> int:
        return len(self._connections)

    async def open_stream(
        self,
        host: str,
        port: int,
        pin: QuicPin,
        factory: ListenerFactory,
        *,
        timeout: float = 10.0,
    ) -> QuicStreamCarrier:
        """A new stream carrier to the endpoint, on a cached connection when there is one.

        Raises :class:`CarrierCapacityLimited` when the cached connection carries
        ``max_streams_per_connection`` sessions already, and whatever :func:`dial_quic`
        raises when a new connection is needed.
        """
        key: PoolKey = (host, port, pin.node_id)
        connection = self._connections.get(key)
        if connection is not None and connection.is_usable:
            self.stats.connections_reused += 1
            self._check_fingerprint(connection, pin)
        else:
            connection = await self._dial(key, pin, timeout)
        timer = self._expiry.pop(key, None)
        if timer is not None:
            timer.cancel()
        try:
            return connection.open_stream(factory)
        except CarrierCapacityLimited:
            self.stats.capacity_limited += 1
            raise

    @staticmethod
    def _check_fingerprint(connection: QuicCarrierProtocol, pin: QuicPin) -> None:
        wanted = pin.certificate_fingerprint
        if wanted is not None and (connection.peer_tls is None or connection.peer_tls[0] != wanted):
            raise CertificatePinMismatch(
                f"{connection.endpoint}: cached connection's certificate is not the pinned one"
            )

    async def _dial(self, key: PoolKey, pin: QuicPin, timeout: float) -> QuicCarrierProtocol:
        pending = self._dialing.get(key)
        if pending is not None:
            connection = await asyncio.shield(pending)
            self._check_fingerprint(connection, pin)
            return connection
        loop = asyncio.get_running_loop()
        future: asyncio.Future[QuicCarrierProtocol] = loop.create_future()
        self._dialing[key] = future
        try:
            connection = await dial_quic(
                key[0], key[1], pin, self.config, timeout=timeout, local_host=self.local_host
            )
        except BaseException as error:
            future.set_exception(error)
            future.exception()
            raise
        finally:
            self._dialing.pop(key, None)
        future.set_result(connection)
        self.stats.connections_opened += 1
        self._connections[key] = connection
        connection.on_idle = lambda c: self._idle(key, c)
        connection.on_terminated.append(lambda c: self._gone(key, c))
        return connection

    def _idle(self, key: PoolKey, connection: QuicCarrierProtocol) -> None:
        if self._connections.get(key) is not connection:
            return
        timer = self._expiry.pop(key, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._expiry[key] = loop.call_later(self.config.idle_ttl, self._expire, key, connection)

    def _expire(self, key: PoolKey, connection: QuicCarrierProtocol) -> None:
        self._expiry.pop(key, None)
        if self._connections.get(key) is connection and connection.active_streams == 0:
            del self._connections[key]
            self.stats.connections_expired += 1
            connection.close_connection("idle")

    def _gone(self, key: PoolKey, connection: QuicCarrierProtocol) -> None:
        if self._connections.get(key) is connection:
            del self._connections[key]
        timer = self._expiry.pop(key, None)
        if timer is not None:
            timer.cancel()

    async def aclose(self, timeout: float = 2.0) -> None:
        """Close every cached connection and wait (bounded) until they terminated."""
        connections = list(self._connections.values())
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
        self._connections.clear()
        for connection in connections:
            connection.close_connection("pool closed")
        waiting = [asyncio.shield(c.terminated) for c in connections if not c.terminated.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        for connection in connections:
            connection.close_socket()
