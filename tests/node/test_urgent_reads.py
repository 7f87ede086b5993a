"""A batch of frames wakes its latency-class readers before its bulk readers (ADR 0066)."""

from __future__ import annotations

import asyncio

import pytest

from accessfabric.node.streams.connection import FabricStream
from accessfabric.wire.registry import TrafficClass
from tests.carriers.pairs import memory_connections
from tests.conditions import until


@pytest.mark.parametrize("urgent", [TrafficClass.INTERACTIVE, TrafficClass.DNS])
@pytest.mark.parametrize("other", [TrafficClass.BULK, TrafficClass.RELIABLE])
async def test_an_urgent_reader_runs_before_the_bulk_reader_fed_ahead_of_it(
    urgent: TrafficClass, other: TrafficClass
) -> None:
    async with memory_connections() as pair:
        bulk = await pair.dialer.open_stream("sink", other)
        ping = await pair.dialer.open_stream("echo", urgent)
        accepted: dict[TrafficClass, FabricStream] = {}
        for _ in range(2):
            stream = await asyncio.wait_for(pair.acceptor.accept_stream(), 5)
            assert stream is not None
            accepted[stream.traffic_class] = stream
        order: list[TrafficClass] = []

        async def reader(traffic_class: TrafficClass) -> None:
            await accepted[traffic_class].read(1 << 20)
            order.append(traffic_class)

        readers = [asyncio.create_task(reader(c)) for c in (other, urgent)]
        await asyncio.sleep(0)  # both wait for data

        # Hold what the dialer writes and hand it over in one piece: bulk first, then
        # the urgent frame, as a carrier's read takes them from a loaded socket.
        transport = pair.dialer._transport
        assert transport is not None
        held: list[bytes] = []
        write = transport.write
        transport.write = held.append  # type: ignore[method-assign]
        bulk.write(b"b" * 65536)
        await until(lambda: held)  # the bulk frames left at the loop's flush
        ping.write(b"ping")  # an urgent write leaves at once
        assert len(held) >= 2
        transport.write = write  # type: ignore[method-assign]
        pair.acceptor.data_received(b"".join(held))

        await asyncio.wait_for(asyncio.gather(*readers), 5)
        assert order == [urgent, other]
