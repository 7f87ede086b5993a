"""The network watch survives a failing step: a bug in one change's handling (here the
node's on_change hook) is logged and the next address change is still handled."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from accessfabric.node.dialing.network_watch import NetworkWatch
from tests.conditions import until


async def test_a_failing_change_handler_does_not_end_the_watch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = NetworkWatch(lambda: [])
    calls = 0

    def on_change() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the hook")

    watch.on_change = on_change
    # drive the loop as the netlink reader does: removed addresses, then the wake-up
    task = asyncio.create_task(watch._run())
    try:
        for expected, address in enumerate(("192.0.2.1", "192.0.2.2"), start=1):
            watch._removed.add(ipaddress.ip_address(address))
            watch._changed.set()
            await until(lambda n=expected: calls == n, 5, f"change {expected} was handled")
        assert watch.changes == 2
        assert "network change handling failed" in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
