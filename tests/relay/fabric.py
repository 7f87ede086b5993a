"""In-process fabrics over real TCP on loopback: source, relays and destination runtimes."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from accessfabric.bench.relay_lab import SEALED_SINK, SinkResults, issue_route, sealed_sink
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.kernel.leased_route import LeasedRoute
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import NodeConfig, PeerConfig
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.serving.admission import AdmissionLimits
from accessfabric.session import SessionConfig

LOOPBACK = Endpoint(carrier="tcp", host="127.0.0.1", port=0)
SESSION = SessionConfig(keepalive_interval=1.0, ping_timeout=2.0)


def config(tmp_path: Path, name: str, authority: Authority, peers: tuple[PeerConfig, ...] = (),
           allow: dict[str, tuple[str, ...]] | None = None,
           limits: AdmissionLimits | None = None) -> NodeConfig:  # fmt: skip
    return NodeConfig(
        limits=limits or AdmissionLimits(),
        allow=allow or {},
        key_path=tmp_path / f"{name}.key",
        cert_dir=tmp_path / name,
        listen=(LOOPBACK,),
        peers=peers,
        session=SESSION,
        authority_key=authority.public_key,
        drain_timeout=1.0,
    )


def peer(runtime: NodeRuntime) -> PeerConfig:
    return PeerConfig(node_id=runtime.node_id, endpoints=(runtime.listeners[0].endpoint,))


@dataclasses.dataclass
class Fabric:
    authority: Authority
    source: NodeRuntime
    relays: list[NodeRuntime]
    destination: NodeRuntime
    sink: SinkResults
    keys: dict[str, NodeKey]
    other_sources: list[NodeRuntime] = dataclasses.field(default_factory=list)
    """Sources beyond the first (``build(..., sources=n)``), peered like it."""

    def routes(self, *relay_chains: list[int], tenant: str = "bench", first_id: int = 1,
               source: NodeRuntime | None = None) -> list[LeasedRoute]:  # fmt: skip
        """Leases from ``source`` (the first source) over each chain of relays to the
        destination, for ``tenant``, with route ids from ``first_id`` on."""
        first = self.source if source is None else source
        out = []
        for index, chain in enumerate(relay_chains, start=first_id):
            hops = [first.node_id, *(self.relays[i].node_id for i in chain),
                    self.destination.node_id]  # fmt: skip
            out.append(issue_route(self.authority, index, hops, tenant=tenant))
        return out

    def sealing_key(self, node_id: str) -> bytes | None:
        key = self.keys.get(node_id)
        return None if key is None else key.sealing_public_key_bytes

    async def stop(self) -> None:
        for runtime in [self.source, *self.other_sources, *self.relays, self.destination]:
            await runtime.shutdown()


@asynccontextmanager
async def built(tmp_path: Path, relays: int, **options: Any) -> AsyncIterator[Fabric]:
    """:func:`build`, stopped when the block ends."""
    fabric = await build(tmp_path, relays, **options)
    try:
        yield fabric
    finally:
        await fabric.stop()


async def build(
    tmp_path: Path, relays: int, chained: bool = False, relay_limits: AdmissionLimits | None = None,
    sources: int = 1,
) -> Fabric:  # fmt: skip
    """Destination, ``relays`` relays (each peered with the destination; ``chained``: relay
    i also peers with relay i+1; ``relay_limits``: the relays' ``[limits]``), and
    ``sources`` sources, each peered with every relay."""
    authority = Authority(NodeKey.generate())
    keys: dict[str, NodeKey] = {}

    def key() -> NodeKey:
        k = NodeKey.generate()
        keys[k.node_id] = k
        return k

    sink = SinkResults()
    dst_key = key()
    src_keys = [key() for _ in range(sources)]
    # default deny: the destination lets the sources (only) reach its services
    allowed = tuple(k.node_id for k in src_keys)
    allow = {SEALED_SINK: allowed, "echo": allowed}
    destination = NodeRuntime(config(tmp_path, "dst", authority, allow=allow), key=dst_key)
    await destination.start()
    destination.dispatcher.register(SEALED_SINK, sealed_sink(sink))
    started: list[NodeRuntime] = []
    for index in reversed(range(relays)):
        peers = [peer(destination)]
        if chained and started:
            peers.append(peer(started[0]))
        relay_config = config(tmp_path, f"r{index}", authority, tuple(peers), limits=relay_limits)
        runtime = NodeRuntime(relay_config, key=key())
        await runtime.start()
        started.insert(0, runtime)
    runtimes = []
    for index, src_key in enumerate(src_keys):
        name = "src" if index == 0 else f"src{index}"
        runtime = NodeRuntime(
            config(tmp_path, name, authority, tuple(peer(r) for r in started)), key=src_key
        )
        await runtime.start()
        runtimes.append(runtime)
    for runtime in (*runtimes, *started, destination):  # as the directory would tell them
        for k in keys.values():
            runtime.sealing_keys.add(k.node_id, k.sealing_public_key_bytes)
    source, *others = runtimes
    return Fabric(authority, source, started, destination, sink, keys, others)


def kill(runtime: NodeRuntime) -> None:
    """What SIGKILL does to a node's sockets: listeners closed, every carrier aborted."""
    for bound in runtime.listeners:
        bound.close()
    runtime._stopping = True
    for connection in list(runtime._accepted):
        connection.abort()
    for connection in list(runtime.peers._live):
        connection.abort()
