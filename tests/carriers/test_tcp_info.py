"""TCP_INFO read from real TLS carriers on loopback, the layout of older kernels, and the
carriers' loss metrics as a node exports them (counters that survive their sessions)."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from accessfabric.carriers.base import CarrierStats
from accessfabric.carriers.tcp_info import TCP_INFO, TcpInfoProbe, parse_tcp_info, read_tcp_info
from accessfabric.node.admin.observability import NodeObservability
from accessfabric.node.streams.connection import SessionConnection
from accessfabric.wire.registry import TrafficClass
from tests.carriers.pairs import PAIRS
from tests.carriers.test_quic import Nodes, pooled

PAYLOAD = 4 * 1024 * 1024


def _samples(observe: NodeObservability) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(observe.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _echo_through(dialer: SessionConnection, acceptor: SessionConnection, size: int) -> None:
    async def serve() -> None:
        stream = await acceptor.accept_stream()
        assert stream is not None
        while data := await stream.read(256 * 1024):
            stream.write(data)
            await stream.drain()
        stream.close()

    server = asyncio.create_task(serve())
    stream = await dialer.open_stream("echo", TrafficClass.BULK)

    async def read_all() -> int:
        got = 0
        while chunk := await stream.read(256 * 1024):
            got += len(chunk)
        return got

    reader = asyncio.create_task(read_all())
    piece = b"\xa5" * (256 * 1024)
    for _ in range(size // len(piece)):
        stream.write(piece)
        await stream.drain()
    stream.close()
    assert await asyncio.wait_for(reader, 30) == size
    await asyncio.wait_for(server, 5)


def _loopback_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    return listener, client, accepted


def test_struct_of_an_older_kernel_leaves_the_newer_fields_unset() -> None:
    listener, client, accepted = _loopback_pair()
    try:
        client.sendall(b"x" * 100_000)
        received = 0
        while received < 100_000:
            received += len(accepted.recv(65536))
        raw = client.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 256)
    finally:
        for sock in (client, accepted, listener):
            sock.close()
    full = parse_tcp_info(raw)
    assert full.bytes_acked in (100_000, 100_001)  # the SYN counts on recent kernels
    assert full.segs_out is not None and full.segs_out >= 2
    if len(raw) >= 216:  # Linux 4.19+
        assert full.bytes_sent == 100_000 and full.bytes_retrans == 0
    assert 0 < full.rtt < 1.0 and full.total_retrans == 0
    classic = parse_tcp_info(raw[:104])  # Linux 2.6 .. 4.0: up to tcpi_total_retrans
    assert classic.rtt == full.rtt and classic.total_retrans == full.total_retrans
    assert classic.segs_out is None and classic.bytes_sent is None and classic.total_rto is None
    assert classic.carrier_stats().segments_sent is None
    v4_6 = parse_tcp_info(raw[:160])  # up to tcpi_data_segs_out: segs_out, no bytes_sent
    assert v4_6.segs_out == full.segs_out and v4_6.bytes_sent is None
    with pytest.raises(ValueError, match="at least 104"):
        parse_tcp_info(raw[:100])


def test_golden_layout() -> None:
    raw = bytearray(248)
    raw[2] = 3  # tcpi_retransmits
    struct.pack_into("=I", raw, 32, 7)  # tcpi_lost
    struct.pack_into("=II", raw, 68, 25_000, 1_500)  # tcpi_rtt, tcpi_rttvar (µs)
    struct.pack_into("=I", raw, 100, 42)  # tcpi_total_retrans
    struct.pack_into("=I", raw, 136, 1_000)  # tcpi_segs_out
    struct.pack_into("=QQ", raw, 200, 1_400_000, 58_800)  # tcpi_bytes_sent, _retrans
    struct.pack_into("=H", raw, 240, 5)  # tcpi_total_rto
    info = parse_tcp_info(bytes(raw))
    assert (info.retransmits, info.lost, info.total_retrans, info.segs_out) == (3, 7, 42, 1000)
    assert (info.rtt, info.rttvar) == (0.025, 0.0015)
    assert (info.bytes_sent, info.bytes_retrans, info.total_rto) == (1_400_000, 58_800, 5)
    assert info.carrier_stats() == CarrierStats(
        rtt=0.025,
        rtt_var=0.0015,
        segments_sent=1000,
        segments_retransmitted=42,
        lost_now=7,
        bytes_sent=1_400_000,
        bytes_retransmitted=58_800,
        timeouts=5,
    )


def test_unreadable_sockets_give_none() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert read_tcp_info(udp) is None  # not TCP
    udp.close()
    assert read_tcp_info(udp) is None  # closed
    assert read_tcp_info(None) is None
    probe = TcpInfoProbe(lambda: None)  # not connected yet
    assert probe.sample() is None


@pytest.mark.parametrize("kind", ["tcp_tls", "websocket"])
async def test_tls_carrier_tcp_info_counts_what_was_sent(kind: str) -> None:
    observe = NodeObservability("test")
    async with PAIRS[kind]() as pair:
        observe.track(pair.dialer)
        probe = pair.dialer.stats_probe
        assert isinstance(probe, TcpInfoProbe)
        before = probe.sample()
        assert before is not None and before.segments_sent is not None
        await _echo_through(pair.dialer, pair.acceptor, PAYLOAD)
        after = probe.sample()
        assert after is not None and after.segments_sent is not None
        assert after.rtt is not None and 0 < after.rtt < 1.0
        # TLS records, fabric frames and the websocket framing only add bytes.
        assert after.bytes_sent is None or after.bytes_sent - (before.bytes_sent or 0) > PAYLOAD
        # Loopback's MSS is ~64 KiB: at least one segment per 64 KiB, each ACKed by the peer.
        assert after.segments_sent - before.segments_sent >= PAYLOAD // 65536
        live = _samples(observe)
        sent = ("accessfabric_carrier_segments_sent_total", (("carrier", kind),))
        assert live[sent] == after.segments_sent  # one connection: its own counter
        assert live[("accessfabric_carrier_rtt_seconds_gcount", (("carrier", kind),))] == 1
        # Even loopback retransmits a little: tail loss probes count as retransmissions.
        retransmitted = live[
            ("accessfabric_carrier_retransmitted_segments_total", (("carrier", kind),))
        ]
        ratio = live[("accessfabric_carrier_retransmit_ratio", (("carrier", kind),))]
        assert ratio == pytest.approx(retransmitted / live[sent])
        await pair.dialer.goaway()
        await asyncio.wait_for(pair.dialer.wait_closed(), 10)
        await asyncio.sleep(0)  # the observer's done-callback folds the session in
    ended = _samples(observe)
    assert ended[sent] >= live[sent]  # the closed session's counts are kept, never less
    assert ("accessfabric_carrier_rtt_seconds_gcount", (("carrier", kind),)) not in ended
    for name, labels in ended:
        if name.startswith("accessfabric_carrier_"):
            assert {key for key, _ in labels} <= {"carrier", "le"}, (name, labels)
    await observe.close()


async def test_quic_sessions_of_one_connection_are_counted_once(tmp_path: Path) -> None:
    nodes = Nodes(tmp_path)
    observe = NodeObservability("test")
    from accessfabric.carriers.quic_config import QuicCarrierConfig

    try:
        async with nodes.serving() as server, pooled(QuicCarrierConfig()) as pool:
            first = await nodes.dial(server, pool)
            second = await nodes.dial(server, pool)
            accepted = [await nodes.next_accepted(), await nodes.next_accepted()]
            assert first.stats_probe is second.stats_probe  # one QUIC connection
            observe.track(first)
            observe.track(second)
            await _echo_through(first, accepted[0], 1024 * 1024)
            stats = first.stats_probe.sample() if first.stats_probe else None
            assert stats is not None and stats.rtt is not None and stats.packets_lost is not None
            live = _samples(observe)
            assert live[("accessfabric_carrier_rtt_seconds_gcount", (("carrier", "quic"),))] == 1
            lost = ("accessfabric_carrier_lost_packets_total", (("carrier", "quic"),))
            assert live[lost] == stats.packets_lost
            await first.goaway()
            await asyncio.wait_for(first.wait_closed(), 10)
            await asyncio.sleep(0)
            assert _samples(observe)[lost] == stats.packets_lost  # not folded while second lives
            await second.goaway()
            await asyncio.wait_for(second.wait_closed(), 10)
            await asyncio.sleep(0)
            final = second.stats_probe.sample() if second.stats_probe else None
            assert final is not None and _samples(observe)[lost] == final.packets_lost
    finally:
        await observe.close()
