"""Two connected, ready :class:`SessionConnection` ends over each carrier, on loopback.

``async with PAIRS["websocket"]() as pair:`` gives ``pair.dialer`` and ``pair.acceptor``
after the handshake succeeded on both sides.  On exit both ends are aborted, every server
is closed, and the nodes' temporary certificate directories are removed.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

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


class Listener(Protocol):
    """What ``serve_tcp``, ``serve_ws`` and ``serve_https`` return."""

    @property
    def sockets(self) -> Sequence[socket.socket]: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


L = TypeVar("L", bound=Listener)


@asynccontextmanager
async def serving(
    serve: Callable[..., Awaitable[L]], node: LocalNode, port: int, **options: Any
) -> AsyncIterator[tuple[L, Acceptor]]:
    """``serve(node, LOOPBACK, port, accepted, **options)`` and its :class:`Acceptor` until
    the block ends; then what it accepted is aborted and the listener closed."""
    accepted = Acceptor()
    server = await serve(node, LOOPBACK, port, accepted, **options)
    try:
        yield server, accepted
    finally:
        accepted.abort_all()
        server.close()
        await server.wait_closed()


def port_of(server: Listener) -> int:
    return int(server.sockets[0].getsockname()[1])


async def dial_tcp(node: LocalNode, port: int, peer: str) -> SessionConnection:
    return await connect_tcp(node, LOOPBACK, port, expected_peer_id=peer)


async def dial_ws(node: LocalNode, port: int, peer: str) -> SessionConnection:
    return await connect_ws(node, f"wss://{LOOPBACK}:{port}/fabric", expected_peer_id=peer)


async def dial_https(node: LocalNode, port: int, peer: str) -> SessionConnection:
    return await connect_https(
        node, f"https://{LOOPBACK}:{port}/fabric-poll", expected_peer_id=peer
    )


@asynccontextmanager
async def _served_pair(
    kind: str,
    config: SessionConfig | None,
    serve: Callable[[LocalNode, str, int, Acceptor], Awaitable[Listener]],
    dial: Callable[[LocalNode, int, str], Awaitable[SessionConnection]],
) -> AsyncIterator[ConnectedPair]:
    """A pair over the carrier ``serve`` listens for on a loopback port ``dial`` connects to."""
    async with (
        two_nodes(config) as (dialer_node, acceptor_node),
        serving(serve, acceptor_node, 0) as (server, accepted),
    ):
        dialer = await dial(dialer_node, port_of(server), acceptor_node.key.node_id)
        try:
            acceptor = await accepted.next_ready()
            yield ConnectedPair(kind, dialer, acceptor, dialer_node, acceptor_node)
        finally:
            await close_pair(dialer, *accepted.seen)


def tcp_connections(
    config: SessionConfig | None = None,
) -> AbstractAsyncContextManager[ConnectedPair]:
    return _served_pair(
        "tcp_tls",
        config,
        serve_tcp,
        dial_tcp,
    )


def websocket_connections(
    config: SessionConfig | None = None,
) -> AbstractAsyncContextManager[ConnectedPair]:
    return _served_pair(
        "websocket",
        config,
        serve_ws,
        dial_ws,
    )


def https_fallback_connections(
    config: SessionConfig | None = None,
) -> AbstractAsyncContextManager[ConnectedPair]:
    return _served_pair(
        "https_fallback",
        config,
        serve_https,
        dial_https,
    )


PAIRS: dict[str, PairFactory] = {
    "https_fallback": https_fallback_connections,
    "memory": memory_connections,
    "tcp_tls": tcp_connections,
    "websocket": websocket_connections,
}
