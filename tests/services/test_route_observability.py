"""Route execution as observability shows it: the route table in status, route switches in
/metrics, after a relay dies under a sealed bulk stream (in-process fabric on loopback)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from accessfabric.bench.relay_lab import SEALED_SINK, new_initiator, send_sealed
from accessfabric.wire.registry import TrafficClass
from tests.relay.fabric import build, kill


async def test_route_table_and_failover_metrics(tmp_path: Path) -> None:
    fabric = await build(tmp_path, relays=2)
    try:
        src, dst = fabric.source, fabric.destination
        src.routes.set_routes(SEALED_SINK, TrafficClass.BULK, fabric.routes([0], [1]))
        rows = src.observe.status()["routes"]
        assert [row["route"] for row in rows] == [1, 2]
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
        total = 16 << 20
        killed: list[bool] = []

        def progress(sent: int) -> None:
            if sent >= total // 3 and not killed:
                killed.append(True)
                kill(fabric.relays[0])

        sent_digest, confirmed = await send_sealed(stream, initiator, total, progress)
        assert sent_digest == confirmed
        text = generate_latest(src.observe.registry).decode()
        assert 'accessfabric_route_switches_total{reason="session_lost"} 1.0' in text
        rows = {row["route"]: row for row in src.observe.status()["routes"]}
        assert rows[1]["failures"] >= 1
    finally:
        await fabric.stop()
