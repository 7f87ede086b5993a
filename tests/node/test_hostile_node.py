"""Hostile input at a real node process: garbage floods, frames before AUTH, replayed AUTH."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

import pytest

from accessfabric.errors import ErrorCode
from accessfabric.identity.authenticator import Ed25519Authenticator
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.tls import client_context
from accessfabric.identity.tls_exporter import tls_exporter
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.session import Session, SessionReady
from accessfabric.wire import frames as fr
from accessfabric.wire.decoder import FrameDecoder
from accessfabric.wire.registry import PROTOCOL_VERSION, FrameType, TrafficClass
from tests.node.harness import NodeProcess

GARBAGE_CLIENTS = 50


async def open_tls(
    port: int, key: NodeKey, cert_dir: Path
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(key, cert_dir), server_hostname="127.0.0.1"
    )


async def frames_until_closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> list[fr.Frame]:
    """Every frame the node sends until it closes the connection (which it must, in time)."""
    decoder = FrameDecoder()
    frames: list[fr.Frame] = []
    async with asyncio.timeout(timeout):
        while True:
            try:
                data = await reader.read(65536)
            except ConnectionResetError:
                return frames
            if not data:
                return frames
            frames += decoder.feed(data)


def goaways(frames: list[fr.Frame]) -> list[fr.Goaway]:
    return [f for f in frames if isinstance(f, fr.Goaway)]


def hello(key: NodeKey) -> bytes:
    return fr.Hello(
        (PROTOCOL_VERSION,), key.node_id, key.public_key_bytes, os.urandom(32)
    ).to_bytes()


@pytest.mark.parametrize(
    ("early", "code"),
    [
        (fr.Data(1, 0, b"too early").to_bytes(), ErrorCode.PROTOCOL_ERROR),
        (fr.OpenStream(1, "echo", TrafficClass.RELIABLE).to_bytes(), ErrorCode.PROTOCOL_ERROR),
        (fr.Ping(7).to_bytes(), ErrorCode.PROTOCOL_ERROR),
        (fr.HEADER.pack(1_000_000 << 8 | FrameType.DATA, 0, 1), ErrorCode.FRAME_SIZE_ERROR),
    ],
    ids=["data", "open_stream", "ping", "oversized"],
)
async def test_frames_before_auth_get_goaway_and_are_dropped(
    node_pair: tuple[NodeProcess, NodeProcess], tmp_path: Path, early: bytes, code: ErrorCode
) -> None:
    a, _ = node_pair
    key = NodeKey.generate()
    reader, writer = await open_tls(a.port, key, tmp_path)
    writer.write(hello(key) + early)
    frames = await frames_until_closed(reader)
    writer.close()
    assert isinstance(frames[0], fr.Hello)  # the node speaks first, then refuses
    assert [g.error_code for g in goaways(frames)] == [code]
    assert not any(isinstance(f, fr.SessionReady) for f in frames)


async def record_handshake(port: int, key: NodeKey, cert_dir: Path) -> bytes:
    """Run a real dialer handshake by hand and return every byte it sent."""
    loop = asyncio.get_running_loop()
    reader, writer = await open_tls(port, key, cert_dir)
    binding = tls_exporter(writer.get_extra_info("ssl_object"))
    session = Session(
        dialer=True,
        authenticator=Ed25519Authenticator(key),
        random_bytes=secrets.token_bytes,
        channel_binding=binding,
        now=loop.time(),
    )
    sent = bytearray()
    ready = False
    async with asyncio.timeout(5):
        while not ready:
            out = session.data_to_send(now=loop.time())
            writer.write(out)
            sent += out
            data = await reader.read(65536)
            assert data, "node closed during a genuine handshake"
            events = session.receive_data(data, loop.time())
            ready = any(isinstance(e, SessionReady) for e in events)
    out = session.data_to_send(now=loop.time())
    writer.write(out)
    sent += out
    writer.close()
    return bytes(sent)


async def test_replayed_auth_fails(
    node_pair: tuple[NodeProcess, NodeProcess], tmp_path: Path
) -> None:
    a, _ = node_pair
    key = NodeKey.generate()
    recorded = await record_handshake(a.port, key, tmp_path)
    assert any(isinstance(f, fr.Auth) for f in FrameDecoder().feed(recorded))
    # Same key, same certificate, same bytes: only the connection (and nonces) differ.
    reader, writer = await open_tls(a.port, key, tmp_path)
    writer.write(recorded)
    frames = await frames_until_closed(reader)
    writer.close()
    assert [g.error_code for g in goaways(frames)] == [ErrorCode.AUTHENTICATION_FAILED]
    assert not any(isinstance(f, fr.SessionReady) for f in frames)


async def garbage_client(port: int, index: int, context: object) -> None:
    with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
        async with asyncio.timeout(3):
            if index % 2:  # plain TCP garbage at a TLS listener
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            else:  # a TLS client that sends garbage frames
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
                )
            writer.write(os.urandom(4096))
            await reader.read()
            writer.close()


async def test_garbage_flood_does_not_disturb_a_healthy_session(
    node_pair: tuple[NodeProcess, NodeProcess], tmp_path: Path
) -> None:
    a, _ = node_pair
    local = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "healthy")
    connection = await connect_tcp(
        local, "127.0.0.1", a.port, expected_peer_id=a.node_id, timeout=5
    )
    stream = await connection.open_stream("echo")
    context = client_context(NodeKey.generate(), tmp_path / "garbage")
    rtts: list[float] = []
    flooding = True

    async def pinger() -> None:
        while flooding or len(rtts) < 20:
            rtts.append(await asyncio.wait_for(connection.ping(), 2))
            stream.write(b"still here")
            assert await asyncio.wait_for(stream.readexactly(10), 2) == b"still here"
            await asyncio.sleep(0.01)

    async def flood() -> None:
        nonlocal flooding
        await asyncio.gather(*(garbage_client(a.port, i, context) for i in range(GARBAGE_CLIENTS)))
        flooding = False

    await asyncio.gather(pinger(), flood())
    assert len(rtts) >= 20
    assert max(rtts) < 1.0, rtts
    assert connection.is_ready
    stream.close()
    await connection.goaway()
    # The node still serves everyone else.
    again = await connect_tcp(local, "127.0.0.1", a.port, expected_peer_id=a.node_id, timeout=5)
    assert await again.ping() < 1.0
    again.abort()
