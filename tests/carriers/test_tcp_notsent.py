"""The TCP carrier's unsent mark follows the rate the peer acknowledges (ADR 0059): 32 KiB at
800 Mbit/s and below, ``NOTSENT_TIME`` of the rate above it, up to 1 MiB; measured from
``tcpi_bytes_acked`` between retunes; the kernel gets what the carrier says."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest

from accessfabric.carriers import tcp
from accessfabric.carriers.tcp import (
    NOTSENT_LOWAT,
    NOTSENT_LOWAT_MAX,
    RETUNE_WRITES,
    TCP_NOTSENT_LOWAT,
    TcpCarrier,
    notsent_lowat,
)
from accessfabric.carriers.tcp_info import TCP_INFO, read_bytes_acked
from accessfabric.wire.registry import TrafficClass
from tests.carriers.pairs import tcp_connections
from tests.conditions import until

MBIT = 1_000_000 // 8


def test_the_mark_is_a_time_of_the_acknowledged_rate_within_bounds() -> None:
    assert notsent_lowat(None) == NOTSENT_LOWAT  # no rate (old kernel, no data yet)
    assert notsent_lowat(0) == NOTSENT_LOWAT
    assert notsent_lowat(10 * MBIT) == NOTSENT_LOWAT  # a slow path keeps the floor
    assert notsent_lowat(800 * MBIT) == NOTSENT_LOWAT  # what 32 KiB was chosen for
    assert notsent_lowat(8000 * MBIT) == pytest.approx(10 * NOTSENT_LOWAT, rel=0.01)
    assert notsent_lowat(1_000_000_000) == int(1_000_000_000 * tcp.NOTSENT_TIME)
    assert notsent_lowat(100_000_000_000) == NOTSENT_LOWAT_MAX


class _FakeSocket:
    """Answers TCP_INFO with a chosen ``tcpi_bytes_acked``; records the unsent marks set."""

    def __init__(self) -> None:
        self.acked = 0
        self.marks: list[int] = []

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        assert (level, option) == (socket.IPPROTO_TCP, TCP_INFO)
        raw = bytearray(size)
        struct.pack_into("=Q", raw, 120, self.acked)  # tcpi_bytes_acked
        return bytes(raw)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        assert (level, option) == (socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT)
        self.marks.append(value)


class _FakeTransport:
    def __init__(self) -> None:
        self.written = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += 1

    def is_closing(self) -> bool:
        return self.closing


def test_the_carrier_retunes_from_the_acknowledged_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(tcp.time, "monotonic", lambda: clock[0])
    carrier: Any = object.__new__(TcpCarrier)  # no event loop: the write path alone
    fake, transport = _FakeSocket(), _FakeTransport()
    carrier._socket, carrier._transport = fake, transport
    carrier._writes, carrier._acked, carrier.notsent_lowat = 0, None, NOTSENT_LOWAT

    def writes(count: int, *, seconds: float, acked: int) -> None:
        """``count`` writes over ``seconds`` while the peer acknowledges ``acked`` bytes."""
        for _ in range(count):
            clock[0] += seconds / count
            fake.acked += acked // count
            carrier.write(b"x")

    writes(RETUNE_WRITES, seconds=0.01, acked=8 << 20)  # the first look: no rate yet
    assert fake.marks == [] and carrier.notsent_lowat == NOTSENT_LOWAT
    writes(RETUNE_WRITES - 1, seconds=0.01, acked=(RETUNE_WRITES - 1) << 17)
    assert fake.marks == []  # once per RETUNE_WRITES writes
    writes(1, seconds=0.0, acked=1 << 17)  # 8 MiB acknowledged in 10 ms: ~840 MB/s
    assert fake.marks == [notsent_lowat((8 << 20) / 0.01)]
    assert 8 * NOTSENT_LOWAT < fake.marks[0] < NOTSENT_LOWAT_MAX
    writes(RETUNE_WRITES, seconds=0.01, acked=8 << 20)
    assert len(fake.marks) == 1  # the same rate: no needless setsockopt
    writes(RETUNE_WRITES, seconds=0.0005, acked=8 << 20)  # too short an interval to tell
    assert len(fake.marks) == 1
    writes(RETUNE_WRITES, seconds=0.1, acked=0)  # measured from the look before the short one
    assert fake.marks[-1] == notsent_lowat((8 << 20) / 0.1005)
    writes(RETUNE_WRITES, seconds=1.0, acked=4 << 20)  # a reader or a link at 4 MB/s
    assert fake.marks[-1] == NOTSENT_LOWAT and carrier.notsent_lowat == NOTSENT_LOWAT
    transport.closing = True  # uvloop's socket is a bare descriptor: never read it then
    writes(RETUNE_WRITES, seconds=0.01, acked=8 << 20)
    assert fake.marks[-1] == NOTSENT_LOWAT
    assert transport.written == 7 * RETUNE_WRITES


async def test_bytes_acked_of_real_sockets() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    try:
        client.sendall(b"x" * 1_000_000)
        received = 0
        while received < 1_000_000:
            received += len(accepted.recv(1 << 20))
        # the SYN counts on recent kernels; the sender counts the bytes once it has taken
        # the receiver's ACK in (on a loaded host that can be a softirq later)
        await until(lambda: read_bytes_acked(client) in (1_000_000, 1_000_001), 5, "acked")
    finally:
        for sock in (client, accepted, listener):
            sock.close()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert read_bytes_acked(udp) is None  # not TCP
    udp.close()
    assert read_bytes_acked(udp) is None  # closed


async def test_bulk_on_loopback_raises_the_kernels_unsent_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ten times the time: the mark rises above the floor from ~10 MB/s acknowledged, which
    # loopback moves even on a loaded machine (the real threshold, ~100 MB/s, is about
    # what one process running both ends reaches there: the rule is the other tests').
    monkeypatch.setattr(tcp, "NOTSENT_TIME", tcp.NOTSENT_TIME * 10)
    async with tcp_connections() as pair:
        carrier: Any = pair.dialer._transport  # the carrier under test
        assert isinstance(carrier, TcpCarrier)
        sock = carrier._socket
        assert sock.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT) == NOTSENT_LOWAT

        async def drain() -> None:
            stream = await pair.acceptor.accept_stream()
            assert stream is not None
            while await stream.read(1 << 20):
                pass

        reader = asyncio.create_task(drain())
        stream = await pair.dialer.open_stream("bulk", TrafficClass.BULK)
        piece = b"\x5a" * (256 * 1024)
        sent = 0
        # A few retunes (one per 64 writes of at most 128 KiB) raise it; 256 MiB bounds it.
        while carrier.notsent_lowat == NOTSENT_LOWAT and sent < 256 << 20:
            stream.write(piece)
            await stream.drain()
            sent += len(piece)
        assert carrier.notsent_lowat > NOTSENT_LOWAT, f"still the floor after {sent} bytes"
        assert sock.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT) == carrier.notsent_lowat
        stream.close()
        await asyncio.wait_for(reader, 10)
