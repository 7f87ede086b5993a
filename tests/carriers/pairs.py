"""Two connected, ready :class:`SessionConnection` ends over each carrier, on loopback.

``async with PAIRS["websocket"]() as pair:`` gives ``pair.dialer`` and ``pair.acceptor``
after the handshake succeeded on both sides.  On exit both ends are aborted, every server
is closed, and the nodes' temporary certificate directories are removed.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.carriers.memory import memory_pair
from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.endpoints import (
    LocalNode,
    connect_tcp,
    connect_ws,
    serve_tcp,
    serve_ws,
)
from accessfabric.node.dialing.https_endpoints import connect_https, serve_https
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.session import SessionConfig

LOOPBACK = "127.0.0.1"
SETUP_TIMEOUT = 10.0


@dataclass
class ConnectedPair:
    kind: str
    dialer: SessionConnection
    acceptor: SessionConnection
    dialer_node: LocalNode
    acceptor_node: LocalNode


PairFactory = Callable[..., AbstractAsyncContextManager[ConnectedPair]]


def make_node(cert_dir: Path, config: SessionConfig | None = None) -> LocalNode:
    return LocalNode(
        key=NodeKey.generate(), cert_dir=cert_dir, session_config=config or SessionConfig()
    )


@asynccontextmanager
async def two_nodes(
    config: SessionConfig | None = None,
) -> AsyncIterator[tuple[LocalNode, LocalNode]]:
    with tempfile.TemporaryDirectory(prefix="af-carrier-") as tmp:
        yield make_node(Path(tmp) / "dialer", config), make_node(Path(tmp) / "acceptor", config)


class Acceptor:
    """Collects the connections a server hands over."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[SessionConnection] = asyncio.Queue()
        self.seen: list[SessionConnection] = []

    def __call__(self, connection: SessionConnection) -> None:
        self.seen.append(connection)
        self.connections.put_nowait(connection)

    async def next_ready(self) -> SessionConnection:
        connection = await asyncio.wait_for(self.connections.get(), SETUP_TIMEOUT)
        await asyncio.wait_for(connection.ready(), SETUP_TIMEOUT)
        return connection

    def abort_all(self) -> None:
        for connection in self.seen:
            connection.abort()


async def close_pair(*connections: SessionConnection) -> None:
    for connection in connections:
        connection.abort()
    for connection in connections:
        await asyncio.wait_for(connection.wait_closed(), SETUP_TIMEOUT)


@asynccontextmanager
async def memory_connections(config: SessionConfig | None = None) -> AsyncIterator[ConnectedPair]:
    async with two_nodes(config) as (dialer_node, acceptor_node):
        made: dict[bool, SessionConnection] = {}

        def factory(
            node: LocalNode, expected: str | None
        ) -> Callable[[CarrierInfo, ByteTransport], CarrierListener]:
            def build(info: CarrierInfo, transport: ByteTransport) -> CarrierListener:
                made[info.dialer] = node.new_connection(info, transport, None, expected)
                return made[info.dialer]

            return build

        memory_pair(factory(dialer_node, acceptor_node.key.node_id), factory(acceptor_node, None))
        dialer, acceptor = made[True], made[False]
        try:
            await asyncio.wait_for(asyncio.gather(dialer.ready(), acceptor.ready()), SETUP_TIMEOUT)
            yield ConnectedPair("memory", dialer, acceptor, dialer_node, acceptor_node)
        finally:
            await close_pair(dialer, acceptor)


@asynccontextmanager
async def tcp_connections(config: SessionConfig | None = None) -> AsyncIterator[ConnectedPair]:
    async with two_nodes(config) as (dialer_node, acceptor_node):
        accepted = Acceptor()
        server = await serve_tcp(acceptor_node, LOOPBACK, 0, accepted)
        try:
            port = server.sockets[0].getsockname()[1]
            dialer = await connect_tcp(
                dialer_node, LOOPBACK, port, expected_peer_id=acceptor_node.key.node_id
            )
            try:
                acceptor = await accepted.next_ready()
                yield ConnectedPair("tcp_tls", dialer, acceptor, dialer_node, acceptor_node)
            finally:
                await close_pair(dialer, *accepted.seen)
        finally:
            accepted.abort_all()
            server.close()
            await server.wait_closed()


@asynccontextmanager
async def websocket_connections(
    config: SessionConfig | None = None,
) -> AsyncIterator[ConnectedPair]:
    async with two_nodes(config) as (dialer_node, acceptor_node):
        accepted = Acceptor()
        server = await serve_ws(acceptor_node, LOOPBACK, 0, accepted)
        try:
            port = server.sockets[0].getsockname()[1]
            dialer = await connect_ws(
                dialer_node,
                f"wss://{LOOPBACK}:{port}/fabric",
                expected_peer_id=acceptor_node.key.node_id,
            )
            try:
                acceptor = await accepted.next_ready()
                yield ConnectedPair("websocket", dialer, acceptor, dialer_node, acceptor_node)
            finally:
                await close_pair(dialer, *accepted.seen)
        finally:
            accepted.abort_all()
            server.close()
            await server.wait_closed()


@asynccontextmanager
async def https_fallback_connections(
    config: SessionConfig | None = None,
) -> AsyncIterator[ConnectedPair]:
    async with two_nodes(config) as (dialer_node, acceptor_node):
        accepted = Acceptor()
        server = await serve_https(acceptor_node, LOOPBACK, 0, accepted)
        try:
            dialer = await connect_https(
                dialer_node,
                f"https://{LOOPBACK}:{server.port}/fabric-poll",
                expected_peer_id=acceptor_node.key.node_id,
            )
            try:
                acceptor = await accepted.next_ready()
                yield ConnectedPair("https_fallback", dialer, acceptor, dialer_node, acceptor_node)
            finally:
                await close_pair(dialer, *accepted.seen)
        finally:
            accepted.abort_all()
            await server.wait_closed()


PAIRS: dict[str, PairFactory] = {
    "https_fallback": https_fallback_connections,
    "memory": memory_connections,
    "tcp_tls": tcp_connections,
    "websocket": websocket_connections,
}
