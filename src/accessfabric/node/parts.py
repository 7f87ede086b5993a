"""``NodeParts``: what the modules that work on a whole node see of it.

:class:`~accessfabric.node.runtime.NodeRuntime` builds a node's parts and wires them
together; it satisfies this protocol.  The control link, the diagnostics and ``ping``
take a ``NodeParts`` instead of importing the runtime, so nothing imports back into
``node/runtime.py`` (no import cycle) and none of them plugs itself into the runtime:
the runtime connects their hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from accessfabric.control.client.client import ControlClient
    from accessfabric.control.kernel.route_book import RouteBook
    from accessfabric.identity.keys import NodeKey
    from accessfabric.node.admin.observability import NodeObservability
    from accessfabric.node.config.node_config import NodeConfig
    from accessfabric.node.dialing.dial import BoundListener
    from accessfabric.node.dialing.endpoints import LocalNode
    from accessfabric.node.dialing.peer_dialer import RankedPeerDialer
    from accessfabric.node.dialing.peers import PeerSessionManager
    from accessfabric.node.host.host_monitor import HostMonitor
    from accessfabric.node.operator_drain import OperatorDrain
    from accessfabric.node.routing.routes import RouteManager
    from accessfabric.node.serving.access import ServiceAccess
    from accessfabric.node.serving.dataplane import DataPlane
    from accessfabric.node.serving.services import ServiceDispatcher
    from accessfabric.node.streams.connection import SessionConnection
    from accessfabric.node.streams.stream_sealing import SealingKeys


class NodeParts(Protocol):
    """A running node's parts (read-only: who builds and wires them is the runtime)."""

    @property
    def node_id(self) -> str: ...

    @property
    def key(self) -> NodeKey: ...

    @property
    def config(self) -> NodeConfig: ...

    @property
    def route_book(self) -> RouteBook: ...

    @property
    def local(self) -> LocalNode: ...

    @property
    def listeners(self) -> list[BoundListener]: ...

    @property
    def accepted_sessions(self) -> int: ...

    def accepted_connections(self) -> list[SessionConnection]:
        """The sessions other nodes opened to this one, live or ending."""
        ...

    @property
    def operator_drain(self) -> OperatorDrain:
        """The operator's drain of this node (``control drain``)."""
        ...

    @property
    def peers(self) -> PeerSessionManager: ...

    @property
    def dialer(self) -> RankedPeerDialer: ...

    @property
    def routes(self) -> RouteManager: ...

    @property
    def data_plane(self) -> DataPlane: ...

    @property
    def dispatcher(self) -> ServiceDispatcher: ...

    @property
    def access(self) -> ServiceAccess: ...

    @property
    def sealing_keys(self) -> SealingKeys: ...

    @property
    def host(self) -> HostMonitor: ...

    @property
    def observe(self) -> NodeObservability: ...

    @property
    def control_client(self) -> ControlClient | None:
        """The control plane client (``[control]``), or None."""
        ...
