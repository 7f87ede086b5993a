"""Join a TCP connection and a fabric stream: bytes, half-close and resets both ways.

* TCP FIN from the socket -> the stream is closed (the far end reads EOF);
  the stream's EOF -> ``write_eof`` on the socket (TCP half-close).
* TCP RST (``ConnectionResetError``) -> ``RESET_STREAM`` (``CANCEL``);
  a reset stream (or a session that ended under it) -> the socket is aborted
  with ``SO_LINGER`` 0, i.e. the TCP peer sees an RST.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass

from accessfabric.errors import ErrorCode, ProtocolError
from accessfabric.node.streams.connection import FabricStream, StreamResetError
from accessfabric.timeouts import cancel_and_wait

CHUNK = 64 * 1024


@dataclass(slots=True)
class SpliceStats:
    up: int = 0
    """Bytes from the TCP socket into the stream."""
    down: int = 0
    """Bytes from the stream out to the TCP socket."""
    reset: str = ""
    """Empty when both directions ended with a FIN; else who reset (``tcp`` or ``fabric``)."""
    fabric_code: int | None = None
    """The RESET_STREAM code when the far end of the stream reset it."""


async def stop_listener(server: asyncio.Server | None, tasks: set[asyncio.Task[None]]) -> None:
    """Stop accepting on ``server`` and cancel the connections' ``tasks``, waiting for each."""
    if server is not None:
        server.close()
    await cancel_and_wait(tasks)


def abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close the socket so the peer gets an RST, not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Reset(Exception):
    def __init__(self, side: str) -> None:
        super().__init__(side)
        self.side = side


def _note_remote_reset(error: ConnectionError, stats: SpliceStats) -> None:
    if isinstance(error, StreamResetError) and error.remote and stats.fabric_code is None:
        stats.fabric_code = int(error.code)


async def _tcp_to_fabric(
    reader: asyncio.StreamReader, stream: FabricStream, stats: SpliceStats
) -> None:
    while True:
        try:
            data = await reader.read(CHUNK)
        except OSError:
            raise _Reset("tcp") from None
        if not data:
            with contextlib.suppress(ConnectionError, ProtocolError):
                stream.close()
            return
        stats.up += len(data)
        try:
            stream.write(data)
            await stream.drain()
        except ConnectionError as error:
            _note_remote_reset(error, stats)
            raise _Reset("fabric") from None


async def _fabric_to_tcp(
    stream: FabricStream, writer: asyncio.StreamWriter, stats: SpliceStats
) -> None:
    while True:
        try:
            data = await stream.read(CHUNK)
        except ConnectionError as error:
            _note_remote_reset(error, stats)
            raise _Reset("fabric") from None
        if not data:
            with contextlib.suppress(OSError):
                if writer.can_write_eof():
                    writer.write_eof()
            return
        stats.down += len(data)
        try:
            writer.write(data)
            await writer.drain()
        except OSError:
            raise _Reset("tcp") from None


async def splice(
    stream: FabricStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> SpliceStats:
    """Run both directions until each ended (FIN) or either side reset; close the socket."""
    stats = SpliceStats()
    tasks = [
        asyncio.ensure_future(_tcp_to_fabric(reader, stream, stats)),
        asyncio.ensure_future(_fabric_to_tcp(stream, writer, stats)),
    ]
    clean = False
    try:
        pending: set[asyncio.Future[None]] = set(tasks)
        while pending and not stats.reset:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if isinstance(error, _Reset):
                    stats.reset = error.side
                elif error is not None:
                    raise error
        clean = not stats.reset
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if not clean:
            if stats.reset != "fabric":  # TCP reset, or the splice itself was cancelled
                with contextlib.suppress(ConnectionError, ProtocolError):
                    stream.reset(ErrorCode.CANCEL)
            abort_with_rst(writer)
    if clean:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return stats
