"""Stopped bulk readers beside a live interactive echo, through two relays over real TCP+TLS.

Issue 13: a download whose reader stopped after 1 MiB froze an interactive
session on the same path, and a bulk stream beside it.  Here the source of
one fabric opens three downloads through relay 0 and relay 1 (one session per
hop, shared by every stream), reads 1 MiB of each and stops reading; a fourth
download must still arrive, and the echo's round trips must stay within 2x of
the idle p99 of an identical fabric with no download, measured echo by echo in
alternation in the same process, so that the load of this shared machine hits
both alike.  The echoes are measured once the downloads fill what the stopped
readers leave (pushing those MiB through is CPU work for the one process that
runs all eight nodes, not a protocol effect).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from accessfabric.bench.relay_lab import issue_route
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import FabricStream
from accessfabric.wire.registry import TrafficClass
from tests.relay.fabric import Fabric, build

MiB = 1024 * 1024
DOWNLOAD = "download"
DOWNLOADS = 3
ECHOES = 600
ECHO_TIMEOUT = 5.0
"""An echo that waits this long fails the test (the bug stalled them for ~12 s)."""


async def endless_download(stream: FabricStream) -> None:
    """The destination's service: send until the stream is reset."""
    chunk = b"d" * (256 * 1024)
    while True:
        stream.write(chunk)
        await stream.drain()


async def echo_round_trip(stream: FabricStream, n: int) -> float:
    message = b"%010d" % n
    began = time.perf_counter()
    stream.write(message)
    try:
        echoed = await asyncio.wait_for(stream.readexactly(len(message)), ECHO_TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"echo {n} not back after {ECHO_TIMEOUT} s") from None
    assert echoed == message
    return time.perf_counter() - began


def bytes_in(nodes: list[NodeRuntime]) -> int:
    """Stream bytes the nodes' sessions have received."""
    return sum(s["bytes_in"] for node in nodes for s in node.observe.status()["sessions"])


async def settled(value: Callable[[], int], quiet: float = 2.0, timeout: float = 30.0) -> None:
    """Wait until ``value()`` has not changed for ``quiet`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, since = value(), loop.time()
    while loop.time() - since < quiet:
        assert loop.time() < deadline, f"still changing after {timeout} s"
        await asyncio.sleep(0.01)
        now = value()
        if now != last:
            last, since = now, loop.time()


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def metric(registry: CollectorRegistry, name: str) -> float:
    """A metric as ``/metrics`` serves it (summed over labels)."""
    text = generate_latest(registry).decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def fabric_with_downloads(tmp_path: Path) -> tuple[Fabric, FabricStream]:
    """Source -> relay 0 -> relay 1 -> destination, a download service, an open echo."""
    fabric = await build(tmp_path, relays=2, chained=True)
    src = fabric.source
    fabric.destination.dispatcher.register(DOWNLOAD, endless_download)
    fabric.destination.access.allow[DOWNLOAD] = frozenset({fabric.source.node_id})
    hops = [src.node_id, *(r.node_id for r in fabric.relays), fabric.destination.node_id]
    route = issue_route(fabric.authority, 1, hops, services=(DOWNLOAD, "echo"))
    src.routes.set_routes("echo", TrafficClass.INTERACTIVE, [route])
    src.routes.set_routes(DOWNLOAD, TrafficClass.BULK, [route])
    echo = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
    for n in range(20):  # warm up: sessions, TLS, windows
        await echo_round_trip(echo, n)
    return fabric, echo


async def test_stopped_bulk_readers_leave_an_interactive_echo_as_fast_as_idle(
    tmp_path: Path,
) -> None:
    (tmp_path / "idle").mkdir()
    (tmp_path / "stopped").mkdir()
    idle_fabric, idle_echo = await fabric_with_downloads(tmp_path / "idle")
    fabric, echo = await fabric_with_downloads(tmp_path / "stopped")
    try:
        src = fabric.source
        nodes = [src, *fabric.relays, fabric.destination]
        downloads = []
        for _ in range(DOWNLOADS):
            download = await src.routes.open_stream(DOWNLOAD, TrafficClass.BULK)
            await asyncio.wait_for(download.readexactly(MiB), 10)  # read 1 MiB, then stop
            downloads.append(download)
        await settled(lambda: bytes_in(nodes))
        # The source shows the unread downloads, each within its stream's window.
        status = src.observe.status()
        rows = [s for s in status["streams"] if s["service"] == DOWNLOAD]
        assert len(rows) == DOWNLOADS
        for row in rows:
            assert 0 < row["unread"] <= src.config.session.max_stream_window
            assert {"session_credit_stalls", "stall_s"} <= set(row)
        assert {"session_credit_stalls", "session_stall_s", "unread"} <= set(status["sessions"][0])
        assert metric(src.observe.registry, "accessfabric_unread_bytes") == sum(
            row["unread"] for row in rows
        )
        idle: list[float] = []
        stopped: list[float] = []
        for n in range(20, 20 + ECHOES):
            idle.append(await echo_round_trip(idle_echo, n))
            stopped.append(await echo_round_trip(echo, n))
        idle_p99, stopped_p99 = p99(idle), p99(stopped)
        assert stopped_p99 <= 2 * idle_p99, (
            f"echo p99 {stopped_p99 * 1e3:.2f} ms beside {DOWNLOADS} stopped readers, "
            f"{idle_p99 * 1e3:.2f} ms idle ({ECHOES} samples each)"
        )
        # And a bulk stream beside the stopped ones still moves.
        late = await src.routes.open_stream(DOWNLOAD, TrafficClass.BULK)
        await asyncio.wait_for(late.readexactly(4 * MiB), 20)
        for download in (*downloads, late):
            download.reset()
    finally:
        await fabric.stop()
        await idle_fabric.stop()
