"""A ping read in the same TUN burst as bulk packets is handed to its stream before the
loop runs the bulk writer (issue 18 item 3, ADR 0046); after an urgent record went into
the device, the device is read in the same task step (ADR 0057); no pump yields between
the chunks it writes (ADR 0066 added a yield for bulk, ADR 0070 removed it)."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from accessfabric.services.vpn import (
    READ_CHUNK,
    TunPort,
    VpnClient,
    VpnCounters,
    VpnExit,
    _Pump,
)
from accessfabric.services.vpn_wire import PREAMBLE_SIZE, preamble
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until


def _ip(proto: int, payload: bytes) -> bytes:
    return struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
        bytes((10, 99, 0, 2)), bytes((10, 0, 0, 1)),
    ) + payload  # fmt: skip


PING = _ip(1, bytes((8, 0, 0, 0, 0, 1, 0, 1)) + bytes(56))
BULK = _ip(17, struct.pack("!HHHH", 40000, 5201, 1380, 0) + bytes(1372))


class _Stream:
    def __init__(self, traffic_class: TrafficClass) -> None:
        self.stream_id = 1
        self.service = "vpn"
        self.traffic_class = traffic_class
        self.written: list[bytes] = []
        self._closed = asyncio.Event()

    async def read(self, max_bytes: int = -1) -> bytes:
        await self._closed.wait()
        return b""

    async def readexactly(self, size: int) -> bytes:
        raise AssertionError("not read")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self._closed.set()

    def reset(self, code: object = None) -> None:
        self._closed.set()


class _Opener:
    def __init__(self) -> None:
        self.streams: dict[TrafficClass, _Stream] = {}

    async def open_stream(self, service: str, traffic_class: TrafficClass) -> _Stream:
        stream = self.streams[traffic_class] = _Stream(traffic_class)
        return stream


async def test_urgent_packets_leave_with_the_burst_that_read_them() -> None:
    ours, device = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    opener = _Opener()
    with ours, device:
        vpn = VpnClient(opener, ours.fileno(), shards=1)  # type: ignore[arg-type]
        try:
            vpn._on_packets([BULK, PING])
            await until(lambda: len(opener.streams) == 2, what="both streams open")
            bulk, ping = (
                opener.streams[TrafficClass.RELIABLE],
                opener.streams[TrafficClass.INTERACTIVE],
            )
            await until(lambda: len(bulk.written) == 2 and len(ping.written) == 2)
            vpn._on_packets([BULK, BULK, PING])  # as one TUN read burst; no loop turn after
            assert ping.written[2] == len(PING).to_bytes(2, "big") + PING
            assert len(bulk.written) == 2  # bulk still waits for its writer task
            await until(lambda: len(bulk.written) == 3)
            assert bulk.written[0][:4] == b"AFV1" and len(bulk.written[0]) == PREAMBLE_SIZE
        finally:
            await vpn.close()


REPLY = struct.pack(
    "!BBHHHBBH4s4s", 0x45, 0, 84, 0, 0, 64, 1, 0, bytes((10, 0, 0, 1)), bytes((10, 99, 0, 2))
) + bytes((0, 0, 0, 0, 0, 1, 0, 1)) + bytes(56)  # fmt: skip


class _ExitStream(_Stream):
    """A client's stream into the exit: one record, then notes what the exit had sent back
    when it asked for more (the same task step as its write of the record)."""

    def __init__(self, traffic_class: TrafficClass, device: socket.socket) -> None:
        super().__init__(traffic_class)
        self.device = device
        self.reads = 0
        self.written_at_second_read: list[bytes] | None = None

    async def readexactly(self, size: int) -> bytes:
        return preamble(b"c" * 8, 0)

    async def read(self, max_bytes: int = -1) -> bytes:
        self.reads += 1
        if self.reads == 1:
            self.device.send(REPLY)  # the host answers inside the exit's write
            return len(PING).to_bytes(2, "big") + PING
        self.written_at_second_read = list(self.written)
        return await super().read(max_bytes)


async def _exit_answer(traffic_class: TrafficClass) -> tuple[list[bytes] | None, _ExitStream]:
    ours, device = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    with ours, device:
        vpn = VpnExit(ours.fileno(), shards=1)
        stream = _ExitStream(traffic_class, device)
        task = asyncio.create_task(vpn.handle(stream))  # type: ignore[arg-type]
        try:
            await until(lambda: stream.written_at_second_read is not None)
            assert device.recv(2048) == PING  # the request went into the device
            await until(lambda: any(REPLY in w for w in stream.written), what="reply sent")
            return stream.written_at_second_read, stream
        finally:
            stream.close()
            await task
            await vpn.close()


async def test_exit_reads_the_device_after_an_urgent_write() -> None:
    """ADR 0057: after an interactive record went into the device, the exit reads the device
    in the same task step, so the answer leaves before the rest of the loop turn."""
    early, _ = await _exit_answer(TrafficClass.INTERACTIVE)
    assert early == [len(REPLY).to_bytes(2, "big") + REPLY]


async def test_exit_leaves_bulk_device_reads_to_the_loop() -> None:
    early, _ = await _exit_answer(TrafficClass.RELIABLE)
    assert early == []  # read at the loop's next poll, as before


class _ChunkStream(_Stream):
    """A stream with several full ``READ_CHUNK`` reads buffered: each read returns at once."""

    def __init__(self, traffic_class: TrafficClass, chunks: list[bytes]) -> None:
        super().__init__(traffic_class)
        self.chunks = chunks

    async def readexactly(self, size: int) -> bytes:
        return preamble(b"c" * 8, 0)

    async def read(self, max_bytes: int = -1) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        return await super().read(max_bytes)


def _full_chunks(count: int) -> list[bytes]:
    records = (len(BULK).to_bytes(2, "big") + BULK) * (count * READ_CHUNK // (len(BULK) + 2) + 1)
    return [records[i * READ_CHUNK : (i + 1) * READ_CHUNK] for i in range(count)]


async def _written_when_another_task_ran(role: str, traffic_class: TrafficClass) -> int:
    """Bytes a pump had taken from its stream when a task started just after it first ran."""
    ours, device = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    with ours, device:
        stream = _ChunkStream(traffic_class, _full_chunks(3))
        seen: list[int] = []
        if role == "exit":
            vpn = VpnExit(ours.fileno(), shards=1)
            counters = vpn.counters
            task = asyncio.create_task(vpn.handle(stream))  # type: ignore[arg-type]
        else:
            port = TunPort(ours.fileno(), lambda packets: None, VpnCounters())
            counters = port.counters
            pump = _Pump(stream, port, False, 0.0, 1.0)  # type: ignore[arg-type]
            task = asyncio.create_task(pump.run())

        async def other() -> None:
            seen.append(counters.bytes_in)

        await asyncio.create_task(other())
        try:
            await until(lambda: counters.bytes_in == 3 * READ_CHUNK, what="all chunks taken")
        finally:
            stream.close()
            await task
            if role == "exit":
                await vpn.close()
            else:
                port.close()
        return seen[0]


@pytest.mark.parametrize("traffic_class", [TrafficClass.BULK, TrafficClass.INTERACTIVE])
@pytest.mark.parametrize("role", ["exit", "client"])
async def test_a_pump_writes_what_is_buffered_in_one_step(
    role: str, traffic_class: TrafficClass
) -> None:
    """ADR 0070: no pump yields between chunks (ADR 0066's yield per 256 KiB cost bulk
    throughput in three alternating series and bought the ping nothing measurable; the
    session window bounds what one carrier read decodes)."""
    assert await _written_when_another_task_ran(role, traffic_class) == 3 * READ_CHUNK
