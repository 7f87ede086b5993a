"""A stream end moved to another path while a writer waited to drain on the old one.

``ResumableStream.drain`` awaits the current hop stream; if the stream is rebound in the
meantime (a resume adopted it on a new path), the old hop stream is retired and the
pending drain fails with the old path's error.  That error must not mark the rebound
stream broken: at a destination nothing would resume it, and its writes would stay in the
copy for good (seen as a 64 MiB echo that stopped after a network change).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from accessfabric.node.streams.connection import SessionClosed
from accessfabric.node.streams.resumable import ResumableStream
from accessfabric.wire.registry import TrafficClass


class Hop:
    """What ``ResumableStream`` uses of a hop stream and its connection."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.service = "web"
        self.traffic_class = TrafficClass.RELIABLE
        self.connection = self
        self.error: BaseException | None = None
        self.writable = asyncio.Event()
        self.written: list[bytes] = []

    def detach(self, stream: Hop, reason: str) -> None:  # the connection's, on retire
        stream.error = SessionClosed(reason)
        stream.writable.set()

    async def drain(self) -> None:
        await self.writable.wait()
        if self.error is not None:
            raise self.error

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.written.append(data)


def state() -> Any:
    return SimpleNamespace(
        acked=0, send_offset=0, queued=0, recv=SimpleNamespace(received=0), recv_end=None
    )


async def test_a_drain_pending_on_the_old_path_leaves_the_rebound_stream_whole() -> None:
    old, new = Hop(1), Hop(3)
    wrapper = ResumableStream(cast(Any, old), state(), b"token")
    draining = asyncio.create_task(wrapper.drain())
    await asyncio.sleep(0)  # the writer waits on the old path
    wrapper.rebind(cast(Any, new), state())  # a resume adopted the stream on a new path
    await asyncio.sleep(0)  # the old path's drain fails now
    assert not draining.done(), "it waits on the new path"
    new.writable.set()
    await asyncio.wait_for(draining, 5)
    assert not wrapper.broken
    wrapper.write(b"echo")
    assert new.written == [b"echo"] and old.written == []
