"""The TCP-based carriers' sockets carry the loss-recovery timers (``carriers/tcp_timers.py``),
and a kernel that lacks or refuses an option still connects."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from accessfabric.carriers import tcp_timers
from accessfabric.carriers.tcp_timers import (
    TCP_DELACK_MAX_US,
    TCP_RTO_MIN_US,
    TCP_THIN_LINEAR_TIMEOUTS,
)
from accessfabric.identity.keys import NodeKey
from accessfabric.node.dialing.endpoints import LocalNode, serve_tcp, serve_ws
from accessfabric.node.streams.connection import SessionConnection
from tests.carriers.pairs import (
    close_pair,
    dial_tcp,
    dial_ws,
    port_of,
    serving,
)

KERNEL_RTO_MIN_US = 200_000
JIFFY_US_MAX = 10_000  # HZ=100; the kernel rounds both options up to whole jiffies


def _kernel_has_rto_min() -> bool:
    with socket.socket() as probe:
        try:
            probe.getsockopt(socket.IPPROTO_TCP, TCP_RTO_MIN_US)
        except OSError as error:
            if error.errno in (errno.ENOPROTOOPT, errno.EINVAL):
                return False
            raise
    return True


needs_rto_min = pytest.mark.skipif(
    not _kernel_has_rto_min(), reason="this kernel has no TCP_RTO_MIN_US (Linux < 6.15)"
)


def carrier_socket(connection: SessionConnection) -> Any:
    """The TCP socket under a connection's carrier (TcpCarrier or WebSocketCarrier)."""
    carrier: Any = connection._transport  # the carrier object the session writes to
    return carrier._transport.get_extra_info("socket")


@asynccontextmanager
async def connected(
    kind: str, rto_min: float | None
) -> AsyncIterator[tuple[SessionConnection, SessionConnection]]:
    """A ready dialer/acceptor pair over ``kind`` ("tcp" or "websocket") between two nodes
    with ``tcp_rto_min=rto_min``."""
    with tempfile.TemporaryDirectory(prefix="af-timers-") as tmp:
        nodes = [
            LocalNode(key=NodeKey.generate(), cert_dir=Path(tmp) / name, tcp_rto_min=rto_min)
            for name in ("dialer", "acceptor")
        ]
        dialer_node, acceptor_node = nodes
        serve, dial = (serve_tcp, dial_tcp) if kind == "tcp" else (serve_ws, dial_ws)
        async with serving(serve, acceptor_node, 0) as (server, accepted):
            dialer = await dial(dialer_node, port_of(server), acceptor_node.key.node_id)
            try:
                yield dialer, await accepted.next_ready()
            finally:
                await close_pair(dialer, *accepted.seen)


async def echo_once(dialer: SessionConnection, acceptor: SessionConnection) -> None:
    """A stream from dialer to acceptor carries bytes: the connection really works."""
    stream = await dialer.open_stream("echo")
    stream.write(b"hello")
    incoming = await asyncio.wait_for(acceptor.accept_stream(), 10)
    assert incoming is not None
    assert await asyncio.wait_for(incoming.readexactly(5), 10) == b"hello"


@needs_rto_min
@pytest.mark.parametrize("kind", ["tcp", "websocket"])
async def test_both_ends_carry_the_minimum_rto(kind: str) -> None:
    async with connected(kind, 0.020) as ends:
        for connection in ends:
            sock = carrier_socket(connection)
            rto_min = sock.getsockopt(socket.IPPROTO_TCP, TCP_RTO_MIN_US)
            delack_max = sock.getsockopt(socket.IPPROTO_TCP, TCP_DELACK_MAX_US)
            assert 20_000 <= rto_min < 20_000 + JIFFY_US_MAX
            assert 10_000 <= delack_max < 10_000 + JIFFY_US_MAX
            assert sock.getsockopt(socket.IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS) == 1


@needs_rto_min
async def test_none_leaves_the_kernel_timers_alone() -> None:
    async with connected("tcp", None) as ends:
        for connection in ends:
            sock = carrier_socket(connection)
            assert sock.getsockopt(socket.IPPROTO_TCP, TCP_RTO_MIN_US) == KERNEL_RTO_MIN_US
            assert sock.getsockopt(socket.IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS) == 0


@pytest.mark.parametrize("kind", ["tcp", "websocket"])
async def test_a_kernel_without_the_options_still_connects(
    kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Option numbers no kernel knows: setsockopt fails with ENOPROTOOPT, as on Linux < 6.15.
    monkeypatch.setattr(tcp_timers, "TCP_RTO_MIN_US", 9_001)
    monkeypatch.setattr(tcp_timers, "TCP_DELACK_MAX_US", 9_002)
    monkeypatch.setattr(tcp_timers, "TCP_THIN_LINEAR_TIMEOUTS", 9_003)
    monkeypatch.setattr(tcp_timers, "_reported", set())
    with caplog.at_level(logging.DEBUG, logger=tcp_timers.__name__):
        async with connected(kind, 0.020) as (dialer, acceptor):
            await echo_once(dialer, acceptor)
    assert "TCP_RTO_MIN_US=20000 not applied" in caplog.text


async def test_a_value_the_kernel_refuses_still_connects(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Above the kernel's 200 ms ceiling: EINVAL from a kernel that has the options.
    monkeypatch.setattr(tcp_timers, "_reported", set())
    with caplog.at_level(logging.DEBUG, logger=tcp_timers.__name__):
        async with connected("tcp", 0.5) as (dialer, acceptor):
            await echo_once(dialer, acceptor)
            if _kernel_has_rto_min():
                sock = carrier_socket(dialer)
                assert sock.getsockopt(socket.IPPROTO_TCP, TCP_RTO_MIN_US) == KERNEL_RTO_MIN_US
    assert "TCP_RTO_MIN_US=500000 not applied" in caplog.text
