"""The TCP carrier bounds what waits in its receive path (``carriers/tcp_window.py``,
ADR 0055): derived from the measured rate and minimum RTT, applied only where the kernel's
autotuned buffer lets a standing queue build, and then the bytes ahead of the next frame
stay near the bound while bulk saturates the connection."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import socket
import sys
import termios
import threading
from typing import Any

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener
from accessfabric.carriers.tcp import NOTSENT_LOWAT, TCP_NOTSENT_LOWAT, TcpCarrier
from accessfabric.carriers.tcp_window import (
    BDP_RTTS,
    FLOOR,
    QUEUE_TIME,
    next_buffer,
    receive_bound,
)
from accessfabric.identity.tls import PeerTlsInfo
from tests.conditions import until

MB = 1_000_000


def test_the_bound_keeps_a_wan_paths_window_and_caps_a_queue_on_loopback() -> None:
    # 100 Mbit/s over 40 ms: four times the bandwidth-delay product, never less.
    wan = receive_bound(12.5 * MB, 0.040)
    assert wan >= BDP_RTTS * 12.5 * MB * 0.040
    # 1.6 Gbit/s through veth (min RTT 10 us): about QUEUE_TIME of the rate, not the
    # megabytes the kernel's autotuning grew to.
    veth = receive_bound(200 * MB, 0.000_010)
    assert veth == int(200 * MB * (BDP_RTTS * 0.000_010 + QUEUE_TIME))
    assert veth < 500_000
    assert receive_bound(0, 0.000_010) == FLOOR


def test_next_buffer_engages_only_over_a_bloated_buffer_and_shrinks_by_steps() -> None:
    big = 1 << 30
    # The kernel's buffer is within twice the bound: autotuning stays on.
    assert next_buffer(400_000, 800_000, engaged=False, ceiling=big) is None
    # Far larger: a quarter of it (what the old window allowed may still be in flight);
    # the kernel doubles the value set, so half of the buffer wanted is set ...
    assert next_buffer(400_000, 6_000_000, engaged=False, ceiling=big) == 750_000
    # ... until the bound.
    assert next_buffer(400_000, 600_000, engaged=True, ceiling=big) == 200_000
    # A higher rate raises it at once; a change within 1/8 is left alone.
    assert next_buffer(1_000_000, 400_000, engaged=True, ceiling=big) == 500_000
    assert next_buffer(420_000, 400_000, engaged=True, ceiling=big) is None
    # Without the privilege to exceed net.core.rmem_max, engage only with room to grow.
    assert next_buffer(400_000, 6_000_000, engaged=False, ceiling=212_992) is None
    assert next_buffer(400_000, 6_000_000, engaged=False, ceiling=4_194_304) == 750_000


class _SlowReader(CarrierListener):
    """A CPU-bound receiver: hashes every byte several times (releasing the GIL, so the
    sending thread keeps the connection saturated)."""

    def __init__(self) -> None:
        self.received = 0

    def data_received(self, data: memoryview) -> None:
        for _ in range(6):
            hashlib.sha256(data).digest()
        self.received += len(data)

    def writable(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def _queued(sock: Any, request: int) -> int:
    raw = fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0")
    return int.from_bytes(raw, sys.byteorder, signed=True)


async def test_bulk_into_a_cpu_bound_receiver_queues_at_most_about_the_bound() -> None:
    loop = asyncio.get_running_loop()
    carriers: list[TcpCarrier] = []
    reader = _SlowReader()

    def factory(info: CarrierInfo, transport: ByteTransport, tls: PeerTlsInfo | None) -> Any:
        return reader

    def accept() -> TcpCarrier:
        carriers.append(TcpCarrier(factory, dialer=False, bound_receive=True))
        return carriers[-1]

    server = await loop.create_server(accept, "127.0.0.1", 0)
    sender = socket.create_connection(server.sockets[0].getsockname()[:2])
    sender.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)  # as a carrier
    stop = threading.Event()

    def saturate() -> None:
        piece = b"\x5a" * (1 << 20)
        try:
            while not stop.is_set():
                sender.sendall(piece)
        except OSError:
            pass

    thread = threading.Thread(target=saturate, daemon=True)
    thread.start()
    try:
        await until(lambda: carriers, what="the connection was accepted")
        carrier = carriers[0]
        bound = carrier.receive_bound
        assert bound is not None
        assert carrier._transport is not None
        sock = carrier._transport.get_extra_info("socket")
        autotuned = [0]

        def engaged() -> bool:
            autotuned[0] = max(autotuned[0], sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
            return bound.engaged

        await until(engaged, timeout=15, what="the receive bound engaged")
        assert bound.bound is not None

        def settled() -> bool:
            assert bound.bound is not None
            return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) <= 1.25 * bound.bound

        await until(settled, timeout=15, what="the buffer shrank to the bound")
        # While bulk saturates: what waits unread here plus what the sender holds in
        # flight and unsent, i.e. what a frame written now would queue behind.
        ahead, buffers = [], []
        for _ in range(40):
            await until(
                lambda before=reader.received: reader.received > before, what="bulk kept arriving"
            )
            ahead.append(_queued(sock, termios.FIONREAD) + _queued(sender, termios.TIOCOUTQ))
            buffers.append(
                max(bound.bound or 0, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
            )
        limit = 2 * max(buffers) + 2 * NOTSENT_LOWAT + 65536
        assert max(ahead) <= limit, (ahead, buffers, autotuned[0])
        assert autotuned[0] > 2 * max(buffers)  # what the kernel alone had grown to
    finally:
        stop.set()
        sender.shutdown(socket.SHUT_RDWR)
        thread.join(timeout=10)
        sender.close()
        for carrier in carriers:
            carrier.abort()
        server.close()
        await server.wait_closed()
