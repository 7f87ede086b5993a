"""Bulk toward a node that reports cpu pressure is rate-capped over real TCP+TLS (issue 22).

Two in-process nodes on loopback.  The dialer keeps a BULK stream full toward the
acceptor and pings an INTERACTIVE echo; the acceptor counts the bulk bytes it receives.
When the acceptor sends NODE_PRESSURE (cpu 95) the dialer's ``PressureRateCap`` comes
down to its floor and the acceptor receives bulk at about that rate, while interactive
echoes keep completing; when the pressure ends the cap is lifted and bulk speeds up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from accessfabric.node.streams.connection import FabricStream
from accessfabric.session import SessionConfig
from accessfabric.wire.registry import TrafficClass
from tests.carriers.pairs import tcp_connections
from tests.conditions import until

FLOOR = 256 * 1024
CHUNK = 64 * 1024


async def test_bulk_toward_a_pressured_node_slows_to_the_cap_and_interactive_flows() -> None:
    config = SessionConfig(pressure_min_rate=FLOOR)
    async with tcp_connections(config) as pair:
        received = 0
        pings = 0

        async def serve() -> None:
            async def count(stream: FabricStream) -> None:
                nonlocal received
                while chunk := await stream.read(CHUNK):
                    received += len(chunk)

            async def echo(stream: FabricStream) -> None:
                while data := await stream.read(64):
                    stream.write(data)

            tasks = []
            while (stream := await pair.acceptor.accept_stream()) is not None:
                handler = echo if stream.traffic_class is TrafficClass.INTERACTIVE else count
                tasks.append(asyncio.create_task(handler(stream)))

        async def feed(stream: FabricStream) -> None:
            payload = b"b" * CHUNK
            while True:
                stream.write(payload)
                await stream.drain()

        async def ping(stream: FabricStream) -> None:
            nonlocal pings
            while True:
                stream.write(b"p" * 16)
                await stream.readexactly(16)
                pings += 1
                await asyncio.sleep(0.02)

        async def rate(seconds: float) -> float:
            start, started = received, time.monotonic()
            await asyncio.sleep(seconds)
            return (received - start) / (time.monotonic() - started)

        server = asyncio.create_task(serve())
        bulk = await pair.dialer.open_stream("sync", TrafficClass.BULK)
        chat = await pair.dialer.open_stream("chat", TrafficClass.INTERACTIVE)
        tasks = [asyncio.create_task(feed(bulk)), asyncio.create_task(ping(chat))]
        try:
            await until(lambda: received > 4 * CHUNK, 10, "bulk flows")
            free = await rate(0.5)

            assert pair.acceptor.send_pressure(0, 95, 0, 0)
            session = pair.dialer.session
            await until(
                lambda: session.metrics().pressure_rate_cap == FLOOR, 10, "cap at its floor"
            )
            pings_before = pings
            capped = await rate(1.0)
            assert pings - pings_before >= 10, "interactive echoes kept completing"
            assert capped <= 2 * FLOOR, (capped, free)
            assert free > 4 * capped, (capped, free)

            assert pair.acceptor.send_pressure(0, 5, 0, 0)
            await until(lambda: session.metrics().pressure_rate_cap is None, 10, "cap lifted")
            assert await rate(0.5) > 2 * FLOOR
        finally:
            for task in (*tasks, server):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
