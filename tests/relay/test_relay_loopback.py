"""Source -> relay -> destination over real TCP on loopback, sealed; a relay dies mid-way."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from accessfabric.bench.relay_lab import SEALED_SINK, new_initiator, send_sealed
from accessfabric.errors import ErrorCode
from accessfabric.node.connection import StreamResetError
from accessfabric.node.route_switches import SwitchReason
from accessfabric.node.routes import NoUsableRoute
from accessfabric.wire.registry import TrafficClass
from tests.relay.fabric import build, kill

MiB = 1024 * 1024


async def test_sealed_bulk_survives_relay_death(tmp_path: Path) -> None:
    fabric = await build(tmp_path, relays=2)
    try:
        src, dst = fabric.source, fabric.destination
        src.routes.set_routes(SEALED_SINK, TrafficClass.BULK, fabric.routes([0], [1]))
        initiator, token = new_initiator(
            fabric.keys[src.node_id], fabric.keys[dst.node_id].sealing_public_key_bytes, SEALED_SINK
        )
        stream = await src.routes.open_stream(
            SEALED_SINK,
            TrafficClass.BULK,
            key_exchange=initiator.key_exchange,
            resume_token=token,
            resume_key=initiator.resume_key,
        )
        total = 48 * MiB
        killed = asyncio.Event()

        def progress(sent: int) -> None:
            if sent >= total * 2 // 5 and not killed.is_set():
                killed.set()
                kill(fabric.relays[0])

        sent_digest, confirmed = await send_sealed(stream, initiator, total, progress)
        assert killed.is_set()
        assert fabric.sink.digests == [sent_digest]
        assert confirmed == sent_digest
        assert fabric.sink.sizes == [total]
        assert src.routes.switches.counts == {SwitchReason.SESSION_LOST: 1}
        assert dst.data_plane.adopted == 1
        relayed = fabric.relays[1].data_plane.relay.counters()
        assert relayed["relayed"], relayed  # accounting, never payload
    finally:
        await fabric.stop()


async def test_two_relays_in_a_row_echo(tmp_path: Path) -> None:
    fabric = await build(tmp_path, relays=2, chained=True)
    try:
        src = fabric.source
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, fabric.routes([0, 1]))
        stream = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        for n in range(20):
            stream.write(b"ping %d" % n)
            assert await stream.readexactly(len(b"ping %d" % n)) == b"ping %d" % n
        stream.close()
        assert await stream.read() == b""
    finally:
        await fabric.stop()


async def test_relay_refuses_a_lease_that_does_not_name_it(tmp_path: Path) -> None:
    fabric = await build(tmp_path, relays=2)
    try:
        src = fabric.source
        # Route via relay 1, but sent to relay 0: relay 0 is not on the lease.
        (wrong,) = fabric.routes([1])
        lease = wrong.lease
        connection = await src.peers.session(fabric.relays[0].node_id)
        stream = await connection.open_stream(
            "echo", TrafficClass.INTERACTIVE, lease.route_id, route_lease=wrong.blob
        )
        stream.write(b"x")
        with pytest.raises(StreamResetError) as caught:
            await asyncio.wait_for(stream.read(), 5)
        assert caught.value.code == ErrorCode.ROUTE_REJECTED
        assert fabric.relays[0].data_plane.refused == {"hop_not_on_route": 1}
    finally:
        await fabric.stop()


async def test_expired_leases_say_why_no_route(tmp_path: Path) -> None:
    fabric = await build(tmp_path, relays=1)
    try:
        src = fabric.source
        routes = fabric.routes([0])
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, routes)
        src.routes.clock = lambda: routes[0].lease.expires_ms / 1000 + 5
        with pytest.raises(NoUsableRoute, match="expired"):
            await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
    finally:
        await fabric.stop()
