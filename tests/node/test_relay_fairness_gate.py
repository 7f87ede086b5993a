"""The relay's tenant gate (node/relaying/relay_fairness.py) without sessions: pumps are tasks that
take a turn and then "write" (yield to the loop), as node/relaying/relay.py's pumps do."""

from __future__ import annotations

import asyncio
from collections import Counter

from accessfabric.node.relaying.relay_fairness import TenantFairShare

CHUNK = 64 * 1024


async def pump(gate: TenantFairShare, tenant: str, relayed: Counter[str], pause: float) -> None:
    size = CHUNK if pause == 0 else 1
    while True:
        await gate.turn(tenant, size)
        relayed[tenant] += size
        await asyncio.sleep(pause)  # write, drain, read: at once for bulk, later for a trickle


async def run(pumps: list[tuple[str, float]], seconds: float) -> Counter[str]:
    gate = TenantFairShare()
    relayed: Counter[str] = Counter()
    tasks = [asyncio.create_task(pump(gate, t, relayed, pause)) for t, pause in pumps]
    try:
        await asyncio.sleep(seconds)
    finally:
        for task in tasks:
            task.cancel()
        done = await asyncio.wait(tasks, timeout=5)
        assert not done[1], "a pump waiting at the gate ignored its cancel"
    return relayed


async def test_ten_streams_of_one_tenant_share_equally_with_one_stream_of_another() -> None:
    relayed = await run([("a", 0.0)] * 10 + [("b", 0.0)], 0.5)
    total = relayed["a"] + relayed["b"]
    assert total > 50 * CHUNK
    assert relayed["b"] / total >= 0.45, relayed


async def test_a_trickling_tenant_slows_a_bulk_tenant_but_never_stops_it() -> None:
    """Tenant b relays a byte every 50 ms (keystrokes), so it stays active without ever
    catching up with tenant a's bulk: a stopped dead before; now it is levelled."""
    relayed = await run([("a", 0.0), ("b", 0.05)], 2.0)
    assert relayed["b"] >= 10
    assert relayed["a"] >= 8 * CHUNK, relayed  # stuck at ~5 chunks (one quantum) before
