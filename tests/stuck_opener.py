"""A stream opener for ingress tests that never gives a stream."""

from __future__ import annotations

import asyncio

from accessfabric.node.streams.connection import FabricStream
from accessfabric.wire.registry import TrafficClass


class StuckOpener:
    """Never gives a stream: a connection that asks for one waits until cancelled (and
    stays open meanwhile); the services asked for are kept in order."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def open_stream(self, service: str, traffic_class: TrafficClass) -> FabricStream:
        self.asked.append(service)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")
