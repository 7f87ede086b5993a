"""PeerSessionManager over the in-memory carrier (and once over TCP+TLS)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.carriers.memory import memory_pair
from accessfabric.errors import ErrorCode, IdentityMismatchError
from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.dialing.dial import dial, listen
from accessfabric.node.dialing.endpoints import LocalNode
from accessfabric.node.dialing.peers import (
    PeerSessionCounters,
    PeerSessionManager,
    PeerUnreachableError,
    UnknownPeerError,
)
from accessfabric.node.streams.connection import SessionConnection
from tests.conditions import until


class MemoryFabric:
    """Nodes reachable at fake endpoints through in-memory carriers; records every dial."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.client = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "client")
        self.nodes: dict[int, LocalNode] = {}
        self.accepted: list[SessionConnection] = []
        self.dials: list[Endpoint] = []
        self.delay = 0.0

    def add_node(self, port: int, key: NodeKey | None = None) -> LocalNode:
        node = LocalNode(key=key or NodeKey.generate(), cert_dir=self.tmp_path / str(port))
        self.nodes[port] = node
        return node

    async def dial(self, endpoint: Endpoint, node_id: str) -> SessionConnection:
        self.dials.append(endpoint)
        if self.delay:
            await asyncio.sleep(self.delay)
        server = self.nodes.get(endpoint.port)
        if server is None:
            raise ConnectionRefusedError(111, "Connection refused")
        made: list[SessionConnection] = []

        def dialer(info: CarrierInfo, transport: ByteTransport) -> CarrierListener:
            made.append(self.client.new_connection(info, transport, None, node_id))
            return made[-1]

        def acceptor(info: CarrierInfo, transport: ByteTransport) -> CarrierListener:
            connection = server.new_connection(info, transport, None)
            self.accepted.append(connection)
            return connection

        memory_pair(dialer, acceptor)
        try:
            await made[0].ready()
        except BaseException:
            made[0].abort()
            raise
        return made[0]


def endpoint(port: int) -> Endpoint:
    return Endpoint(carrier="tcp", host="memory", port=port)


def counters(manager: PeerSessionManager) -> dict[str, int]:
    snapshot = manager.counters()
    assert isinstance(snapshot, PeerSessionCounters)
    return {
        "active": snapshot.active,
        "opens": snapshot.opens,
        "reuses": snapshot.reuses,
        "evictions": snapshot.evictions,
        "closes": snapshot.closes,
        "dial_failures": snapshot.dial_failures,
    }


async def test_one_session_per_peer_reused(tmp_path: Path) -> None:
    fabric = MemoryFabric(tmp_path)
    peer = fabric.add_node(1)
    manager = PeerSessionManager(fabric.dial, [(peer.key.node_id, [endpoint(1)])])
    first = await manager.session(peer.key.node_id)
    second = await manager.session(peer.key.node_id)
    assert first is second
    assert await first.ping() >= 0
    assert counters(manager) == dict(
        active=1, opens=1, reuses=1, evictions=0, closes=0, dial_failures=0
    )
    await manager.aclose(drain_timeout=2)


async def test_concurrent_callers_share_one_dial(tmp_path: Path) -> None:
    fabric = MemoryFabric(tmp_path)
    peer = fabric.add_node(1)
    fabric.delay = 0.05  # every caller arrives while the first dial is in flight
    manager = PeerSessionManager(fabric.dial, [(peer.key.node_id, [endpoint(1)])])
    sessions = await asyncio.gather(*(manager.session(peer.key.node_id) for _ in range(10)))
    assert len({id(s) for s in sessions}) == 1
    assert len(fabric.dials) == 1 and len(fabric.accepted) == 1
    assert counters(manager)["opens"] == 1 and counters(manager)["reuses"] == 9
    await manager.aclose(drain_timeout=2)


async def test_closed_session_is_evicted_and_reopened(tmp_path: Path) -> None:
    fabric = MemoryFabric(tmp_path)
    peer = fabric.add_node(1)
    manager = PeerSessionManager(fabric.dial, [(peer.key.node_id, [endpoint(1)])])
    first = await manager.session(peer.key.node_id)
    await fabric.accepted[0].goaway(ErrorCode.NO_ERROR, "peer restarts")  # the peer drains
    await asyncio.wait_for(first.wait_closed(), 5)
    await until(lambda: manager.counters().evictions == 1)
    assert manager.current(peer.key.node_id) is None
    assert counters(manager)["active"] == 0
    second = await manager.session(peer.key.node_id)
    assert second is not first and second.is_ready
    assert counters(manager) == dict(
        active=1, opens=2, reuses=0, evictions=1, closes=0, dial_failures=0
    )
    await manager.aclose(drain_timeout=2)


async def test_draining_session_is_not_reused(tmp_path: Path) -> None:
    fabric = MemoryFabric(tmp_path)
    peer = fabric.add_node(1)
    manager = PeerSessionManager(fabric.dial, [(peer.key.node_id, [endpoint(1)])])
    first = await manager.session(peer.key.node_id)
    stream = await first.open_stream("echo")  # keeps the first session draining, not closed
    stream.write(b"x")
    await fabric.accepted[0].accept_stream()
    await fabric.accepted[0].goaway(ErrorCode.NO_ERROR, "draining")
    await until(lambda: manager.current(peer.key.node_id) is None)
    second = await manager.session(peer.key.node_id)
    assert second is not first and not first.is_closed
    assert counters(manager)["evictions"] == 1
    stream.reset()
    await manager.aclose(drain_timeout=2)
    assert first.is_closed and second.is_closed


async def test_endpoints_walked_in_order(tmp_path: Path) -> None:
    fabric = MemoryFabric(tmp_path)
    peer = fabric.add_node(3)
    fabric.add_node(2)  # another node answers here: identity mismatch, move on
    manager = PeerSessionManager(
        fabric.dial, [(peer.key.node_id, [endpoint(1), endpoint(2), endpoint(3)])]
    )
    connection = await manager.session(peer.key.node_id)
    assert connection.session.peer_node_id == peer.key.node_id
    assert [e.port for e in fabric.dials] == [1, 2, 3]


async def test_unreachable_peer_reports_every_endpoint(tmp_path: Path) -> None:
    fabric = MemoryFabric(tmp_path)
    peer_key = NodeKey.generate()
    fabric.add_node(2)  # not the peer
    manager = PeerSessionManager(fabric.dial, [(peer_key.node_id, [endpoint(1), endpoint(2)])])
    with pytest.raises(PeerUnreachableError) as caught:
        await manager.session(peer_key.node_id)
    errors = [error for _, error in caught.value.attempts]
    assert isinstance(errors[0], ConnectionRefusedError)
    assert isinstance(errors[1], IdentityMismatchError)
    assert "tcp://memory:1" in str(caught.value)
    assert counters(manager)["dial_failures"] == 1 and counters(manager)["active"] == 0
    fabric.add_node(1, peer_key)  # the peer comes up: the next call dials again
    assert (await manager.session(peer_key.node_id)).is_ready
    assert counters(manager)["opens"] == 1


async def test_unknown_peer(tmp_path: Path) -> None:
    manager = PeerSessionManager(MemoryFabric(tmp_path).dial)
    with pytest.raises(UnknownPeerError):
        await manager.session(NodeKey.generate().node_id)


async def test_close_peer_and_aclose(tmp_path: Path) -> None:
    fabric = MemoryFabric(tmp_path)
    a, b = fabric.add_node(1), fabric.add_node(2)
    manager = PeerSessionManager(
        fabric.dial, [(a.key.node_id, [endpoint(1)]), (b.key.node_id, [endpoint(2)])]
    )
    session_a = await manager.session(a.key.node_id)
    session_b = await manager.session(b.key.node_id)
    await manager.close_peer(a.key.node_id)
    await asyncio.wait_for(session_a.wait_closed(), 5)
    await manager.aclose(drain_timeout=2)
    assert session_b.is_closed
    assert counters(manager) == dict(
        active=0, opens=2, reuses=0, evictions=0, closes=2, dial_failures=0
    )
    with pytest.raises(ConnectionError):
        await manager.session(a.key.node_id)


async def test_over_tcp_tls(tmp_path: Path) -> None:
    server = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "server")
    client = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "client")
    accepted: list[SessionConnection] = []
    bound = await listen(server, Endpoint(carrier="tcp", host="127.0.0.1", port=0), accepted.append)

    async def dial_peer(target: Endpoint, node_id: str) -> SessionConnection:
        return await dial(client, target, expected_peer_id=node_id, timeout=5)

    manager = PeerSessionManager(dial_peer, [(server.key.node_id, [bound.endpoint])])
    try:
        sessions = await asyncio.gather(*(manager.session(server.key.node_id) for _ in range(5)))
        assert len({id(s) for s in sessions}) == 1 and len(accepted) == 1
        assert await sessions[0].ping() < 1.0
        accepted[0].abort()  # the carrier dies under the session
        await until(lambda: manager.counters().evictions == 1)
        again = await manager.session(server.key.node_id)
        assert again is not sessions[0] and len(accepted) == 2
    finally:
        await manager.aclose(drain_timeout=2)
        bound.close()
