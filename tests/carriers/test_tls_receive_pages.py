"""An idle accepted TLS connection holds no resident receive-buffer pages (ADR 0050).

The loop's TLS protocol keeps a 256 KiB receive buffer per connection (asyncio: a zeroed
``bytearray``, every page resident; uvloop: ``malloc``, resident where the heap block had
been used before).  After the handshake, ``serve_tls`` gives the buffer's pages back, and
the connection's later small reads touch a page or two.  Real TCP+TLS on loopback, on
asyncio's loop and on uvloop's; residency measured with ``mincore``."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from accessfabric.carriers import buffer_pages
from accessfabric.carriers.buffer_pages import resident_bytes
from accessfabric.carriers.tls_accept import _ssl_protocol_class, serve_tls
from accessfabric.identity.keys import NodeKey
from accessfabric.identity.tls import client_context, server_context
from tests.conditions import until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or buffer_pages._LIBC is None, reason="Linux (mincore)"
)

CONNECTIONS = 20
KiB = 1024


class _Admit:
    def admit(self, address: str) -> bool:
        return True

    def done(self, address: str, error: str | None) -> None:
        pass


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


def _dirty_heap() -> None:
    """Free heap memory whose pages are resident, for the next 256 KiB blocks to reuse."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    blocks = [libc.malloc(256 * KiB + 512) for _ in range(2 * CONNECTIONS)]
    for block in blocks:
        ctypes.memset(block, 0x5A, 256 * KiB + 512)
    for block in reversed(blocks):
        libc.free(block)


async def _connect_and_measure(tmp_path: Path) -> list[int]:
    """Open CONNECTIONS TLS connections, echo a small message on each; the resident bytes
    of each accepted connection's receive buffer."""
    server_key, client_key = NodeKey.generate(), NodeKey.generate()
    context = server_context(server_key, tmp_path / "s")
    client = client_context(client_key, tmp_path / "c")
    server, acceptor = await serve_tls(_Echo, "127.0.0.1", 0, context, _Admit(), 10.0)
    port = server.sockets[0].getsockname()[1]
    sockets: list[ssl.SSLSocket] = []
    gc.collect()
    earlier = _protocols()  # of an earlier test, not yet freed
    try:
        _dirty_heap()
        # Blocking clients in a thread: the only TLS protocols on the loop are the server's.
        await asyncio.to_thread(_clients, client, port, sockets)
        buffers = [o.get_buffer(0) for o in _protocols() if all(o is not e for e in earlier)]
        assert acceptor.released >= CONNECTIONS * 200 * KiB, acceptor.released
        return [resident_bytes(view) for view in buffers]
    finally:
        for sock in sockets:
            sock.close()
        server.close()
        await server.wait_closed()


def _protocols() -> list[Any]:
    kind = _ssl_protocol_class(asyncio.get_running_loop())
    return [o for o in gc.get_objects() if type(o) is kind]


def _clients(context: ssl.SSLContext, port: int, sockets: list[ssl.SSLSocket]) -> None:
    for _ in range(CONNECTIONS):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        sockets.append(sock)
        sock.sendall(b"ping" * 100)
        got = b""
        while len(got) < 400:
            chunk = sock.recv(400 - len(got))
            assert chunk, "the server closed"
            got += chunk
        assert got == b"ping" * 100


def _run(factory: Callable[[], asyncio.AbstractEventLoop], coro: Coroutine[Any, Any, Any]) -> Any:
    loop = factory()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_idle_accepted_connections_hold_no_receive_buffer_pages(
    tmp_path: Path, loop_kind: str
) -> None:
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    resident = _run(factory, _connect_and_measure(tmp_path))
    assert len(resident) == CONNECTIONS, len(resident)
    # Without the release: 256 KiB each on asyncio, most of it on uvloop's reused heap.
    worst = max(resident)
    assert worst <= 16 * KiB, f"{worst // KiB} KiB resident in one receive buffer"


BULK = 192 * KiB


def _bulk_clients(context: ssl.SSLContext, port: int, sockets: list[ssl.SSLSocket]) -> None:
    """CONNECTIONS connections, each echoing BULK bytes once and then left idle."""
    for _ in range(CONNECTIONS):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        sockets.append(sock)
        sock.sendall(b"\x5a" * BULK)
        got = 0
        while got < BULK:
            chunk = sock.recv(BULK - got)
            assert chunk, "the server closed"
            got += len(chunk)


async def _after_bulk(tmp_path: Path, interval: float) -> list[int]:
    """Per accepted connection, its receive buffer's resident bytes after a bulk echo: at
    once without the periodic release (``interval`` 0), else once the sweep has visited
    them all; then every client closes and the sweep lets their sockets go."""
    server_key, client_key = NodeKey.generate(), NodeKey.generate()
    client = client_context(client_key, tmp_path / f"c{interval}")
    context = server_context(server_key, tmp_path / f"s{interval}")
    server, acceptor = await serve_tls(
        _Echo, "127.0.0.1", 0, context, _Admit(), 10.0, release_interval=interval
    )
    port = server.sockets[0].getsockname()[1]
    sockets: list[ssl.SSLSocket] = []
    gc.collect()
    earlier = _protocols()
    try:
        await asyncio.to_thread(_bulk_clients, client, port, sockets)
        buffers = [o.get_buffer(0) for o in _protocols() if all(o is not e for e in earlier)]
        assert len(buffers) == CONNECTIONS, len(buffers)
        if interval:
            await until(
                lambda: max(resident_bytes(v) for v in buffers) <= 16 * KiB,
                timeout=10.0,
                what="the sweep gave every idle connection's pages back",
            )
            assert acceptor.swept >= CONNECTIONS * 32 * KiB, acceptor.swept
        resident = [resident_bytes(view) for view in buffers]
    finally:
        for sock in sockets:
            sock.close()
        server.close()
        await server.wait_closed()
    if interval:
        # Ended connections leave the sweep's list (it holds only their sockets).
        await until(lambda: not acceptor._live, what="closed connections forgotten")
        assert acceptor._sweep is None
    return resident


async def _idle_after_bulk(tmp_path: Path) -> tuple[list[int], list[int]]:
    return await _after_bulk(tmp_path, 0.0), await _after_bulk(tmp_path, 0.2)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_connections_idle_after_bulk_give_their_pages_back(tmp_path: Path, loop_kind: str) -> None:
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    kept, swept = _run(factory, _idle_after_bulk(tmp_path))
    # Without the sweep the bulk's reads leave their pages until the connection ends.
    assert min(kept) >= 32 * KiB, [k // KiB for k in kept]
    assert max(swept) <= 16 * KiB, [s // KiB for s in swept]
