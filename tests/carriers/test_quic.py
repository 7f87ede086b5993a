"""QUIC carrier: handshake, bytes both ways, pinning, pool reuse and TTL, stream limits, close,
and connection migration between two addresses inside network namespaces."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from accessfabric.carriers.errors import CarrierCapacityLimited, CertificatePinMismatch
from accessfabric.carriers.quic_config import QuicCarrierConfig
from accessfabric.carriers.quic_server import QuicCarrierServer
from accessfabric.errors import ErrorCode, IdentityMismatchError
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.tls import certificate_fingerprint, write_certificate_files
from accessfabric.node.dialing.endpoints import LocalNode
from accessfabric.node.dialing.quic_endpoints import connect_quic, serve_quic
from accessfabric.node.dialing.quic_pool import QuicConnectionPool
from accessfabric.node.streams.connection import FabricStream, SessionConnection
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until

HOST = "127.0.0.1"
DEADLINE = 20.0
T = TypeVar("T")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main(), DEADLINE)

    return asyncio.run(bounded())


class Nodes:
    def __init__(self, tmp_path: Path) -> None:
        self.client = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "client")
        self.server = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "server")
        self.accepted: asyncio.Queue[SessionConnection] | None = None

    async def serve(self, config: QuicCarrierConfig | None = None) -> QuicCarrierServer:
        accepted: asyncio.Queue[SessionConnection] = asyncio.Queue()
        self.accepted = accepted
        return await serve_quic(self.server, HOST, 0, accepted.put_nowait, config=config)

    @asynccontextmanager
    async def serving(
        self, config: QuicCarrierConfig | None = None
    ) -> AsyncIterator[QuicCarrierServer]:
        server = await self.serve(config)
        try:
            yield server
        finally:
            server.close()

    async def dial(
        self, server: QuicCarrierServer, pool: QuicConnectionPool | None = None
    ) -> SessionConnection:
        """The client's connection to ``server``, pinned to the server node."""
        return await connect_quic(
            self.client, HOST, server.port, expected_peer_id=self.server.key.node_id, pool=pool
        )

    async def next_accepted(self) -> SessionConnection:
        assert self.accepted is not None
        connection = await asyncio.wait_for(self.accepted.get(), 5)
        await asyncio.wait_for(connection.ready(), 5)
        return connection

    def server_fingerprint(self) -> bytes:
        cert_path, _ = write_certificate_files(self.server.key, self.server.cert_dir)
        import ssl

        return certificate_fingerprint(ssl.PEM_cert_to_DER_cert(cert_path.read_text()))


@asynccontextmanager
async def pooled(config: QuicCarrierConfig) -> AsyncIterator[QuicConnectionPool]:
    pool = QuicConnectionPool(config)
    try:
        yield pool
    finally:
        await pool.aclose()


@pytest.fixture
def nodes(tmp_path: Path) -> Nodes:
    return Nodes(tmp_path)


async def pump(stream: FabricStream, total: int) -> str:
    digest = hashlib.sha256()
    sent = 0
    while sent < total:
        piece = os.urandom(min(64 * 1024, total - sent))
        digest.update(piece)
        stream.write(piece)
        await stream.drain()
        sent += len(piece)
    stream.close()
    return digest.hexdigest()


async def drain(stream: FabricStream) -> str:
    digest = hashlib.sha256()
    while chunk := await stream.read(64 * 1024):
        digest.update(chunk)
    stream.close()
    return digest.hexdigest()


async def closed_within(*connections: SessionConnection, timeout: float = 5.0) -> list[Any]:
    return [await asyncio.wait_for(c.wait_closed(), timeout) for c in connections]


def test_handshake_gives_both_sides_the_right_peer_ids(nodes: Nodes) -> None:
    async def main() -> None:
        async with nodes.serving() as server:
            dialer = await nodes.dial(server)
            acceptor = await nodes.next_accepted()
            assert (await dialer.ready()).peer_node_id == nodes.server.key.node_id
            assert (await acceptor.ready()).peer_node_id == nodes.client.key.node_id
            assert dialer.info.kind == acceptor.info.kind == "quic"
            assert dialer.info.dialer and not acceptor.info.dialer
            # both ends derived the same 32-byte exporter value from this handshake
            assert len(dialer.info.channel_binding) == 32
            assert dialer.info.channel_binding == acceptor.info.channel_binding
            assert dialer.info.peer_certificate_key == nodes.server.key.public_key_bytes
            dialer.abort()
            await closed_within(dialer, acceptor)

    run(main)


def test_streams_both_ways_arrive_intact(nodes: Nodes) -> None:
    async def main() -> None:
        async with nodes.serving() as server:
            dialer = await nodes.dial(server)
            acceptor = await nodes.next_accepted()
            up = await dialer.open_stream("up", TrafficClass.BULK)
            down = await acceptor.open_stream("down", TrafficClass.RELIABLE)
            incoming_up = await acceptor.accept_stream()
            incoming_down = await dialer.accept_stream()
            assert incoming_up is not None and incoming_down is not None
            sent_up, sent_down, got_up, got_down = await asyncio.gather(
                pump(up, 3 << 20),
                pump(down, 2 << 20),
                drain(incoming_up),
                drain(incoming_down),
            )
            assert (got_up, got_down) == (sent_up, sent_down)
            await dialer.goaway()
            await closed_within(dialer, acceptor)

    run(main)


def test_the_server_takes_a_burst_of_datagrams_in_one_receive_and_one_transmit(
    nodes: Nodes,
) -> None:
    """qh3's server handed each datagram of a GRO burst to its connection alone: a receive
    and a transmit (an ACK, a sendmsg) per packet, twice the CPU per byte of the client
    side.  Now a burst for one connection arrives as one batch (and the bytes intact)."""

    async def main() -> None:
        async with nodes.serving() as server:
            dialer = await nodes.dial(server)
            acceptor = await nodes.next_accepted()
            (protocol,) = server.protocols
            batches: list[int] = []
            receive_many = protocol.datagrams_received

            def counting(data: list[bytes], addr: Any) -> None:
                batches.append(len(data))
                receive_many(data, addr)

            protocol.datagrams_received = counting  # type: ignore[method-assign]
            up = await dialer.open_stream("up", TrafficClass.BULK)
            incoming = await acceptor.accept_stream()
            assert incoming is not None
            sent, got = await asyncio.gather(pump(up, 4 << 20), drain(incoming))
            assert got == sent
            assert batches, "the server's connection never got a batch of datagrams"
            assert max(batches) > 1, batches
            dialer.abort()
            await closed_within(dialer, acceptor)

    run(main)


def test_wrong_node_id_is_a_clean_pin_error(nodes: Nodes) -> None:
    async def main() -> None:
        async with nodes.serving() as server:
            other = NodeKey.generate().node_id
            with pytest.raises(CertificatePinMismatch) as caught:
                await connect_quic(nodes.client, HOST, server.port, expected_peer_id=other)
            assert isinstance(caught.value, IdentityMismatchError)
            assert nodes.server.key.node_id in str(caught.value)
            assert nodes.accepted is not None and nodes.accepted.empty()

    run(main)


def test_wrong_fingerprint_is_a_clean_pin_error_and_the_right_one_connects(nodes: Nodes) -> None:
    async def main() -> None:
        async with nodes.serving() as server:
            with pytest.raises(CertificatePinMismatch):
                await connect_quic(
                    nodes.client,
                    HOST,
                    server.port,
                    expected_peer_id=None,
                    certificate_fingerprint=hashlib.sha256(b"someone else").digest(),
                )
            dialer = await connect_quic(
                nodes.client,
                HOST,
                server.port,
                expected_peer_id=None,
                certificate_fingerprint=nodes.server_fingerprint(),
            )
            assert (await dialer.ready()).peer_node_id == nodes.server.key.node_id
            dialer.abort()
            with pytest.raises(ValueError, match="pin"):
                await connect_quic(nodes.client, HOST, server.port, expected_peer_id=None)

    run(main)


def test_pool_reuses_one_connection_and_closes_it_after_the_idle_ttl(nodes: Nodes) -> None:
    async def main() -> None:
        peer = nodes.server.key.node_id
        async with nodes.serving() as server, pooled(QuicCarrierConfig(idle_ttl=0.3)) as pool:
            first = await nodes.dial(server, pool)
            second = await nodes.dial(server, pool)
            accepted = [await nodes.next_accepted(), await nodes.next_accepted()]
            quic = pool.connection(HOST, server.port, peer)
            assert quic is not None and quic.active_streams == 2
            assert (pool.stats.connections_opened, pool.stats.connections_reused) == (1, 1)
            assert first.info.channel_binding != second.info.channel_binding  # per stream
            for connection in (first, second):
                await connection.goaway()
            await closed_within(first, second, *accepted)
            await until(lambda: quic.active_streams == 0, what="both streams ended")
            assert len(pool) == 1  # idle, still cached
            await asyncio.wait_for(asyncio.shield(quic.terminated), 3)
            assert len(pool) == 0 and pool.stats.connections_expired == 1
            third = await nodes.dial(server, pool)
            assert pool.stats.connections_opened == 2
            third.abort()

    run(main)


def test_migrate_moves_every_session_of_the_connection_once(nodes: Nodes) -> None:
    """``SessionConnection.migrate``: a new socket and connection id, one per connection."""

    async def main() -> None:
        peer = nodes.server.key.node_id
        async with nodes.serving() as server, pooled(QuicCarrierConfig()) as pool:
            first = await nodes.dial(server, pool)
            second = await nodes.dial(server, pool)
            accepted = await nodes.next_accepted()
            await nodes.next_accepted()
            quic = pool.connection(HOST, server.port, peer)
            assert quic is not None
            before = quic.local_address
            assert await first.migrate() and await second.migrate()
            assert quic.migrations == 1 and quic.local_address != before
            assert await first.ping() > 0 and await second.ping() > 0  # over the new socket
            stream = await first.open_stream("sink", TrafficClass.BULK)
            stream.write(b"after the move")
            await stream.drain()
            incoming = await asyncio.wait_for(accepted.accept_stream(), 5)
            assert incoming is not None
            assert await asyncio.wait_for(incoming.readexactly(14), 5) == b"after the move"
            assert not await accepted.migrate()  # the server side does not migrate

    run(main)


def test_local_stream_limit_is_capacity_pressure(nodes: Nodes) -> None:
    async def main() -> None:
        async with (
            nodes.serving() as server,
            pooled(QuicCarrierConfig(max_streams_per_connection=1)) as pool,
        ):
            first = await nodes.dial(server, pool)
            with pytest.raises(CarrierCapacityLimited) as caught:
                await nodes.dial(server, pool)
            assert not isinstance(caught.value, OSError)
            assert caught.value.limit == 1 and not caught.value.remote
            assert pool.stats.capacity_limited == 1
            assert first.is_ready  # the endpoint still works
            assert await first.ping() >= 0

    run(main)


def test_peer_stream_limit_is_capacity_pressure(nodes: Nodes) -> None:
    async def main() -> None:
        async with (
            nodes.serving(QuicCarrierConfig(max_streams_per_connection=1)) as server,
            pooled(QuicCarrierConfig(max_streams_per_connection=4)) as pool,
        ):
            first = await nodes.dial(server, pool)
            with pytest.raises(CarrierCapacityLimited) as caught:
                await nodes.dial(server, pool)
            assert caught.value.remote
            assert sum(p.streams_refused for p in server.protocols) == 1
            assert await first.ping() >= 0

    run(main)


@pytest.mark.parametrize("how", ["goaway", "abort"])
def test_close_ends_the_session_on_both_sides(nodes: Nodes, how: str) -> None:
    async def main() -> None:
        async with nodes.serving() as server:
            dialer = await nodes.dial(server)
            acceptor = await nodes.next_accepted()
            stream = await acceptor.open_stream("echo")
            ending: Callable[[], Awaitable[None]]
            if how == "goaway":
                ending = acceptor.goaway
            else:

                async def ending() -> None:
                    acceptor.abort()

            stream.close()
            incoming = await dialer.accept_stream()
            assert incoming is not None and await incoming.read() == b""
            incoming.close()
            await ending()
            done = await closed_within(dialer, acceptor)
            if how == "goaway":
                assert all(event.error_code == ErrorCode.NO_ERROR for event in done)
            # the dialer's private connection closed with its only session
            await until(lambda: all(p.active_streams == 0 for p in server.protocols))

    run(main)


# ---------------------------------------------------------------- migration (namespaces)

MIGRATED_ADDRESS = "10.231.200.1"


@pytest.mark.netns
def test_client_migrates_to_another_address_mid_transfer(tmp_path: Path) -> None:
    from accessfabric.sim import Topology, netns_unavailable_reason

    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=f"{root / 'src'}:{root}")
    peer = [sys.executable, "-m", "tests.carriers.quic_peer"]
    with Topology(prefix="afq") as topo:
        topo.add_host("client")
        topo.add_host("server")
        link = topo.link("client", "server")
        first = link.address("client")
        server_address = link.address("server")
        topo.run("client", ["ip", "addr", "add", f"{MIGRATED_ADDRESS}/32", "dev", link.dev])
        topo.run("server", ["ip", "route", "add", f"{MIGRATED_ADDRESS}/32", "dev", link.dev])
        server = topo.popen(
            "server",
            [*peer, "server", "--host", server_address, "--cert-dir", str(tmp_path / "srv")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=str(root),
        )
        assert server.stdout is not None and server.stdin is not None
        hello = json.loads(server.stdout.readline())
        done = topo.run(
            "client",
            [
                *peer,
                "client",
                "--host",
                server_address,
                "--port",
                str(hello["port"]),
                "--expected",
                hello["node_id"],
                "--total",
                str(16 << 20),
                "--local",
                first,
                "--rebind-to",
                MIGRATED_ADDRESS,
            ],
            timeout=40,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        served = json.loads(server.stdout.readline())
        server.stdin.close()
        server.wait(timeout=10)
    assert result["local_before"][0] == first
    assert result["local_after"][0] == MIGRATED_ADDRESS
    assert result["echo_sha256"] == result["sent_sha256"] == served["sha256"]
    assert served["received"] == 16 << 20
    assert served["peer"][0] == MIGRATED_ADDRESS  # the server followed the new path
