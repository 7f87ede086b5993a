"""An idle session at an entry costs one task, not three (ADR 0050, amended).

The data plane (served ends to mark broken) and the node's observability (session gauges,
carrier loss) each awaited ``connection.wait_closed()`` in a task of their own (a task,
its coroutine, a shield and its callbacks: 25.6 KiB of Python heap per session pair here,
22.7 without).  They now register a callback on the session's end
(``SessionConnection.when_closed``).  A real entry runtime on loopback TCP+TLS with idle
sessions dialed to it; tasks counted and the Python heap traced per session; the ends
still counted out when the sessions close."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from pathlib import Path

from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import NodeConfig
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import SessionConnection
from tests.conditions import until

SESSIONS = 16
KiB = 1024


async def test_an_idle_session_at_an_entry_costs_one_task(tmp_path: Path) -> None:
    config = NodeConfig(
        key_path=tmp_path / "entry.key",
        cert_dir=tmp_path / "entry",
        listen=(Endpoint(carrier="tcp", host="127.0.0.1", port=0),),
        roles=("entry",),
        allow={"echo": ("*",)},
    )
    entry = NodeRuntime(config, key=NodeKey.generate())
    await entry.start()
    dialed: list[SessionConnection] = []
    locals_ = [
        LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / f"d{i}") for i in range(SESSIONS + 1)
    ]
    try:
        port = entry.listeners[0].endpoint.port
        tracked = entry.observe._sessions
        # A warm-up session: lazily made code paths and caches.
        dialed.append(await connect_tcp(locals_[0], "127.0.0.1", port))
        await until(lambda: len(tracked) == 1, timeout=10, what="the first session tracked")
        gc.collect()
        tasks_before = len(asyncio.all_tasks())
        tracemalloc.start(1)
        try:
            before = tracemalloc.take_snapshot()
            for local in locals_[1:]:
                dialed.append(await connect_tcp(local, "127.0.0.1", port))
            await until(lambda: len(tracked) == SESSIONS + 1, timeout=10, what="sessions tracked")
            await asyncio.sleep(0)  # the entry's per-session tasks have started
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        per_session_tasks = (len(asyncio.all_tasks()) - tasks_before) / SESSIONS
        stats = after.compare_to(before, "filename")
        # The Python heap per session pair (both ends are in this process) but the TLS
        # receive buffers (asyncio's sslproto, 256 KiB per end: ADR 0050's release).
        heap = sum(s.size_diff for s in stats if "sslproto" not in s.traceback[0].filename)
        # The runtime's own task serving the session's streams; were 3 (the data plane's
        # and observability's watchers).  The dialing side starts none.
        assert per_session_tasks <= 1.0, per_session_tasks
        # Was 25.9 KiB with the two watcher tasks (in this test, on asyncio's loop).
        assert heap / SESSIONS <= 24.5 * KiB, heap / SESSIONS

        for connection in dialed:
            connection.abort()
        # Counted out by the callback once each session ended at the entry (its carrier
        # closed under it).
        await until(lambda: not tracked, timeout=10, what="ended sessions counted out")
    finally:
        for connection in dialed:
            connection.abort()
        await entry.shutdown("test over")
