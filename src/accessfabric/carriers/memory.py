"""An in-process carrier pair for tests: bytes hop to the other end on the next loop turn."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from accessfabric.carriers.base import ByteTransport, CarrierInfo, CarrierListener

WRITE_HIGH_WATER = 256 * 1024


class MemoryCarrier:
    """One end of an in-memory pipe."""

    kind = "memory"

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.peer: MemoryCarrier | None = None
        self.listener: CarrierListener | None = None
        self._in_flight = 0
        self._closed = False

    def write(self, data: bytes) -> None:
        peer = self.peer
        if self._closed or peer is None:
            return
        self._in_flight += len(data)
        self._loop.call_soon(self._deliver, peer, bytes(data))

    def _deliver(self, peer: MemoryCarrier, data: bytes) -> None:
        self._in_flight -= len(data)
        if peer.listener is not None and not peer._closed:
            peer.listener.data_received(data)
        if self.listener is not None and not self._closed:
            self.listener.writable()

    def write_capacity(self) -> int:
        return 0 if self._closed else max(0, WRITE_HIGH_WATER - self._in_flight)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.call_soon(self._lost, None)
        if self.peer is not None and not self.peer._closed:
            self.peer._closed = True
            self._loop.call_soon(self.peer._lost, None)

    def abort(self) -> None:
        self.close()

    def _lost(self, exc: BaseException | None) -> None:
        if self.listener is not None:
            listener, self.listener = self.listener, None
            listener.connection_lost(exc)


def memory_pair(
    dialer_factory: Callable[[CarrierInfo, ByteTransport], CarrierListener],
    acceptor_factory: Callable[[CarrierInfo, ByteTransport], CarrierListener],
) -> tuple[MemoryCarrier, MemoryCarrier]:
    """Two connected ends; each factory builds its end's listener (a session connection)."""
    a, b = MemoryCarrier(), MemoryCarrier()
    a.peer, b.peer = b, a
    binding = os.urandom(32)
    a.listener = dialer_factory(
        CarrierInfo(kind="memory", dialer=True, peer_address="memory", channel_binding=binding), a
    )
    b.listener = acceptor_factory(
        CarrierInfo(kind="memory", dialer=False, peer_address="memory", channel_binding=binding), b
    )
    return a, b
