"""NodeRuntime in one process: services, static peers on demand, drain on shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from accessfabric.errors import ErrorCode
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import NodeConfig, PeerConfig
from accessfabric.node.dialing import endpoints as node_endpoints
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.dialing.dial import CarrierUnavailableError, carrier_available
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import StreamResetError

LOOPBACK = Endpoint(carrier="tcp", host="127.0.0.1", port=0)


def make_config(tmp_path: Path, name: str, **changes: object) -> NodeConfig:
    config = NodeConfig(
        key_path=tmp_path / f"{name}.key", cert_dir=tmp_path / name, listen=(LOOPBACK,)
    )
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


async def test_echo_and_unknown_service(tmp_path: Path) -> None:
    client = NodeKey.generate()
    allow = {"echo": (client.node_id,), "rdp": (client.node_id,)}  # rdp: allowed, not hosted
    runtime = NodeRuntime(make_config(tmp_path, "a", allow=allow), key=NodeKey.generate())
    await runtime.start()
    try:
        port = runtime.listeners[0].endpoint.port
        local = LocalNode(key=client, cert_dir=tmp_path / "client")
        connection = await connect_tcp(local, "127.0.0.1", port, expected_peer_id=runtime.node_id)
        echo = await connection.open_stream("echo")
        echo.write(b"hello")
        echo.close()
        assert await echo.readexactly(5) == b"hello"
        assert await echo.read() == b""
        rdp = await connection.open_stream("rdp")
        rdp.write(b"x")
        with pytest.raises(StreamResetError) as caught:
            await asyncio.wait_for(rdp.read(), 5)
        assert caught.value.code == ErrorCode.SERVICE_UNAVAILABLE
        assert runtime.dispatcher.refused == 1
        assert connection.is_ready  # one refused stream does not end the session
    finally:
        assert await runtime.shutdown()


async def test_static_peer_dialled_on_demand_and_shutdown_drains(tmp_path: Path) -> None:
    edge_key = NodeKey.generate()
    hub_config = make_config(tmp_path, "hub", allow={"echo": (edge_key.node_id,)})
    hub = NodeRuntime(hub_config, key=NodeKey.generate())
    await hub.start()
    hub_endpoint = hub.listeners[0].endpoint
    dead = Endpoint(carrier="tcp", host="127.0.0.1", port=1)
    peer = PeerConfig(node_id=hub.node_id, endpoints=(dead, hub_endpoint))
    edge = NodeRuntime(make_config(tmp_path, "edge", peers=(peer,)), key=edge_key)
    await edge.start()
    try:
        assert hub.accepted_sessions == 0  # "on-demand": nothing dialled yet
        first, second = await asyncio.gather(
            edge.peers.session(hub.node_id), edge.peers.session(hub.node_id)
        )
        assert first is second
        stream = await first.open_stream("echo")
        stream.write(b"ping")
        assert await stream.readexactly(4) == b"ping"
        counters = edge.peers.counters()
        assert (counters.active, counters.opens, counters.reuses) == (1, 1, 1)
        # Shut the hub down while the stream is open: it drains, the stream still finishes.
        shutdown = asyncio.create_task(hub.shutdown())
        await asyncio.sleep(0.1)
        stream.write(b"more")
        assert await stream.readexactly(4) == b"more"
        stream.close()
        assert await stream.read() == b""
        assert await asyncio.wait_for(shutdown, 5)
        await asyncio.wait_for(first.wait_closed(), 5)
    finally:
        await edge.shutdown()
        await hub.shutdown()


async def test_always_peer_is_kept_up(tmp_path: Path) -> None:
    hub = NodeRuntime(make_config(tmp_path, "hub"), key=NodeKey.generate())
    await hub.start()
    peer = PeerConfig(node_id=hub.node_id, endpoints=(hub.listeners[0].endpoint,), connect="always")
    edge = NodeRuntime(make_config(tmp_path, "edge", peers=(peer,)), key=NodeKey.generate())
    await edge.start()
    try:
        for _ in range(200):
            if edge.peers.current(hub.node_id) is not None:
                break
            await asyncio.sleep(0.01)
        connection = edge.peers.current(hub.node_id)
        assert connection is not None
        await hub.shutdown()  # the hub goes away: the session ends and is evicted
        await asyncio.wait_for(connection.wait_closed(), 5)
        assert edge.peers.counters().evictions == 1
    finally:
        await edge.shutdown()
        await hub.shutdown()


async def test_unavailable_carrier_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build without the WebSocket carrier (its functions missing) says so clearly."""
    assert carrier_available("websocket")
    monkeypatch.delattr(node_endpoints, "serve_ws")
    assert not carrier_available("websocket")
    listen = (Endpoint(carrier="websocket", host="127.0.0.1", port=0, path="/fabric"),)
    runtime = NodeRuntime(make_config(tmp_path, "a", listen=listen), key=NodeKey.generate())
    with pytest.raises(CarrierUnavailableError, match="carrier 'websocket' is not available yet"):
        await runtime.start()
