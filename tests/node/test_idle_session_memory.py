"""What an idle fabric session costs in Python objects (issue 17: entry RSS per idle
session <= 64 KiB; ADR 0037).

Real TCP + TLS sessions on loopback (``serve_tcp`` / ``connect_tcp``, HELLO/AUTH/READY
done, no stream), both ends in this process; tracemalloc measures the heap growth of N
more sessions after a warm-up one.  asyncio's per-connection TLS receive buffer
(``sslproto``'s ``bytearray(256 KiB)``) is left out of the bound: it is calloc'd and only
the pages a read writes become resident (``bench idle`` measures RSS); everything else
a session allocates eagerly is in it, so a per-session structure added later (a dict
per traffic class, a task, a buffer) shows here.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from pathlib import Path

from accessfabric.bench.common import BenchNode
from accessfabric.node.dialing.endpoints import connect_tcp, serve_tcp
from accessfabric.node.streams.connection import SessionConnection

SESSIONS = 60
BOUND_PER_PAIR = 28 * 1024
"""Bytes of Python heap per idle session pair (dialer + acceptor); measured 37.7 KiB
(2026-12-07, ADR 0037), 24.2 KiB with the slotted session and its shared dispatch table
(ADR 0044; the session's own share is ``tests/session/test_idle_memory.py``'s)."""


def _is_tls_receive_buffer(trace: tracemalloc.StatisticDiff) -> bool:
    frame = trace.traceback[0]
    return frame.filename.endswith("sslproto.py") and trace.size_diff / SESSIONS > 64 * 1024


async def _growth(tmp_path: Path) -> tuple[float, list[str]]:
    acceptor = BenchNode.make(bytes(range(128, 160)), tmp_path)
    dialer = BenchNode.make(bytes(range(160, 192)), tmp_path)
    accepted: list[SessionConnection] = []
    dialed: list[SessionConnection] = []
    server = await serve_tcp(acceptor.local(), "127.0.0.1", 0, accepted.append)
    port = server.sockets[0].getsockname()[1]
    local = dialer.local()

    async def dial() -> None:
        connection = await connect_tcp(
            local, "127.0.0.1", port, expected_peer_id=acceptor.key.node_id
        )
        dialed.append(connection)

    try:
        await dial()  # warm-up: lazily made code paths and caches
        await asyncio.sleep(0.2)
        gc.collect()
        tracemalloc.start(1)
        try:
            before = tracemalloc.take_snapshot()
            await asyncio.gather(*(dial() for _ in range(SESSIONS)))
            await asyncio.gather(*(c.ready() for c in accepted))
            await asyncio.sleep(0.2)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert len(accepted) == len(dialed) == SESSIONS + 1
        stats = [s for s in after.compare_to(before, "lineno") if not _is_tls_receive_buffer(s)]
        per_pair = sum(s.size_diff for s in stats) / SESSIONS
        top = [f"{s.size_diff / SESSIONS:7.0f} B {s.traceback[0]}" for s in stats[:12]]
        return per_pair, top
    finally:
        for connection in dialed + accepted:
            connection.abort()
        server.close()
        await server.wait_closed()


def test_an_idle_session_allocates_a_bounded_python_heap(tmp_path: Path) -> None:
    per_pair, top = asyncio.run(asyncio.wait_for(_growth(tmp_path), 60))
    assert per_pair <= BOUND_PER_PAIR, "\n".join([f"{per_pair:.0f} B per pair", *top])
    assert per_pair > 4 * 1024  # the measurement sees the sessions at all
