"""The TCP carrier's receive buffers (ADR 0054): a buffer whose bytes a reader has not
taken yet is never received into again; once every pooled buffer is held, receives land
in the scratch buffer and are copied.  Real TCP+TLS on loopback."""

from __future__ import annotations

import hashlib
import os

from accessfabric.carriers import tcp
from accessfabric.carriers.tcp import ReceiveBuffers
from accessfabric.session import SessionConfig
from accessfabric.wire.registry import TrafficClass
from tests.carriers.pairs import PAIRS
from tests.conditions import until

KiB = 1024


def test_a_viewed_buffer_is_not_taken_again_until_its_views_die() -> None:
    buffers = ReceiveBuffers(size=64, limit=2)
    first = buffers.take()
    assert first is not None
    view = memoryview(first)[:10]
    second = buffers.take()
    assert second is not None and second is not first
    held = memoryview(second)[5:]
    assert buffers.take() is None  # both lent: the carrier falls back to the scratch buffer
    assert buffers.lent == 2
    del view
    assert buffers.take() is first
    del held
    assert buffers.lent == 0
    assert len(first) == len(second) == 64  # the probe left the sizes as they were


class _CountingBuffers(ReceiveBuffers):
    def __init__(self, limit: int) -> None:
        super().__init__(limit=limit)
        self.scratch_receives = 0

    def take(self) -> bytearray | None:
        buffer = super().take()
        self.scratch_receives += buffer is None
        return buffer


async def test_unread_bytes_survive_later_receives_and_the_scratch_fallback() -> None:
    pool = _CountingBuffers(limit=2)  # two lent buffers, then the scratch path
    saved = getattr(tcp._shared, "buffers", None)
    tcp._shared.buffers = pool
    # A stream window that lets megabytes wait unread, in several receives.
    config = SessionConfig(pacing_target_delay=None, initial_stream_window=4 * 1024 * KiB)
    try:
        async with PAIRS["tcp_tls"](config) as pair:
            payload = os.urandom(3 * 1024 * KiB)
            stream = await pair.dialer.open_stream("bulk", TrafficClass.BULK)
            stream.write(payload)
            stream.close()
            accepted = await pair.acceptor.accept_stream()
            assert accepted is not None
            # Unread, the first receives hold pooled buffers; later ones reuse nothing
            # still viewed (the scratch buffer is copied out of at once).
            await until(lambda: pool.lent == 2, timeout=10.0)
            await until(lambda: pool.scratch_receives > 0, timeout=10.0)
            received = bytearray()
            while chunk := await accepted.read():
                received += chunk
            assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
            await until(lambda: pool.lent == 0, timeout=10.0)
    finally:
        tcp._shared.buffers = saved
