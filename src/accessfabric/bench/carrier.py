"""``accessfabric bench carrier``: one fabric stream over real sockets beside bare transports.

Every figure moves bytes over loopback (``127.0.0.1`` only) with TLS 1.3 from the
same Ed25519 certificates, in one run:

* **fabric tcp+tls**: one BULK stream of a real authenticated session
  (``connect_tcp`` / ``serve_tcp``, default :class:`SessionConfig`), the sender
  writing 256 KiB pieces with ``drain``, the receiver ``read``-ing until EOF;
* **fabric websocket**: the same over ``connect_ws`` / ``serve_ws`` when the node
  has them;
* **raw tls**: asyncio TLS-over-TCP, no framing: the sender writes 256 KiB pieces
  with write-buffer flow control, the receiver is a ``BufferedProtocol`` counting
  bytes into one reused buffer;
* **websockets**: the ``websockets`` library alone (wss, binary 256 KiB messages,
  no compression);
* **h2**: the ``h2`` library, one stream, maximal windows and frame size;
* **aioquic**: one QUIC stream (windows 64 MiB, default datagram size);
* **1400 B packets/s**: 1400-byte writes through one fabric stream, counted at the
  far end (bytes / 1400), beside the same 1400-byte writes on raw TLS.

A rate is bytes / (receiver saw the end - sender started writing); connection set-up
is not timed.  Both clocks are ``perf_counter`` (CLOCK_MONOTONIC, shared by processes).

Beside each rate the suite records the CPU time each end spent on the transfer (the
sender's ``os.times``, the receiving process's ``/proc/PID/stat``): bytes / the busier
end's CPU seconds is the rate that end allows with a core of its own.  On a machine
shared with other work the wall-clock rates swing with the load; these CPU-bound
rates and their ratios move much less.

By default the receivers run in a second process (``ACCESSFABRIC_BENCH_PROCESSES=2``),
as two nodes would; ``=1`` puts sender and receiver in one event loop, which on
two cores leaves one core idle.  ``ACCESSFABRIC_BENCH_LOOP=asyncio`` swaps uvloop out.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from accessfabric.bench.common import BenchNode, machine_note, process_cpu, run_async
from accessfabric.bench.report import BenchReport, BenchResult
from accessfabric.node.dialing import endpoints
from accessfabric.node.dialing.endpoints import connect_tcp, serve_tcp
from accessfabric.node.streams.connection import FabricStream, SessionConnection
from accessfabric.session import SessionConfig
from accessfabric.wire.registry import TrafficClass

PROCESSES_ENV = "ACCESSFABRIC_BENCH_PROCESSES"
HOST = "127.0.0.1"
WRITE = 256 * 1024
PACKET = 1400
MiB = 1 << 20
H2_MAX_WINDOW = (1 << 31) - 1
H2_MAX_FRAME = (1 << 24) - 1
QUIC_WINDOW = 64 * MiB
SENDER_SEED = bytes(range(32))
RECEIVER_SEED = bytes(range(32, 64))

Report = Callable[[str, int, float], None]
"""``(kind, bytes received, perf_counter at the end)`` from a receiver."""


def _has_ws() -> bool:
    return hasattr(endpoints, "connect_ws") and hasattr(endpoints, "serve_ws")


# ---------------------------------------------------------------------------- receivers


class _CountingReceiver(asyncio.BufferedProtocol):
    """Raw TLS receiver: bytes land in one reused buffer and are only counted."""

    def __init__(self, report: Report) -> None:
        self._report = report
        self._buffer = memoryview(bytearray(256 * 1024))
        self._count = 0
        self._done = False

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._count += nbytes

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._report("raw_tls", self._count, time.perf_counter())

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()


class _H2Receiver(asyncio.Protocol):
    def __init__(self, report: Report) -> None:
        import h2.config
        import h2.connection

        self._report = report
        self._conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self._transport: asyncio.Transport | None = None
        self._count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        from h2.settings import SettingCodes

        self._transport = cast(asyncio.Transport, transport)
        conn = self._conn
        conn.initiate_connection()
        conn.update_settings(
            {
                SettingCodes.INITIAL_WINDOW_SIZE: H2_MAX_WINDOW,
                SettingCodes.MAX_FRAME_SIZE: H2_MAX_FRAME,
            }
        )
        conn.increment_flow_control_window(H2_MAX_WINDOW - 65535)
        self._transport.write(conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        import h2.events

        conn = self._conn
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                assert event.data is not None and event.stream_id is not None
                self._count += len(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                assert event.stream_id is not None
                self._report("h2", self._count, time.perf_counter())
                conn.send_headers(event.stream_id, [(":status", "200")], end_stream=True)
        out = conn.data_to_send()
        if out and self._transport is not None:
            self._transport.write(out)


class Receivers:
    """Every receiving server of the suite, in one event loop; each reports once per transfer."""

    def __init__(self, node: BenchNode, report: Report) -> None:
        self.node = node
        self.report = report
        self._servers: list[asyncio.Server] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: list[SessionConnection] = []

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain_stream(self, kind: str, stream: FabricStream) -> None:
        count = 0
        while True:
            chunk = await stream.read()
            if not chunk:
                break
            count += len(chunk)
        self.report(kind, count, time.perf_counter())

    async def _fabric_session(self, kind: str, connection: SessionConnection) -> None:
        while True:
            stream = await connection.accept_stream()
            if stream is None:
                return
            self._spawn(self._drain_stream(kind, stream))

    def _on_fabric(self, kind: str) -> Callable[[SessionConnection], None]:
        def accept(connection: SessionConnection) -> None:
            self._connections.append(connection)
            self._spawn(self._fabric_session(kind, connection))

        return accept

    async def start(self) -> dict[str, int]:
        loop = asyncio.get_running_loop()
        ports: dict[str, int] = {}
        local = self.node.local()

        server = await serve_tcp(local, HOST, 0, self._on_fabric("fabric_tcp"))
        self._servers.append(server)
        ports["fabric_tcp"] = server.sockets[0].getsockname()[1]

        if _has_ws():
            serve_ws: Any = getattr(endpoints, "serve_ws")  # noqa: B009 - built concurrently
            ws_server: Any = await serve_ws(local, HOST, 0, self._on_fabric("fabric_ws"))
            self._closers.append(_closer(ws_server))
            ports["fabric_ws"] = _server_port(ws_server)

        raw = await loop.create_server(
            lambda: _CountingReceiver(self.report), HOST, 0, ssl=self.node.server_ssl()
        )
        self._servers.append(raw)
        ports["raw_tls"] = raw.sockets[0].getsockname()[1]

        h2_server = await loop.create_server(
            lambda: _H2Receiver(self.report), HOST, 0, ssl=self.node.server_ssl(["h2"])
        )
        self._servers.append(h2_server)
        ports["h2"] = h2_server.sockets[0].getsockname()[1]

        ports["websockets"] = await self._start_websockets()
        with contextlib.suppress(ImportError):
            ports["quic"] = await self._start_quic()
        return ports

    async def _start_websockets(self) -> int:
        from websockets.asyncio.server import ServerConnection, serve

        async def handler(ws: ServerConnection) -> None:
            count = 0
            async for message in ws:
                count += len(message)
            self.report("websockets", count, time.perf_counter())

        server = await serve(
            handler,
            HOST,
            0,
            ssl=self.node.server_ssl(),
            compression=None,
            max_size=None,
            ping_interval=None,
        )
        self._closers.append(_closer(server))
        return int(next(iter(server.sockets)).getsockname()[1])

    async def _start_quic(self) -> int:
        from aioquic.asyncio.protocol import QuicConnectionProtocol
        from aioquic.asyncio.server import serve
        from aioquic.quic.configuration import QuicConfiguration
        from aioquic.quic.events import QuicEvent, StreamDataReceived

        report = self.report

        class QuicReceiver(QuicConnectionProtocol):
            count = 0

            def quic_event_received(self, event: QuicEvent) -> None:
                if isinstance(event, StreamDataReceived):
                    self.count += len(event.data)
                    if event.end_stream:
                        report("quic", self.count, time.perf_counter())

        config = QuicConfiguration(
            is_client=False,
            alpn_protocols=["afbench"],
            max_data=QUIC_WINDOW,
            max_stream_data=QUIC_WINDOW,
        )
        config.load_cert_chain(self.node.cert_path, self.node.key_path)
        server = await serve(HOST, 0, configuration=config, create_protocol=QuicReceiver)

        async def close() -> None:
            server.close()

        self._closers.append(close)
        transport = server._transport
        assert transport is not None
        return int(transport.get_extra_info("sockname")[1])

    async def close(self) -> None:
        for connection in self._connections:
            connection.abort()
        for server in self._servers:
            server.close()
        for closer in self._closers:
            with contextlib.suppress(Exception):
                await closer()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        for task in list(self._tasks):
            task.cancel()


def _closer(server: Any) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 2)

    return close


def _server_port(server: Any) -> int:
    sockets = getattr(server, "sockets", None)
    if sockets:
        return int(next(iter(sockets)).getsockname()[1])
    return int(server.port)


# ---------------------------------------------------------------------------- report hub


class _Hub:
    """Receiver reports, whichever process they come from, awaited by kind."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[str, int, float]] = asyncio.Queue()

    def put(self, kind: str, count: int, at: float) -> None:
        self._queue.put_nowait((kind, count, at))

    async def next(self, kind: str, timeout: float = 300.0) -> tuple[int, float]:
        async with asyncio.timeout(timeout):
            while True:
                got, count, at = await self._queue.get()
                if got == kind:
                    return count, at


def _receiver_process(conn: Connection, cert_dir: str) -> None:
    """Entry point of the receiving process: start the servers, report over ``conn``."""
    run_async(_receiver_main(conn, cert_dir))


async def _receiver_main(conn: Connection, cert_dir: str) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    receivers = Receivers(
        BenchNode.make(RECEIVER_SEED, Path(cert_dir)),
        lambda kind, count, at: conn.send((kind, count, at)),
    )
    conn.send(await receivers.start())

    def on_readable() -> None:
        if not stop.done():
            stop.set_result(None)

    loop.add_reader(conn.fileno(), on_readable)
    await stop
    loop.remove_reader(conn.fileno())
    await receivers.close()


# ---------------------------------------------------------------------------- senders


class _FlowSender(asyncio.Protocol):
    """A plain protocol with the write-buffer flow control asyncio gives it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()


async def _send_raw_tls(ctx: _Context, total: int, piece: bytes) -> float:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        _FlowSender, HOST, ctx.ports["raw_tls"], ssl=ctx.sender.client_ssl(), server_hostname=HOST
    )
    transport = proto.transport
    assert transport is not None
    writable = proto.writable
    started = time.perf_counter()
    for _ in range(total // len(piece)):
        transport.write(piece)
        if not writable.is_set():
            await writable.wait()
    transport.close()
    return started


async def _send_fabric(ctx: _Context, kind: str, total: int, piece: bytes) -> float:
    port = ctx.ports["fabric_tcp" if kind == "fabric_tcp_unpaced" else kind]
    peer = ctx.receiver_id
    if kind in ("fabric_tcp", "fabric_tcp_unpaced"):
        local = ctx.local_unpaced if kind == "fabric_tcp_unpaced" else ctx.local
        connection = await connect_tcp(local, HOST, port, expected_peer_id=peer)
    else:
        connect_ws: Any = getattr(endpoints, "connect_ws")  # noqa: B009 - built concurrently
        url = f"wss://{HOST}:{port}{getattr(endpoints, 'FABRIC_PATH', '/fabric')}"
        connection = await connect_ws(ctx.local, url, expected_peer_id=peer)
    try:
        stream = await connection.open_stream("bench", TrafficClass.BULK)
        await connection.ping()  # the stream is open at the far end
        started = time.perf_counter()
        for _ in range(total // len(piece)):
            stream.write(piece)
            await stream.drain()
        stream.close()
        await ctx.received()
    finally:
        await connection.goaway()
        connection.abort()
    return started


async def _send_websockets(ctx: _Context, total: int, piece: bytes) -> float:
    from websockets.asyncio.client import connect

    async with connect(
        f"wss://{HOST}:{ctx.ports['websockets']}",
        ssl=ctx.sender.client_ssl(),
        compression=None,
        max_size=None,
        ping_interval=None,
        proxy=None,
    ) as ws:
        started = time.perf_counter()
        for _ in range(total // len(piece)):
            await ws.send(piece)
    return started


class _H2Sender(asyncio.Protocol):
    def __init__(self) -> None:
        import h2.config
        import h2.connection

        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.transport: asyncio.Transport | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.changed = asyncio.Event()
        self.settled = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        from h2.settings import SettingCodes

        self.transport = cast(asyncio.Transport, transport)
        self.conn.initiate_connection()
        self.conn.update_settings(
            {
                SettingCodes.INITIAL_WINDOW_SIZE: H2_MAX_WINDOW,
                SettingCodes.MAX_FRAME_SIZE: H2_MAX_FRAME,
            }
        )
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        import h2.events

        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settled.set()
        self.changed.set()
        out = self.conn.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        self.changed.set()


async def _send_h2(ctx: _Context, total: int, piece: bytes) -> float:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        _H2Sender, HOST, ctx.ports["h2"], ssl=ctx.sender.client_ssl(["h2"]), server_hostname=HOST
    )
    conn, transport = proto.conn, proto.transport
    assert transport is not None
    await asyncio.wait_for(proto.settled.wait(), 10)
    stream_id = conn.get_next_available_stream_id()
    headers = [(":method", "POST"), (":path", "/"), (":scheme", "https"), (":authority", HOST)]
    conn.send_headers(stream_id, headers)
    view = memoryview(piece)
    started = time.perf_counter()
    remaining = total
    offset = 0
    while remaining:
        window = conn.local_flow_control_window(stream_id)
        if window <= 0:
            proto.changed.clear()
            await proto.changed.wait()
            continue
        size = min(window, conn.max_outbound_frame_size, remaining, len(piece) - offset)
        conn.send_data(
            stream_id, bytes(view[offset : offset + size]) if size < len(piece) else piece
        )
        offset = (offset + size) % len(piece)
        remaining -= size
        transport.write(conn.data_to_send())
        if not proto.writable.is_set():
            await proto.writable.wait()
    conn.end_stream(stream_id)
    transport.write(conn.data_to_send())
    await ctx.received()
    transport.close()
    return started


async def _send_quic(ctx: _Context, total: int, piece: bytes) -> float:
    from aioquic.asyncio.client import connect
    from aioquic.quic.configuration import QuicConfiguration

    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=["afbench"],
        verify_mode=ssl.CERT_NONE,
        max_data=QUIC_WINDOW,
        max_stream_data=QUIC_WINDOW,
    )
    async with connect(HOST, ctx.ports["quic"], configuration=config) as client:
        quic = client._quic
        stream_id = quic.get_next_available_stream_id()
        started = time.perf_counter()
        pieces = total // len(piece)
        for i in range(pieces):
            quic.send_stream_data(stream_id, piece, end_stream=i == pieces - 1)
            client.transmit()
            await asyncio.sleep(0)
        await ctx.received()
    return started


async def _send_packets_fabric(ctx: _Context, count: int) -> float:
    connection = await connect_tcp(ctx.local, HOST, ctx.ports["fabric_tcp"])
    message = os.urandom(PACKET)
    try:
        stream = await connection.open_stream("packets", TrafficClass.BULK)
        await connection.ping()
        started = time.perf_counter()
        for i in range(count):
            stream.write(message)
            if i & 63 == 63:
                await stream.drain()
        stream.close()
        await ctx.received()
    finally:
        await connection.goaway()
        connection.abort()
    return started


async def _send_packets_raw(ctx: _Context, count: int) -> float:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        _FlowSender, HOST, ctx.ports["raw_tls"], ssl=ctx.sender.client_ssl(), server_hostname=HOST
    )
    transport = proto.transport
    assert transport is not None
    message = os.urandom(PACKET)
    writable = proto.writable
    started = time.perf_counter()
    for _ in range(count):
        transport.write(message)
        if not writable.is_set():
            await writable.wait()
    transport.close()
    return started


# ---------------------------------------------------------------------------- the run


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


class _Context:
    def __init__(self, sender: BenchNode, receiver_id: str, hub: _Hub, ports: dict[str, int]):
        self.sender = sender
        self.local = sender.local()
        self.local_unpaced = sender.local(SessionConfig(pacing_target_delay=None))
        self.receiver_id = receiver_id
        self.hub = hub
        self.ports = ports
        self.current: asyncio.Future[tuple[int, float]] | None = None
        self.receiver_pid: int | None = None
        """The receiving process (None when the receivers share this process's loop)."""
        self.cpu: dict[str, tuple[float, float]] = {}
        """Per kind, the least CPU seconds per byte seen at (sender, receiver)."""

    async def received(self) -> None:
        """Wait until the receiver reports the end of the transfer under way."""
        assert self.current is not None
        await asyncio.shield(self.current)


async def _measure(
    ctx: _Context, kind: str, send: Callable[[], Awaitable[float]]
) -> tuple[int, float]:
    """One transfer: (bytes the receiver counted, seconds from first write to its end)."""
    reported = "fabric_tcp" if kind == "fabric_tcp_unpaced" else kind
    ctx.current = asyncio.ensure_future(ctx.hub.next(reported))
    sender_before, receiver_before = _own_cpu(), process_cpu(ctx.receiver_pid)
    try:
        started = await send()
        count, ended = await ctx.current
    finally:
        ctx.current.cancel()
    receiver_after = process_cpu(ctx.receiver_pid)
    if receiver_before is not None and receiver_after is not None and count:
        sender = (_own_cpu() - sender_before) / count
        receiver = (receiver_after - receiver_before) / count
        best = ctx.cpu.get(kind)
        ctx.cpu[kind] = (sender, receiver) if best is None else (
            min(best[0], sender), min(best[1], receiver)
        )  # fmt: skip
    return count, ended - started


async def _main(quick: bool, processes: int, cert_dir: Path) -> BenchReport:
    sender = BenchNode.make(SENDER_SEED, cert_dir)
    receiver_node = BenchNode.make(RECEIVER_SEED, cert_dir)
    sender.local()  # certificate files exist before the receiver process starts
    receiver_node.server_ssl()
    loop = asyncio.get_running_loop()
    hub = _Hub()
    child: Any = None
    parent_conn: Connection | None = None
    receivers: Receivers | None = None
    if processes == 2:
        mp = multiprocessing.get_context("spawn")
        parent_conn, child_conn = mp.Pipe()
        child = mp.Process(target=_receiver_process, args=(child_conn, str(cert_dir)), daemon=True)
        child.start()
        ports: dict[str, int] = await loop.run_in_executor(None, parent_conn.recv)
        conn = parent_conn

        def on_report() -> None:
            while conn.poll():
                hub.put(*conn.recv())

        loop.add_reader(conn.fileno(), on_report)
    else:
        receivers = Receivers(receiver_node, hub.put)
        ports = await receivers.start()
    ctx = _Context(sender, receiver_node.key.node_id, hub, ports)
    if child is not None:
        ctx.receiver_pid = child.pid
    try:
        return await _run_all(ctx, quick, processes)
    finally:
        if parent_conn is not None:
            loop.remove_reader(parent_conn.fileno())
            parent_conn.send("stop")
            await loop.run_in_executor(None, child.join, 10)
            if child.is_alive():
                child.kill()
        if receivers is not None:
            await receivers.close()


async def _run_all(ctx: _Context, quick: bool, processes: int) -> BenchReport:
    report = BenchReport("carrier")
    rounds = 1 if quick else 2
    bulk = (128 if quick else 512) * MiB
    h2_total = (64 if quick else 256) * MiB
    quic_total = (8 if quick else 32) * MiB
    packets = 100_000 if quick else 400_000
    piece = os.urandom(WRITE)
    rates: dict[str, float] = {}

    async def best(kind: str, total: int, send: Callable[[], Awaitable[float]]) -> None:
        count, seconds = await _measure(ctx, kind, send)
        if count != total:
            raise RuntimeError(f"{kind}: receiver counted {count} bytes, sent {total}")
        rates[kind] = max(rates.get(kind, 0.0), total / seconds)

    for _ in range(rounds):
        await best("raw_tls", bulk, lambda: _send_raw_tls(ctx, bulk, piece))
        await best("fabric_tcp", bulk, lambda: _send_fabric(ctx, "fabric_tcp", bulk, piece))
        await best(
            "fabric_tcp_unpaced",
            bulk,
            lambda: _send_fabric(ctx, "fabric_tcp_unpaced", bulk, piece),
        )
        if "fabric_ws" in ctx.ports:
            await best("fabric_ws", bulk, lambda: _send_fabric(ctx, "fabric_ws", bulk, piece))
        await best("websockets", bulk, lambda: _send_websockets(ctx, bulk, piece))
        await best("h2", h2_total, lambda: _send_h2(ctx, h2_total, piece))
    if "quic" in ctx.ports:
        await best("quic", quic_total, lambda: _send_quic(ctx, quic_total, piece))

    packet_rates: dict[str, float] = {}
    for _ in range(rounds):
        count, seconds = await _measure(ctx, "raw_tls", lambda: _send_packets_raw(ctx, packets))
        packet_rates["raw"] = max(packet_rates.get("raw", 0.0), count / PACKET / seconds)
        count, seconds = await _measure(
            ctx, "fabric_tcp", lambda: _send_packets_fabric(ctx, packets)
        )
        if count != packets * PACKET:
            raise RuntimeError(f"packets: receiver counted {count} bytes")
        packet_rates["fabric"] = max(packet_rates.get("fabric", 0.0), count / PACKET / seconds)

    def mbs(kind: str) -> float:
        return rates[kind] / 1e6

    report.add(
        BenchResult(
            metric="fabric tcp+tls MB/s",
            value=mbs("fabric_tcp"),
            unit="MB/s",
            baseline_metric="raw asyncio tls MB/s",
            baseline_value=mbs("raw_tls"),
        )
    )
    report.add(
        BenchResult(
            metric="fabric tcp+tls MB/s",
            value=mbs("fabric_tcp"),
            unit="MB/s",
            baseline_metric="h2 one stream MB/s",
            baseline_value=mbs("h2"),
        )
    )
    report.add(
        BenchResult(
            metric="fabric tcp+tls, pacing off MB/s",
            value=mbs("fabric_tcp_unpaced"),
            unit="MB/s",
            baseline_metric="raw asyncio tls MB/s",
            baseline_value=mbs("raw_tls"),
        )
    )
    if "fabric_ws" in rates:
        report.add(
            BenchResult(
                metric="fabric websocket MB/s",
                value=mbs("fabric_ws"),
                unit="MB/s",
                baseline_metric="websockets alone MB/s",
                baseline_value=mbs("websockets"),
            )
        )
    else:
        report.notes["fabric websocket"] = (
            "not measured: node.dialing.endpoints has no connect_ws/serve_ws"
        )
    report.add(
        BenchResult(
            metric="websockets alone MB/s",
            value=mbs("websockets"),
            unit="MB/s",
            baseline_metric="raw asyncio tls MB/s",
            baseline_value=mbs("raw_tls"),
        )
    )
    if "quic" in rates:
        report.add(
            BenchResult(
                metric="fabric tcp+tls MB/s",
                value=mbs("fabric_tcp"),
                unit="MB/s",
                baseline_metric="aioquic one stream MB/s",
                baseline_value=mbs("quic"),
            )
        )
    else:
        report.notes["aioquic"] = "not measured: aioquic is not installed"
    report.add(
        BenchResult(
            metric="fabric 1400 B writes/s, one stream",
            value=packet_rates["fabric"],
            unit="packets/s",
            baseline_metric="raw tls 1400 B writes/s",
            baseline_value=packet_rates["raw"],
        )
    )
    report.notes["volumes"] = (
        f"fabric/raw/websockets {bulk // MiB} MiB, h2 {h2_total // MiB} MiB, "
        f"aioquic {quic_total // MiB} MiB, {packets:,} packets; best of {rounds}"
    )
    report.notes["processes"] = (
        "receivers in a second process" if processes == 2 else "sender and receiver in one loop"
    )
    report.notes["machine"] = machine_note()

    def met(ok: bool) -> str:
        return "met" if ok else "not met"

    report.notes["targets"] = (
        f"fabric >= 60% raw tls: {met(rates['fabric_tcp'] >= 0.6 * rates['raw_tls'])}; "
        f">= 4x h2: {met(rates['fabric_tcp'] >= 4 * rates['h2'])}; "
        f">= 200,000 packets/s: {met(packet_rates['fabric'] >= 200_000)}"
    )
    _add_cpu_rows(report, ctx.cpu)
    return report


def _add_cpu_rows(report: BenchReport, cpu: dict[str, tuple[float, float]]) -> None:
    """CPU seconds per GiB at each end, and the rate the busier end allows on its own core."""
    if not cpu:
        report.notes["cpu"] = "not measured: the receivers share this process (or no /proc)"
        return
    report.notes["cpu s/GiB sender/receiver"] = "; ".join(
        f"{kind} {sender * (1 << 30):.2f}/{receiver * (1 << 30):.2f}"
        for kind, (sender, receiver) in cpu.items()
        if kind in _BULK_KINDS
    )

    def ceiling(kind: str) -> float:
        return 1 / max(cpu[kind]) / 1e6

    for baseline, name in (("raw_tls", "raw asyncio tls"), ("h2", "h2 one stream")):
        if "fabric_tcp" in cpu and baseline in cpu:
            report.add(
                BenchResult(
                    metric="fabric tcp+tls CPU-bound MB/s",
                    value=ceiling("fabric_tcp"),
                    unit="MB/s",
                    baseline_metric=f"{name} CPU-bound MB/s",
                    baseline_value=ceiling(baseline),
                )
            )


_BULK_KINDS = ("raw_tls", "fabric_tcp", "fabric_tcp_unpaced", "fabric_ws", "websockets", "h2")


def run(quick: bool) -> BenchReport:
    processes = 1 if os.environ.get(PROCESSES_ENV, "2") == "1" else 2
    with tempfile.TemporaryDirectory(prefix="afbench-") as tmp:
        report = run_async(_main(quick, processes, Path(tmp) / "tls"))
    from accessfabric.bench.carrier_extra import add_extra_rows  # QUIC and HTTPS fallback

    add_extra_rows(report, quick)
    return report
