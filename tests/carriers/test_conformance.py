"""Every carrier moves the same fabric session (in the spirit of trio's ``check_two_way_stream``).

Each test runs over a connected pair of :class:`SessionConnection` ends built by
``tests/carriers/pairs.py``: in memory, over TCP+TLS and over WebSocket (wss) on loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest

from accessfabric.errors import ErrorCode, LocalProtocolError
from accessfabric.node.streams.connection import (
    FabricStream,
    SessionClosed,
    SessionConnection,
    StreamResetError,
)
from accessfabric.session import SessionConfig, SessionState
from accessfabric.wire.registry import TrafficClass
from tests.carriers.pairs import PAIRS, ConnectedPair
from tests.conditions import until

KINDS = sorted(PAIRS)
CHUNK = 64 * 1024


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def write_all(stream: FabricStream, data: bytes, chunk: int = CHUNK) -> None:
    view = memoryview(data)
    for offset in range(0, len(data), chunk):
        stream.write(view[offset : offset + chunk])
        await stream.drain()


async def read_all(stream: FabricStream) -> bytes:
    parts: list[bytes] = []
    while chunk := await stream.read(CHUNK):
        parts.append(chunk)
    return b"".join(parts)


async def hash_back(connection: SessionConnection) -> None:
    """Answer every stream the peer opens with the SHA-256 of everything it sent."""
    tasks: set[asyncio.Task[None]] = set()

    async def answer(stream: FabricStream) -> None:
        digest = hashlib.sha256()
        while chunk := await stream.read(CHUNK):
            digest.update(chunk)
        stream.write(digest.digest())
        stream.close()

    try:
        while (stream := await connection.accept_stream()) is not None:
            task = asyncio.create_task(answer(stream))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()


async def test_handshake_names_both_peers(kind: str) -> None:
    async with PAIRS[kind]() as pair:
        assert pair.dialer.is_ready and pair.acceptor.is_ready
        dialer_ready = await pair.dialer.ready()
        acceptor_ready = await pair.acceptor.ready()
        assert dialer_ready.peer_node_id == pair.acceptor_node.key.node_id
        assert acceptor_ready.peer_node_id == pair.dialer_node.key.node_id
        assert pair.dialer.info.kind == pair.acceptor.info.kind == kind
        assert pair.dialer.info.dialer and not pair.acceptor.info.dialer
        binding = pair.dialer.info.channel_binding
        assert binding and binding == pair.acceptor.info.channel_binding


async def test_ping_measures_a_round_trip(kind: str) -> None:
    # uvloop's clock ticks in milliseconds: a loopback round trip may read as 0.
    coarse = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    async with PAIRS[kind]() as pair:
        for side in (pair.dialer, pair.acceptor):
            rtt = await side.ping()
            assert (rtt >= 0 if coarse else rtt > 0) and rtt < 5


async def test_many_concurrent_streams_both_ways(kind: str) -> None:
    rng = random.Random(f"streams-{kind}")
    async with PAIRS[kind]() as pair:
        servers = [asyncio.create_task(hash_back(side)) for side in (pair.dialer, pair.acceptor)]

        async def send(side: SessionConnection, data: bytes, traffic_class: TrafficClass) -> None:
            stream = await side.open_stream("hash", traffic_class)
            await write_all(stream, data, chunk=rng.choice([1000, 16 * 1024, CHUNK]))
            stream.close()
            assert await stream.readexactly(32) == hashlib.sha256(data).digest()
            assert await stream.read() == b""

        classes = [TrafficClass.RELIABLE, TrafficClass.INTERACTIVE, TrafficClass.BULK]
        jobs = [
            send(side, rng.randbytes(rng.choice([0, 1, 999, rng.randrange(300_000)])), cls)
            for side in (pair.dialer, pair.acceptor)
            for cls in classes * 8
        ]
        await asyncio.gather(*jobs)
        for server in servers:
            server.cancel()


async def test_half_close_keeps_the_other_direction(kind: str) -> None:
    async with PAIRS[kind]() as pair:
        stream = await pair.dialer.open_stream("echo")
        stream.write(b"request")
        stream.close()
        accepted = await pair.acceptor.accept_stream()
        assert accepted is not None and accepted.service == "echo"
        assert await read_all(accepted) == b"request"
        assert accepted.at_eof
        reply = random.Random(1).randbytes(200_000)
        await write_all(accepted, reply)
        assert await stream.readexactly(len(reply)) == reply  # still flows after our close
        accepted.write(b"tail")
        accepted.close()
        assert await read_all(stream) == b"tail"
        assert stream.at_eof


async def test_reset_reaches_the_other_side(kind: str) -> None:
    async with PAIRS[kind]() as pair:
        for opener, peer in ((pair.dialer, pair.acceptor), (pair.acceptor, pair.dialer)):
            stream = await opener.open_stream("reset-me")
            stream.write(b"x")
            accepted = await peer.accept_stream()
            assert accepted is not None
            assert await accepted.readexactly(1) == b"x"
            stream.reset(ErrorCode.CANCEL)
            with pytest.raises(StreamResetError) as caught:
                await accepted.read()
            assert caught.value.remote and caught.value.code == ErrorCode.CANCEL
            with pytest.raises(StreamResetError):
                accepted.write(b"after reset")
        assert pair.dialer.is_ready and pair.acceptor.is_ready  # the session survives


async def test_large_transfer_is_backpressured(kind: str) -> None:
    size = 64 * 1024 * 1024
    block = random.Random(7).randbytes(1024 * 1024)
    # Both ends share one loop and CPU here, so the delay-based pacer would read a busy
    # machine as a queue and slow down; this test is about drain and bounded queues.
    async with PAIRS[kind](SessionConfig(pacing_target_delay=None)) as pair:
        session = pair.dialer.session
        limit = pair.dialer.session.config.max_stream_send_buffer
        peak = 0
        stream = await pair.dialer.open_stream("bulk", TrafficClass.BULK)

        async def produce() -> bytes:
            nonlocal peak
            digest = hashlib.sha256()
            for _ in range(size // len(block)):
                digest.update(block)
                for offset in range(0, len(block), 256 * 1024):
                    stream.write(block[offset : offset + 256 * 1024])
                    await stream.drain()
                    pending = sum(len(chunk) for chunk in stream.outbox.pending)
                    peak = max(peak, session.queued_bytes() + pending)
            stream.close()
            return digest.digest()

        async def consume() -> tuple[int, bytes]:
            accepted = await pair.acceptor.accept_stream()
            assert accepted is not None
            digest = hashlib.sha256()
            total = 0
            while chunk := await accepted.read(1024 * 1024):
                digest.update(chunk)
                total += len(chunk)
            return total, digest.digest()

        sent, (received, got) = await asyncio.gather(produce(), consume())
        assert received == size and got == sent
        # The writer waited in drain: queued bytes never grew past one stream's send
        # buffer plus one write, however fast it wrote.
        assert peak <= limit + 256 * 1024, peak


async def test_carrier_close_ends_both_sessions_without_leaking_tasks(kind: str) -> None:
    before = asyncio.all_tasks()
    async with PAIRS[kind]() as pair:
        stream = await pair.dialer.open_stream("doomed")
        stream.write(b"some bytes")
        accepted = await pair.acceptor.accept_stream()
        assert accepted is not None
        assert await accepted.readexactly(10) == b"some bytes"
        transport = pair.dialer._transport
        assert transport is not None
        transport.close()  # the carrier goes away under the session
        ends = await asyncio.wait_for(
            asyncio.gather(pair.dialer.wait_closed(), pair.acceptor.wait_closed()), 5
        )
        assert len(ends) == 2
        assert pair.dialer.is_closed and pair.acceptor.is_closed
        with pytest.raises((SessionClosed, ConnectionError)):
            await accepted.read()
        with pytest.raises(ConnectionError):
            await pair.acceptor.open_stream("late")
        assert await pair.acceptor.accept_stream() is None
    for _ in range(20):
        await asyncio.sleep(0.01)
        leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
        if not leaked:
            break
    assert not leaked, leaked


async def test_goaway_drains_open_streams(kind: str) -> None:
    async with PAIRS[kind]() as pair:
        stream = await pair.dialer.open_stream("drain")
        stream.write(b"first half ")
        accepted = await pair.acceptor.accept_stream()
        assert accepted is not None
        assert await accepted.readexactly(11) == b"first half "
        await pair.dialer.goaway(ErrorCode.NO_ERROR, "shutting down")
        await until(lambda: pair.acceptor.session.state is SessionState.DRAINING, what="GOAWAY")
        with pytest.raises(LocalProtocolError, match="draining, not ready"):
            await pair.acceptor.open_stream("refused")  # the peer said no new streams
        stream.write(b"second half")
        stream.close()
        assert await read_all(accepted) == b"second half"
        accepted.write(b"reply")
        accepted.close()
        assert await read_all(stream) == b"reply"
        ends = await asyncio.wait_for(
            asyncio.gather(pair.dialer.wait_closed(), pair.acceptor.wait_closed()), 5
        )
        assert all(end.error_code == ErrorCode.NO_ERROR for end in ends), ends


async def test_small_windows_still_deliver(kind: str) -> None:
    """Credit stalls at every step: the carrier must keep calling back when it drains."""
    config = SessionConfig(initial_stream_window=16 * 1024, initial_session_window=32 * 1024)
    async with PAIRS[kind](config) as pair:
        assert isinstance(pair, ConnectedPair)
        server = asyncio.create_task(hash_back(pair.acceptor))
        data = random.Random(3).randbytes(3 * 1024 * 1024)
        stream = await pair.dialer.open_stream("hash")
        await write_all(stream, data)
        stream.close()
        assert await stream.readexactly(32) == hashlib.sha256(data).digest()
        server.cancel()
