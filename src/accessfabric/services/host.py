"""The services a node runs, as one node component: hosted services and TCP forwards.

* every ``[[services]]`` entry registers a handler with the node's dispatcher:
  an incoming stream for it connects to its ``target`` and splices;
* every ``[[forwards]]`` entry (and ``accessfabric forward --listen``) starts a
  :class:`~accessfabric.services.tcp_forward.TcpForwarder`;
* a stream to a service a static peer lists in ``[[peers]] services`` goes
  directly to that peer; any other goes through the node's route execution
  (``runtime.routes.open_stream``) when it has one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from accessfabric.node.config.node_config import ForwardConfig, NodeConfig
from accessfabric.node.streams.connection import FabricStream
from accessfabric.services.fabric import DirectStreamOpener, StreamOpener
from accessfabric.services.ingress import HostIngress
from accessfabric.services.tcp_forward import ForwardCounters, TcpForwarder, service_host
from accessfabric.wire.registry import TrafficClass

if TYPE_CHECKING:
    from accessfabric.node.runtime import NodeRuntime


def direct_opener(runtime: NodeRuntime) -> DirectStreamOpener:
    config: NodeConfig = runtime.config
    placement = {
        service: peer.node_id
        for peer in config.peers
        if peer.node_id != runtime.node_id
        for service in peer.services
    }
    return DirectStreamOpener(runtime.peers.session, placement)


def node_opener(runtime: NodeRuntime) -> StreamOpener:
    """Static placement (``[[peers]] services``) first, then the node's route execution."""
    direct = direct_opener(runtime)
    routes = getattr(runtime, "routes", None)
    if routes is None or not callable(getattr(routes, "open_stream", None)):
        return direct
    return PlacedOrRouted(direct, routes)


class PlacedOrRouted:
    """A service a static peer is configured to host goes there; any other is routed."""

    def __init__(self, direct: DirectStreamOpener, routed: StreamOpener) -> None:
        self.direct = direct
        self.routed = routed

    async def open_stream(self, service: str, traffic_class: TrafficClass) -> FabricStream:
        if service in self.direct.placement:
            return await self.direct.open_stream(service, traffic_class)
        return await self.routed.open_stream(service, traffic_class)


class ServicesComponent:
    def __init__(self, extra_forwards: tuple[ForwardConfig, ...] = ()) -> None:
        self.extra_forwards = extra_forwards
        self.forwarders: list[TcpForwarder] = []
        self.ingresses: list[HostIngress] = []
        self.hosted: dict[str, tuple[str, ForwardCounters]] = {}
        self._modes: dict[str, str] = {}
        self._classes: dict[str, str] = {}

    async def start(self, runtime: NodeRuntime) -> None:
        config = runtime.config
        for service in config.services:
            counters = ForwardCounters()
            target = service.target
            runtime.dispatcher.register(
                service.name, service_host(target.host, target.port, counters)
            )
            self.hosted[service.name] = (str(target), counters)
            self._modes[service.name] = service.mode
            self._classes[service.name] = service.traffic_class.name.lower()
        opener = node_opener(runtime)
        try:
            for forward in (*config.forwards, *self.extra_forwards):
                forwarder = TcpForwarder(
                    opener, forward.listen.host, forward.listen.port, forward.service,
                    forward.traffic_class,
                )  # fmt: skip
                await forwarder.start()
                self.forwarders.append(forwarder)
            for entry in config.ingress:
                ingress = HostIngress(opener, entry)
                await ingress.start()
                self.ingresses.append(ingress)
        except BaseException:
            await self.close()
            raise
        runtime.observe.add_section("services", self.services_status)
        runtime.observe.add_section("forwards", self.forwards_status)
        if self.ingresses:
            runtime.observe.add_section("ingress", self.ingress_status)

    def ingress_status(self) -> list[dict[str, Any]]:
        return [ingress.status() for ingress in self.ingresses]

    def services_status(self) -> list[dict[str, Any]]:
        return [
            {
                "service": name,
                "target": target,
                "class": self._classes[name],
                "mode": self._modes[name],
                "replicas": "local",
                "streams": counters.connections,
                "active": counters.active,
                "failed": counters.failed,
                "resets": counters.resets,
                "bytes_in": counters.bytes_down,
                "bytes_out": counters.bytes_up,
            }
            for name, (target, counters) in sorted(self.hosted.items())
        ]

    def forwards_status(self) -> list[dict[str, Any]]:
        return [
            {
                "listen": f"{f.host}:{f.port}",
                "service": f.service,
                "class": f.traffic_class.name.lower(),
                "connections": f.counters.connections,
                "active": f.counters.active,
                "failed": f.counters.failed,
                "resets": f.counters.resets,
                "denied": f.counters.denied,
                "bytes_up": f.counters.bytes_up,
                "bytes_down": f.counters.bytes_down,
            }
            for f in self.forwarders
        ]

    async def close(self) -> None:
        for forwarder in self.forwarders:
            await forwarder.close()
        self.forwarders.clear()
        for ingress in self.ingresses:
            await ingress.close()
        self.ingresses.clear()
