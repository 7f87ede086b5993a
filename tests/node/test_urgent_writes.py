"""Writes on latency classes leave at once; other small writes wait for the loop's flush."""

from __future__ import annotations

import asyncio

import pytest

from accessfabric.node.streams.connection import SessionConnection
from accessfabric.wire.registry import TrafficClass
from tests.carriers.pairs import memory_connections


def _count_writes(connection: SessionConnection) -> list[int]:
    """Sizes of what the connection hands its carrier from now on."""
    sizes: list[int] = []
    transport = connection._transport
    assert transport is not None
    write = transport.write

    def counting(data: bytes) -> None:
        sizes.append(len(data))
        write(data)

    transport.write = counting  # type: ignore[method-assign]
    return sizes


@pytest.mark.parametrize(
    "traffic_class", [TrafficClass.CONTROL, TrafficClass.DNS, TrafficClass.INTERACTIVE]
)
async def test_a_latency_class_write_reaches_the_carrier_before_the_writer_yields(
    traffic_class: TrafficClass,
) -> None:
    async with memory_connections() as pair:
        stream = await pair.dialer.open_stream("echo", traffic_class)
        accepted = await asyncio.wait_for(pair.acceptor.accept_stream(), 5)  # the OPEN has left
        assert accepted is not None
        sizes = _count_writes(pair.dialer)
        stream.write(b"ping")
        assert sizes, "nothing reached the carrier"
        assert await asyncio.wait_for(accepted.readexactly(4), 5) == b"ping"


@pytest.mark.parametrize("traffic_class", [TrafficClass.RELIABLE, TrafficClass.BULK])
async def test_other_small_writes_are_coalesced_until_the_flush(
    traffic_class: TrafficClass,
) -> None:
    async with memory_connections() as pair:
        stream = await pair.dialer.open_stream("sink", traffic_class)
        accepted = await asyncio.wait_for(pair.acceptor.accept_stream(), 5)  # the OPEN has left
        assert accepted is not None
        sizes = _count_writes(pair.dialer)
        for _ in range(10):
            stream.write(b"x" * 100)
        assert sizes == []  # not yet: one flush later in this loop iteration
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(sizes) == 1
        assert await asyncio.wait_for(accepted.readexactly(1000), 5) == b"x" * 1000


async def test_the_rest_of_a_latency_class_burst_is_coalesced() -> None:
    async with memory_connections() as pair:
        stream = await pair.dialer.open_stream("echo", TrafficClass.INTERACTIVE)
        accepted = await asyncio.wait_for(pair.acceptor.accept_stream(), 5)  # the OPEN has left
        assert accepted is not None
        sizes = _count_writes(pair.dialer)
        for _ in range(10):
            stream.write(b"x" * 100)
        assert len(sizes) == 1  # the first write, at once
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(sizes) == 2  # the other nine, in one flush
        assert await asyncio.wait_for(accepted.readexactly(1000), 5) == b"x" * 1000
