"""Tenant fairness through one relay (issue 17): tenant A runs 10 bulk streams and tenant B
one, all as fast as they can through the same relay (source -> relay -> destination,
real sessions on loopback TCP, one event loop so the relay path is saturated); B gets at
least 45 % of the bytes the relay relays, measured by the relay's own accounting."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from accessfabric.bench.relay_lab import SEALED_SINK
from accessfabric.node.relaying.relay_fairness import TenantFairShare
from accessfabric.wire.registry import TrafficClass
from tests.relay.fabric import build

CHUNK = os.urandom(64 * 1024)
WARMUP = 1.0
WINDOW = 3.0


async def test_one_tenants_bulk_cannot_starve_anothers_stream_through_a_relay(
    tmp_path: Path,
) -> None:
    fabric = await build(tmp_path, relays=1)
    stop = asyncio.Event()
    writers: list[asyncio.Task[None]] = []
    try:
        src, relay = fabric.source, fabric.relays[0]
        assert isinstance(relay.data_plane.relay.fairness, TenantFairShare)
        (a,) = fabric.routes([0], tenant="a")
        (b,) = fabric.routes([0], tenant="b", first_id=2)
        streams = []
        for route, count in ((a, 10), (b, 1)):
            for _ in range(count):
                streams.append(
                    await src.routes.open_on_route(route, SEALED_SINK, TrafficClass.BULK)
                )

        async def push(stream: object) -> None:
            while not stop.is_set():
                stream.write(CHUNK)  # type: ignore[attr-defined]
                await stream.drain()  # type: ignore[attr-defined]

        writers = [asyncio.create_task(push(s)) for s in streams]
        usage = relay.data_plane.relay.quotas.usage

        def relayed() -> dict[str, int]:
            totals: dict[str, int] = {}
            for (tenant, _), counted in usage.items():  # a tenant has a row per class
                totals[tenant] = totals.get(tenant, 0) + counted.bytes_up
            return totals

        await asyncio.sleep(WARMUP)
        before = relayed()
        await asyncio.sleep(WINDOW)
        after = relayed()
        got = {t: after.get(t, 0) - before.get(t, 0) for t in ("a", "b")}
        total = got["a"] + got["b"]
        assert total > 4 * len(CHUNK), f"the relay hardly moved anything: {got}"
        share = got["b"] / total
        assert share >= 0.45, f"tenant b got {share:.0%} of the relay ({got})"
    finally:
        stop.set()
        for task in writers:
            task.cancel()
        for task in writers:
            with contextlib.suppress(BaseException):
                await task
        await fabric.stop()
