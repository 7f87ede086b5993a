"""Two in-process nodes: ``host`` serves services, ``edge`` forwards to them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import (
    ForwardConfig,
    NodeConfig,
    PeerConfig,
    ServiceConfig,
)
from accessfabric.node.dialing.address import Endpoint, HostPort
from accessfabric.node.runtime import NodeRuntime
from accessfabric.services.host import ServicesComponent
from accessfabric.wire.registry import TrafficClass

LOOPBACK = Endpoint(carrier="tcp", host="127.0.0.1", port=0)


@dataclass
class Pair:
    host: NodeRuntime
    edge: NodeRuntime
    edge_services: ServicesComponent

    def forward_port(self, index: int = 0) -> int:
        return self.edge_services.forwarders[index].port


@asynccontextmanager
async def fabric_pair(
    tmp_path: Path,
    services: dict[str, tuple[int, TrafficClass]],
    forwards: tuple[str, ...] | None = None,
    *,
    metrics: bool = False,
) -> AsyncIterator[Pair]:
    """``services``: name -> (target port on 127.0.0.1, class); one forward per name."""
    edge_key = NodeKey.generate()
    hosted = tuple(  # default deny: the edge (only) may reach them
        ServiceConfig(
            name=name,
            target=HostPort(host="127.0.0.1", port=port),
            traffic_class=cls,
            allow=(edge_key.node_id,),
        )
        for name, (port, cls) in services.items()
    )
    host_cfg = NodeConfig(
        key_path=tmp_path / "host.key",
        cert_dir=tmp_path / "host",
        listen=(LOOPBACK,),
        services=hosted,
        metrics_listen=HostPort(host="127.0.0.1", port=0) if metrics else None,
        admin_socket=tmp_path / "host.sock" if metrics else None,
    )
    host = NodeRuntime(host_cfg, key=NodeKey.generate(), components=(ServicesComponent(),))
    await host.start()
    names = tuple(services) if forwards is None else forwards
    peer = PeerConfig(
        node_id=host.node_id, endpoints=(host.listeners[0].endpoint,), services=tuple(services)
    )
    edge_cfg = NodeConfig(
        key_path=tmp_path / "edge.key",
        cert_dir=tmp_path / "edge",
        peers=(peer,),
        forwards=tuple(
            ForwardConfig(listen=HostPort(host="127.0.0.1", port=0), service=name) for name in names
        ),
        metrics_listen=HostPort(host="127.0.0.1", port=0) if metrics else None,
        admin_socket=tmp_path / "edge.sock" if metrics else None,
    )
    component = ServicesComponent()
    edge = NodeRuntime(edge_cfg, key=edge_key, components=(component,))
    await edge.start()
    try:
        yield Pair(host, edge, component)
    finally:
        await edge.shutdown()
        await host.shutdown()
