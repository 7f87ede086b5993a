"""What a service asks of the node: a stream to a logical service, in a traffic class.

:class:`StreamOpener` is the whole interface.  :class:`DirectStreamOpener` is the
simple implementation over static peers that host services (``[[peers]] services``);
route execution (relays, leases) provides another one in ``node/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from accessfabric.errors import ErrorCode, ProtocolError
from accessfabric.node.streams.connection import FabricStream, SessionConnection
from accessfabric.wire.registry import TrafficClass


class StreamOpener(Protocol):
    async def open_stream(self, service: str, traffic_class: TrafficClass) -> FabricStream:
        """A new stream to ``service``; raises ``ConnectionError`` or ``ProtocolError``."""
        ...


class NoServiceHostError(ProtocolError):
    """No known node hosts the service."""

    def __init__(self, service: str) -> None:
        super().__init__(f"no peer hosts service {service!r}", ErrorCode.SERVICE_UNAVAILABLE)
        self.service = service


SessionFor = Callable[[str], Awaitable[SessionConnection]]
"""A ready session to a peer node id (e.g. ``PeerSessionManager.session``)."""


class DirectStreamOpener:
    """Open the stream on the session to the static peer that hosts the service."""

    def __init__(self, session_for: SessionFor, placement: Mapping[str, str]) -> None:
        self._session_for = session_for
        self.placement = dict(placement)
        """service name -> node id of the peer that hosts it."""

    async def open_stream(self, service: str, traffic_class: TrafficClass) -> FabricStream:
        node_id = self.placement.get(service)
        if node_id is None:
            raise NoServiceHostError(service)
        connection = await self._session_for(node_id)
        return await connection.open_stream(service, traffic_class)


class SessionStreamOpener:
    """Open every stream on one given session (tests, the bench, the demo)."""

    def __init__(self, connection: SessionConnection) -> None:
        self.connection = connection

    async def open_stream(self, service: str, traffic_class: TrafficClass) -> FabricStream:
        return await self.connection.open_stream(service, traffic_class)
