"""``accessfabric bench tls``: what TLS-over-TCP costs per byte with three ways to drive OpenSSL.

The question it answers: would a TLS transport of our own, written in Python around the
stdlib ``ssl`` module, move bytes more cheaply than the event loop's own TLS transport
(uvloop's Cython ``SSLProtocol`` on the node's default loop)?  One TCP connection over
``127.0.0.1``, TLS 1.3 with the fabric's certificates and contexts, no framing, the
receiver in a second process (spawned), each way in turn:

* **loop**: the event loop's TLS transport; the receiver is a ``BufferedProtocol``
  counting into one reused buffer, the sender writes 256 KiB pieces with write-buffer
  flow control (the ``raw tls`` baseline of ``bench carrier``);
* **sslobject**: ``ssl.SSLObject`` between two ``MemoryBIO``\\ s over a non-blocking socket
  (``add_reader``/``add_writer``): ``recv_into`` one reused buffer, ``incoming.write``,
  ``SSLObject.read(n, buffer)`` into a second reused buffer; the sender
  ``SSLObject.write``\\ s each piece and sends ``outgoing.read()``;
* **sslsocket**: a non-blocking ``ssl.SSLSocket`` (OpenSSL reads and writes the socket
  itself, no memory BIO): ``recv_into`` one reused buffer; ``send`` each piece.

Each end measures its own CPU time (``os.times``) from the first byte it moves to the
last; the figure is bytes / the busier end's CPU seconds (the rate that end allows with
a core of its own), which stays comparable on a machine shared with other work.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from accessfabric.bench.common import BenchNode, machine_note, run_async
from accessfabric.bench.report import BenchReport, BenchResult

HOST = "127.0.0.1"
PIECE = 256 * 1024
BUFFER = 256 * 1024
SENDER_SEED = bytes(range(32))
RECEIVER_SEED = bytes(range(32, 64))
KINDS = ("loop", "sslobject", "sslsocket")

Receiver = Callable[[socket.socket, BenchNode, int], Coroutine[Any, Any, tuple[int, float]]]
Sender = Callable[[socket.socket, BenchNode, int], Coroutine[Any, Any, float]]
"""Each returns the CPU seconds it spent after the handshake (receivers: and bytes seen)."""


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


async def _wait(sock: socket.socket, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    fd = sock.fileno()
    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


# ---------------------------------------------------------------------------- loop transport


class _CountingProtocol(asyncio.BufferedProtocol):
    def __init__(self, total: int, done: asyncio.Future[None]) -> None:
        self._buffer = memoryview(bytearray(BUFFER))
        self._total = total
        self._done = done
        self.count = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.count += nbytes
        if self.count >= self._total and not self._done.done():
            self._done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)


class _FlowProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        if not self.closed.done():
            self.closed.set_result(None)


async def _loop_receive(sock: socket.socket, node: BenchNode, total: int) -> tuple[int, float]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    protocol = _CountingProtocol(total, done)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock, ssl=node.server_ssl())
    started = _cpu()
    await done
    spent = _cpu() - started
    transport.close()
    return protocol.count, spent


async def _loop_send(sock: socket.socket, node: BenchNode, total: int) -> float:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        _FlowProtocol, sock=sock, ssl=node.client_ssl(), server_hostname=HOST
    )
    piece = os.urandom(PIECE)
    started = _cpu()
    for _ in range(total // PIECE):
        transport.write(piece)
        if not protocol.writable.is_set():
            await protocol.writable.wait()
    spent = _cpu() - started
    transport.close()  # the loop still holds unsent bytes: wait until they are out
    await asyncio.wait_for(protocol.closed, 60)
    return spent


# ---------------------------------------------------------------------------- SSLObject + BIO


async def _bio_handshake(
    tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, sock: socket.socket
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        pending = outgoing.read()
        if pending:
            await loop.sock_sendall(sock, pending)
        if done:
            return
        data = await loop.sock_recv(sock, 65536)
        if not data:
            raise ConnectionError("peer closed during the TLS handshake")
        incoming.write(data)


async def _bio_receive(sock: socket.socket, node: BenchNode, total: int) -> tuple[int, float]:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = node.server_ssl().wrap_bio(incoming, outgoing, server_side=True)
    await _bio_handshake(tls, incoming, outgoing, sock)
    raw = memoryview(bytearray(BUFFER))
    plain = memoryview(bytearray(BUFFER))
    count = 0
    started = _cpu()
    while count < total:
        try:
            received = sock.recv_into(raw)
        except BlockingIOError:
            await _wait(sock, write=False)
            continue
        if not received:
            break
        incoming.write(raw[:received])
        try:
            while True:
                read = cast(int, tls.read(BUFFER, plain))  # with a buffer: a count
                if not read:
                    break
                count += read
        except ssl.SSLWantReadError:
            pass
    return count, _cpu() - started


async def _bio_send(sock: socket.socket, node: BenchNode, total: int) -> float:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = node.client_ssl().wrap_bio(incoming, outgoing, server_hostname=HOST)
    await _bio_handshake(tls, incoming, outgoing, sock)
    piece = os.urandom(PIECE)
    started = _cpu()
    for _ in range(total // PIECE):
        tls.write(piece)
        view = memoryview(outgoing.read())
        while view:
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                await _wait(sock, write=True)
    return _cpu() - started


# ---------------------------------------------------------------------------- SSLSocket


async def _socket_handshake(tls: ssl.SSLSocket) -> None:
    while True:
        try:
            tls.do_handshake()
            return
        except ssl.SSLWantReadError:
            await _wait(tls, write=False)
        except ssl.SSLWantWriteError:
            await _wait(tls, write=True)


async def _socket_receive(sock: socket.socket, node: BenchNode, total: int) -> tuple[int, float]:
    tls = node.server_ssl().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    await _socket_handshake(tls)
    buffer = memoryview(bytearray(BUFFER))
    count = 0
    started = _cpu()
    while count < total:
        try:
            received = tls.recv_into(buffer)
        except ssl.SSLWantReadError:
            await _wait(tls, write=False)
            continue
        if not received:
            break
        count += received
    spent = _cpu() - started
    tls.close()
    return count, spent


async def _socket_send(sock: socket.socket, node: BenchNode, total: int) -> float:
    tls = node.client_ssl().wrap_socket(sock, server_hostname=HOST, do_handshake_on_connect=False)
    await _socket_handshake(tls)
    piece = os.urandom(PIECE)
    started = _cpu()
    for _ in range(total // PIECE):
        while True:  # OpenSSL wants the same piece again until it is all written
            try:
                tls.send(piece)
                break
            except ssl.SSLWantWriteError:
                await _wait(tls, write=True)
    spent = _cpu() - started
    tls.close()
    return spent


RECEIVERS: dict[str, Receiver] = {
    "loop": _loop_receive,
    "sslobject": _bio_receive,
    "sslsocket": _socket_receive,
}
SENDERS: dict[str, Sender] = {"loop": _loop_send, "sslobject": _bio_send, "sslsocket": _socket_send}


# ---------------------------------------------------------------------------- processes


def _receiver_process(conn: Connection, kind: str, total: int, cert_dir: str) -> None:
    listener = socket.create_server((HOST, 0))
    conn.send(listener.getsockname()[1])
    sock, _ = listener.accept()
    listener.close()
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    node = BenchNode.make(RECEIVER_SEED, Path(cert_dir))
    count, spent = run_async(RECEIVERS[kind](sock, node, total))
    conn.send((count, spent, time.perf_counter()))
    sock.close()


async def _send(kind: str, port: int, node: BenchNode, total: int) -> tuple[float, float]:
    sock = socket.create_connection((HOST, port))
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    started = time.perf_counter()
    try:
        spent = await SENDERS[kind](sock, node, total)
    finally:
        sock.close()
    return started, spent


def _transfer(kind: str, total: int, cert_dir: Path) -> tuple[float, float, float]:
    """(wall seconds, sender CPU seconds, receiver CPU seconds) for one transfer."""
    context = multiprocessing.get_context("spawn")
    parent, child_end = context.Pipe()
    child = context.Process(
        target=_receiver_process, args=(child_end, kind, total, str(cert_dir)), daemon=True
    )
    child.start()
    try:
        if not parent.poll(30):
            raise RuntimeError(f"{kind}: the receiving process did not start")
        port = parent.recv()
        node = BenchNode.make(SENDER_SEED, cert_dir)
        started, sender_cpu = run_async(_send(kind, port, node, total))
        if not parent.poll(120):
            raise RuntimeError(f"{kind}: the receiver did not finish")
        count, receiver_cpu, ended = parent.recv()
        if count != total:
            raise RuntimeError(f"{kind}: receiver counted {count} bytes, sent {total}")
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
    return ended - started, sender_cpu, receiver_cpu


def run(quick: bool) -> BenchReport:
    report = BenchReport("tls")
    total = (128 if quick else 512) << 20
    rounds = 2 if quick else 3
    best: dict[str, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="afbench-") as tmp:
        cert_dir = Path(tmp) / "tls"
        BenchNode.make(SENDER_SEED, cert_dir).client_ssl()  # certificate files exist first
        BenchNode.make(RECEIVER_SEED, cert_dir).server_ssl()
        for _ in range(rounds):
            for kind in KINDS:  # interleaved: load changes hit every kind alike
                wall, sender, receiver = _transfer(kind, total, cert_dir)
                old = best.get(kind)
                best[kind] = (
                    (wall, sender, receiver)
                    if old is None
                    else (min(old[0], wall), min(old[1], sender), min(old[2], receiver))
                )

    def cpu_bound(kind: str) -> float:
        return total / max(best[kind][1], best[kind][2]) / 1e6

    for kind, name in (("sslobject", "SSLObject + MemoryBIO"), ("sslsocket", "SSLSocket")):
        report.add(
            BenchResult(
                metric=f"{name} CPU-bound MB/s",
                value=cpu_bound(kind),
                unit="MB/s",
                baseline_metric="event loop TLS transport CPU-bound MB/s",
                baseline_value=cpu_bound("loop"),
            )
        )
    gib = total / (1 << 30)
    report.notes["cpu s/GiB sender/receiver"] = "; ".join(
        f"{kind} {best[kind][1] / gib:.2f}/{best[kind][2] / gib:.2f}" for kind in KINDS
    )
    report.notes["wall MB/s"] = "; ".join(
        f"{kind} {total / best[kind][0] / 1e6:.0f}" for kind in KINDS
    )
    report.notes["volumes"] = f"{total >> 20} MiB per transfer, best of {rounds}"
    report.notes["machine"] = machine_note()
    return report
