"""Telemetry sampling (issue 17): the control plane asks for detailed telemetry with one
heartbeat in ``ceil(N / interval / budget)``, so detailed reports per second stay flat as
the fleet grows; a heartbeat without detail keeps the last detail shown."""

from __future__ import annotations

import asyncio
from pathlib import Path

from accessfabric.control.client.facts import StreamReport
from accessfabric.control.server.plane import ControlConfig
from accessfabric.control.server.telemetry import telemetry_every
from accessfabric.identity.keys import NodeKey
from tests.control.api_harness import facts, running_plane

STREAM = StreamReport(peer="p", service="echo", traffic_class="bulk", state="open",
                      credit=1, bytes_in=1, bytes_out=2, queued=0, unacked=0, rtt_ms=1.0,
                      blocked="-")  # fmt: skip


def test_detailed_reports_per_second_stay_flat_as_the_fleet_grows() -> None:
    for nodes in (100, 1000, 10_000, 100_000):
        every = telemetry_every(nodes, interval=5.0, budget=50.0)
        assert nodes / 5.0 / every <= 50.0  # detailed reports per second within the budget
        assert nodes / 5.0 / every > 25.0 or every == 1  # and not needlessly fewer
    assert telemetry_every(10, interval=5.0, budget=50.0) == 1  # small fleets: every one


def test_the_heartbeat_reply_says_how_often_to_send_detail(tmp_path: Path) -> None:
    async def main() -> None:
        # 4 nodes every 10 s against a budget of 0.1 detailed report/s: one in 4
        config = ControlConfig(heartbeat_interval=10, telemetry_reports_per_second=0.1)
        async with running_plane(tmp_path, config=config) as cp:
            keys = [NodeKey.generate() for _ in range(4)]
            clients = [cp.client(k, tmp_path / f"n{i}") for i, k in enumerate(keys)]
            opened = [await c.__aenter__() for c in clients]
            try:
                for client in opened:
                    await client.enroll(await cp.token("acme", ["mobile-edge"]))
                    await client.heartbeat(facts(stream_reports=(STREAM,)))
                reply = await opened[1].heartbeat(facts(stream_reports=(STREAM,)))
                assert reply["telemetry_every"] == 4
                # a heartbeat without detail: the last detail is kept, not emptied
                await opened[0].heartbeat(facts())
                state = cp.plane.heartbeats.get(keys[0].node_id)
                assert state is not None and state.facts.stream_reports == (STREAM,)
            finally:
                for client in clients:
                    await client.__aexit__(None, None, None)

    asyncio.run(main())
