"""Loopback servers that are not fabric nodes, and a TLS-terminating man in the middle.

They run on threads with blocking sockets so that a ``smoke`` subprocess can talk to them
while the test waits for it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from accessfabric.identity.keys import NodeKey
from accessfabric.identity.tls import client_context, server_context

Handler = Callable[[socket.socket], None]


@contextlib.contextmanager
def thread_server(handler: Handler) -> Iterator[int]:
    """Accept on a free loopback port; each connection runs ``handler`` on its own thread."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            thread = threading.Thread(target=_guarded, args=(handler, conn), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        acceptor.join(2)
        listener.close()
        for thread in threads:
            thread.join(2)


def _guarded(handler: Handler, conn: socket.socket) -> None:
    with contextlib.suppress(OSError), conn:
        handler(conn)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def plain_http_handler(conn: socket.socket) -> None:
    """A plain-TCP server that is not TLS: answers an HTTP error and closes."""
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def tls_garbage_handler(cert_dir: Path) -> Handler:
    """A TLS 1.3 server (Ed25519 certificate, as a node's) that answers with garbage."""
    context = server_context(NodeKey.generate(), cert_dir)

    def handle(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(4096)
            tls.sendall(b"\x00\x00\x10\xff garbage, not a fabric frame " * 8)
            with contextlib.suppress(OSError):
                tls.recv(4096)

    return handle


def mitm_handler(target_port: int, cert_dir: Path) -> Handler:
    """Terminate the client's TLS with our own key, open our own TLS to the node, relay bytes."""
    key = NodeKey.generate()
    as_server = server_context(key, cert_dir)
    as_client = client_context(key, cert_dir)

    def handle(conn: socket.socket) -> None:
        with as_server.wrap_socket(conn, server_side=True) as client_side:
            upstream = socket.create_connection(("127.0.0.1", target_port), timeout=5)
            with as_client.wrap_socket(upstream, server_hostname="127.0.0.1") as node_side:
                pump = threading.Thread(target=_relay, args=(node_side, client_side), daemon=True)
                pump.start()
                _relay(client_side, node_side)
                pump.join(5)

    return handle


def _relay(source: ssl.SSLSocket, sink: ssl.SSLSocket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_RDWR)
