"""What a dialed session's carrier moves at its busiest, fed to the endpoint ranker.

Every ``interval`` seconds the meter reads the session's carrier byte counters
(sent + received).  A window that moved at least ``busy_bytes`` counts as a bulk
sample; the busiest such window of each ``report_every`` seconds (and the last one
when the session closes) is recorded with
:meth:`~accessfabric.node.dialing.ranking.ranker.EndpointRanker.record_throughput` for the
session's transport.  Quiet sessions record nothing: the rate of an idle link says
nothing about its carrier.
"""

from __future__ import annotations

import asyncio

from accessfabric.node.dialing.ranking.candidates import Transport
from accessfabric.node.dialing.ranking.ranker import EndpointRanker
from accessfabric.node.streams.connection import SessionConnection

INTERVAL = 0.5
BUSY_BYTES = 2 << 20
"""Bytes per interval (4 MiB/s) for a window to say something about the carrier."""
REPORT_EVERY = 10.0


async def meter_session(
    connection: SessionConnection,
    transport: Transport,
    ranker: EndpointRanker,
    *,
    interval: float = INTERVAL,
    busy_bytes: int = BUSY_BYTES,
    report_every: float = REPORT_EVERY,
) -> None:
    loop = asyncio.get_running_loop()
    last = connection.bytes_sent + connection.bytes_received
    peak = 0.0
    reported_at = loop.time()

    def report() -> None:
        nonlocal peak, reported_at
        if peak > 0:
            ranker.record_throughput(transport, peak, loop.time())
        peak, reported_at = 0.0, loop.time()

    try:
        while not connection.is_closed:
            await asyncio.sleep(interval)
            total = connection.bytes_sent + connection.bytes_received
            moved, last = total - last, total
            if moved >= busy_bytes:
                peak = max(peak, moved / interval)
            if loop.time() - reported_at >= report_every:
                report()
    finally:
        report()
