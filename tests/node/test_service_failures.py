"""A failing service handler resets its stream with a code that says why: an unreachable
target is ``SERVICE_UNAVAILABLE``, a target that reset the connection ``CANCEL``, a bug
``INTERNAL_ERROR`` (logged with its traceback at a bounded rate)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from accessfabric.errors import ErrorCode
from accessfabric.node.serving.services import ServiceDispatcher
from accessfabric.node.streams.connection import FabricStream, StreamResetError
from accessfabric.node.streams.resumable import StreamNotResumed
from tests.carriers.pairs import ConnectedPair, memory_connections
from tests.conditions import until


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _reset_code(pair: ConnectedPair, dispatcher: ServiceDispatcher, service: str) -> object:
    """Open a stream to ``service``, hand the accepted end to ``dispatcher``: the code the
    opener's stream was reset with."""
    opened = await pair.dialer.open_stream(service)
    opened.write(b"hello")
    accepted = await asyncio.wait_for(pair.acceptor.accept_stream(), 5)
    assert accepted is not None
    dispatcher.dispatch(accepted, "peer")
    with pytest.raises(StreamResetError) as reset:
        await asyncio.wait_for(opened.read(), 5)
    return reset.value.code


async def test_a_handler_whose_target_refuses_resets_with_service_unavailable() -> None:
    port = _closed_port()

    async def connect_to_target(stream: FabricStream) -> None:
        await asyncio.open_connection("127.0.0.1", port)  # refused: not caught here

    dispatcher = ServiceDispatcher()
    dispatcher.register("rdp", connect_to_target)
    async with memory_connections() as pair:
        assert await _reset_code(pair, dispatcher, "rdp") == ErrorCode.SERVICE_UNAVAILABLE
    assert (dispatcher.target_failures, dispatcher.handler_errors) == (1, 0)


async def test_a_target_reset_under_the_handler_resets_with_cancel() -> None:
    async def target_resets(stream: FabricStream) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    dispatcher = ServiceDispatcher()
    dispatcher.register("ssh", target_resets)
    async with memory_connections() as pair:
        assert await _reset_code(pair, dispatcher, "ssh") == ErrorCode.CANCEL


async def test_a_handler_bug_resets_with_internal_error_and_is_logged_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def buggy(stream: FabricStream) -> None:
        raise KeyError("a bug")

    dispatcher = ServiceDispatcher()
    dispatcher.register("web", buggy)
    with caplog.at_level(logging.ERROR, logger="accessfabric.node.serving.services"):
        async with memory_connections() as pair:
            for _ in range(3):
                assert await _reset_code(pair, dispatcher, "web") == ErrorCode.INTERNAL_ERROR
    assert dispatcher.handler_errors == 3
    lines = [r for r in caplog.records if "failed on stream" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]  # one per interval, not three
    assert lines[0].exc_info is not None and lines[0].exc_info[0] is KeyError


async def test_a_tcp_service_host_whose_target_refuses_is_reset_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """services/tcp_forward.service_host raises TargetUnreachable: one bounded log line for
    a flood of streams to a dead target, each reset SERVICE_UNAVAILABLE and counted."""
    from accessfabric.services.tcp_forward import ForwardCounters, service_host

    tally = ForwardCounters()
    dispatcher = ServiceDispatcher()
    dispatcher.register("rdp", service_host("127.0.0.1", _closed_port(), tally))
    with caplog.at_level(logging.WARNING, logger="accessfabric.node.serving.services"):
        async with memory_connections() as pair:
            for _ in range(5):
                assert await _reset_code(pair, dispatcher, "rdp") == ErrorCode.SERVICE_UNAVAILABLE
    assert (tally.failed, dispatcher.target_failures) == (5, 5)
    lines = [r for r in caplog.records if r.getMessage() == "service target failed"]
    assert len(lines) == 1, caplog.records


async def test_a_stream_its_peer_never_resumed_is_no_target_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A served end whose client went away (no resume within the window) fails its reads
    with StreamNotResumed: the stream ended under the handler, nothing to count or warn."""
    ran = asyncio.Event()

    async def echo(stream: FabricStream) -> None:
        try:
            raise StreamNotResumed("not resumed: carrier lost")
        finally:
            ran.set()

    dispatcher = ServiceDispatcher()
    dispatcher.register("echo", echo)
    with caplog.at_level(logging.DEBUG, logger="accessfabric.node.serving.services"):
        async with memory_connections() as pair:
            opened = await pair.dialer.open_stream("echo")
            opened.write(b"hello")
            accepted = await asyncio.wait_for(pair.acceptor.accept_stream(), 5)
            assert accepted is not None
            dispatcher.dispatch(accepted, "peer")
            await asyncio.wait_for(ran.wait(), 5)
            await until(lambda: any(r.getMessage() == "stream ended early" for r in caplog.records))
    assert (dispatcher.target_failures, dispatcher.handler_errors) == (0, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
