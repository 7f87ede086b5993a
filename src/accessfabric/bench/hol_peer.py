"""The two ends of ``accessfabric bench hol``, run as processes inside network namespaces.

``python -m accessfabric.bench.hol_peer server --host ADDR --fabric-port P --tcp-port Q
--cert-dir DIR --seed HEX`` serves, on ``ADDR`` only:

* a fabric node (TCP+TLS): a stream named ``bulk`` is read and discarded, one named
  ``bulk-stopped`` is read for its first MiB and then never again (a reader that
  stopped), one named ``bulk-paced`` is read at ``PACED_RATE`` (``curl --limit-rate``),
  a stream named ``ping`` echoes what it reads;
* plain TCP: every connection carries frames ``type (1 B) | length (4 B) | payload``;
  BULK frames are discarded, PING frames are echoed on the same connection.

``python -m accessfabric.bench.hol_peer client MODE ...`` runs one experiment and prints
one JSON object: ``{"rtts_ms": [...], "bulk_bytes": N, "bulk_seconds": S}``.  MODE is

* ``fabric``: one session, a BULK stream saturating the link and an INTERACTIVE stream
  pinging every ``--interval`` seconds (16-byte echo at application level);
* ``stopped`` / ``paced``: the same, but the server's reader of the bulk stream stops
  after 1 MiB / reads only ``PACED_RATE`` bytes per second (issue 13); beside the
  stopped one a second bulk stream, read normally, is the one whose bytes count;
* ``fabric-idle``: the pings on a fabric session with no bulk stream;
* ``fifo``: bulk and pings interleaved FIFO on one plain TCP connection;
* ``separate``: bulk on one plain TCP connection, pings on another;
* ``idle``: pings on a plain TCP connection with no bulk running.

Both ends freeze their start-up objects out of the garbage collector's way once set
up (:func:`~accessfabric.node.host.gc_pauses.freeze_startup_objects`), as ``node run``
does, so a full collection during the measured window does not stall the loop.

Bulk throughput is counted at the sender over the measured window, which starts
after ``--warmup`` seconds, once every queue on the path is full (what stays queued
at the end of the window is bounded by the same buffers, a few MiB).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from accessfabric.bench.common import BenchNode, run_async
from accessfabric.errors import ProtocolError
from accessfabric.node.dialing.endpoints import connect_tcp, serve_tcp
from accessfabric.node.host.gc_pauses import freeze_startup_objects
from accessfabric.node.streams.connection import FabricStream, SessionConnection
from accessfabric.wire.registry import TrafficClass

FRAME = struct.Struct(">BI")
BULK, PING = 1, 2
PING_SIZE = 16
BULK_PIECE = 256 * 1024
STOPPED_AFTER = 1024 * 1024
"""A stopped reader reads this much of its bulk stream, then nothing."""
PACED_RATE = 12 * 1024 * 1024
"""Bytes per second a paced reader reads (``curl --limit-rate 12M``)."""
BULK_SERVICES = {
    "fabric": "bulk",
    "stopped": "bulk-stopped",
    "paced": "bulk-paced",
    "fabric-idle": None,
}
"""Fabric modes and the service of their bulk stream (``fabric-idle``: no bulk)."""


# ---------------------------------------------------------------------------- server


async def _serve(args: argparse.Namespace) -> None:
    node = BenchNode.make(bytes.fromhex(args.seed), Path(args.cert_dir))
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def discard(stream: FabricStream) -> None:
        with contextlib.suppress(ConnectionError, ProtocolError):
            while await stream.read():
                pass

    async def stop_reading(stream: FabricStream) -> None:
        with contextlib.suppress(ConnectionError, ProtocolError, asyncio.IncompleteReadError):
            await stream.readexactly(STOPPED_AFTER)
            await asyncio.Event().wait()  # never read again (the task ends with the bench)

    async def paced(stream: FabricStream) -> None:
        began = time.perf_counter()
        taken = 0
        with contextlib.suppress(ConnectionError, ProtocolError):
            while data := await stream.read(64 * 1024):
                taken += len(data)
                ahead = began + taken / PACED_RATE - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)

    readers: dict[str, Callable[[FabricStream], Coroutine[Any, Any, None]]] = {
        "bulk-stopped": stop_reading,
        "bulk-paced": paced,
    }

    async def echo(stream: FabricStream) -> None:
        with contextlib.suppress(ConnectionError, ProtocolError):
            while data := await stream.read():
                stream.write(data)
                await stream.drain()

    async def session(connection: SessionConnection) -> None:
        while (stream := await connection.accept_stream()) is not None:
            if stream.service == "ping":
                spawn(echo(stream))
            else:
                spawn((readers.get(stream.service) or discard)(stream))

    fabric = await serve_tcp(node.local(), args.host, args.fabric_port, lambda c: spawn(session(c)))

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _nodelay(writer)
        try:
            while True:
                kind, length = FRAME.unpack(await reader.readexactly(FRAME.size))
                payload = await reader.readexactly(length)
                if kind == PING:
                    writer.write(FRAME.pack(PING, length) + payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    tcp = await asyncio.start_server(plain, args.host, args.tcp_port, limit=1 << 20)
    freeze_startup_objects()  # as ``node run`` does once started
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def on_stdin() -> None:
        if not stop.done():
            stop.set_result(None)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    await stop
    fabric.close()
    tcp.close()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# ---------------------------------------------------------------------------- client


class _Window:
    """Counts bulk bytes and keeps the RTTs of the measured window only."""

    def __init__(self, warmup: float, seconds: float) -> None:
        now = time.perf_counter()
        self.start = now + warmup
        self.end = self.start + seconds
        self.bulk = 0
        self.bulk_at_start: int | None = None
        self.bulk_at_end: int | None = None
        self.start_exact = self.end_exact = 0.0
        self.rtts: list[float] = []
        self.stuck = False  # the last ping never came back

    def measuring(self, now: float) -> bool:
        return self.start <= now < self.end

    def count_bulk(self, nbytes: int) -> None:
        self.bulk += nbytes
        now = time.perf_counter()
        if self.bulk_at_start is None and now >= self.start:
            self.bulk_at_start = self.bulk
            self.start_exact = now
        if self.bulk_at_end is None and now >= self.end:
            self.bulk_at_end = self.bulk
            self.end_exact = now

    def result(self) -> dict[str, object]:
        if self.bulk_at_start is None or self.bulk_at_end is None:
            return {"rtts_ms": self.rtts, "bulk_bytes": 0, "bulk_seconds": 0.0, "stuck": self.stuck}
        return {
            "rtts_ms": self.rtts,
            "bulk_bytes": self.bulk_at_end - self.bulk_at_start,
            "bulk_seconds": self.end_exact - self.start_exact,
            "stuck": self.stuck,
        }


async def _pinger(
    window: _Window,
    interval: float,
    send_ping: Callable[[bytes], Awaitable[None]],
    receive_echo: Callable[[], Awaitable[bytes]],
) -> None:
    """One ping outstanding at a time, sent on a fixed ``interval`` grid."""
    seq = 0
    next_at = time.perf_counter()
    while time.perf_counter() < window.end:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        payload = struct.pack(">QQ", seq, 0)
        sent = time.perf_counter()
        await send_ping(payload)
        try:  # an echo still missing a second after the window is counted as that long
            echo = await asyncio.wait_for(receive_echo(), max(0.0, window.end + 1.0 - sent))
        except TimeoutError:
            window.rtts.append((time.perf_counter() - sent) * 1000.0)
            window.stuck = True
            return
        now = time.perf_counter()
        if echo[:8] != payload[:8]:
            raise RuntimeError("echo out of order")
        if window.measuring(sent):
            window.rtts.append((now - sent) * 1000.0)
        seq += 1
        next_at += interval
        if next_at < now:
            next_at = now


async def _client_fabric(args: argparse.Namespace, window: _Window) -> None:
    node = BenchNode.make(bytes.fromhex(args.seed), Path(args.cert_dir))
    connection = await connect_tcp(
        node.local(), args.host, args.fabric_port, expected_peer_id=args.peer_id
    )
    service = BULK_SERVICES[args.mode]
    bulk = None if service is None else await connection.open_stream(service, TrafficClass.BULK)
    ping = await connection.open_stream("ping", TrafficClass.INTERACTIVE)
    piece = os.urandom(BULK_PIECE)
    freeze_startup_objects()

    # Beside a stopped reader, a second bulk stream whose reader reads is the one counted.
    counted = (
        await connection.open_stream("bulk", TrafficClass.BULK) if args.mode == "stopped" else bulk
    )

    async def pump(stream: FabricStream | None, count: bool) -> None:
        if stream is None:
            return
        while time.perf_counter() < window.end + 0.2:
            stream.write(piece)
            await stream.drain()
            if count:
                window.count_bulk(len(piece))

    async def send(payload: bytes) -> None:
        ping.write(payload)

    async def receive() -> bytes:
        return await ping.readexactly(PING_SIZE)

    pumps = [asyncio.ensure_future(pump(counted, True))]
    if counted is not bulk:
        pumps.append(asyncio.ensure_future(pump(bulk, False)))
    await _pinger(window, args.interval, send, receive)
    await asyncio.wait(pumps, timeout=2.0)  # a stopped reader never lets its pump finish
    for pumping in pumps:
        pumping.cancel()
    connection.abort()


async def _client_plain(args: argparse.Namespace, window: _Window) -> None:
    mode = args.mode

    async def open_plain() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(args.host, args.tcp_port)
        _nodelay(writer)
        return reader, writer

    ping_reader, ping_writer = await open_plain()
    bulk_writer = ping_writer if mode == "fifo" else None
    if mode == "separate":
        _, bulk_writer = await open_plain()
    piece = FRAME.pack(BULK, BULK_PIECE) + os.urandom(BULK_PIECE)
    freeze_startup_objects()

    async def pump() -> None:
        assert bulk_writer is not None
        while time.perf_counter() < window.end + 0.2:
            bulk_writer.write(piece)
            await bulk_writer.drain()
            window.count_bulk(BULK_PIECE)

    async def send(payload: bytes) -> None:
        ping_writer.write(FRAME.pack(PING, len(payload)) + payload)

    async def receive() -> bytes:
        while True:
            kind, length = FRAME.unpack(await ping_reader.readexactly(FRAME.size))
            payload = await ping_reader.readexactly(length)
            if kind == PING:
                return payload

    pumping = asyncio.ensure_future(pump()) if bulk_writer is not None else None
    await _pinger(window, args.interval, send, receive)
    if pumping is not None:
        await pumping
    for writer in {ping_writer, bulk_writer}:
        if writer is not None:
            writer.close()


async def _client(args: argparse.Namespace) -> dict[str, object]:
    window = _Window(args.warmup, args.seconds)
    if args.mode in BULK_SERVICES:
        await _client_fabric(args, window)
    else:
        await _client_plain(args, window)
    return window.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m accessfabric.bench.hol_peer")
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("mode", nargs="?", choices=[*BULK_SERVICES, "fifo", "separate", "idle"])
    parser.add_argument("--host", required=True)
    parser.add_argument("--fabric-port", type=int, required=True)
    parser.add_argument("--tcp-port", type=int, required=True)
    parser.add_argument("--cert-dir", required=True)
    parser.add_argument("--seed", required=True, help="hex of this node's 32-byte key seed")
    parser.add_argument("--peer-id", default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--interval", type=float, default=0.01)
    args = parser.parse_args(argv)
    if args.role == "server":
        run_async(_serve(args))
        return 0
    if args.mode is None:
        parser.error("client needs a MODE")
    print(json.dumps(run_async(_client(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
