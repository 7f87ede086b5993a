"""An ingress stopped in the loop step its client's request head arrives stops (ADR 0067).

With 3.11's ``asyncio.wait_for`` around the head's read, the connection's task lost that
cancel, asked the fabric for a stream and spliced, and ``close`` (which waits for every
connection task) waited for it: a node that did not stop on SIGTERM while a client held
its connection.
"""

from __future__ import annotations

import asyncio

import pytest

from accessfabric.node.config.ingress_config import IngressConfig
from accessfabric.node.dialing.address import HostPort
from accessfabric.services import ingress as ingress_module
from accessfabric.services.ingress import HostIngress
from tests.stuck_opener import StuckOpener


async def test_a_stop_landing_as_the_head_arrives_ends_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opener = StuckOpener()
    config = IngressConfig(
        listen=HostPort(host="127.0.0.1", port=0), protocol="http", hosts={"web.example": "web"}
    )
    ingress = HostIngress(opener, config)
    real_read = ingress_module.read_http_head
    stopped: list[asyncio.Task[None]] = []

    async def read_then_stopped(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, str]:
        head = await real_read(reader, limit)
        stopped.extend(ingress._tasks)  # what close() cancels: in the step the head came
        for task in stopped:
            task.cancel()
        return head

    monkeypatch.setattr(ingress_module, "read_http_head", read_then_stopped)
    await ingress.start()
    _reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: web.example\r\n\r\n")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while not stopped:
            assert loop.time() < deadline, "the ingress never read the head"
            await asyncio.sleep(0.005)
        done, _ = await asyncio.wait(stopped, timeout=5.0)
        assert done == set(stopped), "the connection's task went on after it was cancelled"
        assert all(task.cancelled() for task in stopped)
        assert opener.asked == []  # no stream asked for after the stop
        await asyncio.wait_for(ingress.close(), 5.0)
    finally:
        writer.close()
        await ingress.close()
