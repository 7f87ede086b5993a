"""Demo: the interactive session's two ends, each a process of its own.

``serve PORT`` is home's ``term`` service (a TCP echo standing in for a remote shell);
``client PORT`` is the user's terminal on laptop: every ``--interval`` seconds it sends
``--probe`` random bytes through laptop's forward, waits for them to come back and
prints one line ``echo SENT RTT ANSWERED`` (``time.monotonic()`` at the send and at the
answer, the round trip by ``time.perf_counter()``, seconds) on stdout; ``error TEXT`` on
a failure.  It stops when its stdin closes (``shutdown`` of its half, then the echo
server's EOF).

Neither end shares a process or an event loop with the bulk download: a user's shell
server and terminal never share one with a browser's download, and when they did (the
demo before ADR 0058) each echo also waited behind the download's reads and sha256 in
the demo's own loop (docs/benchmarks.md, "Issue 18 item 5: the demo's own process").
Both are plain blocking sockets: one thread per echo session, no event loop.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import socketserver
import sys
import time

PROBE = 64
PROBE_INTERVAL = 0.02
DRAIN_WITHIN = 5.0
"""Seconds the client waits for the server's FIN once it has stopped (then: the error line)."""


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while data := sock.recv(65536):
                sock.sendall(data)
        except OSError:
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(port: int) -> None:
    with _Server(("127.0.0.1", port), _Echo) as server:
        server.serve_forever()


def _exactly(sock: socket.socket, size: int) -> bytes:
    parts, left = [], size
    while left:
        part = sock.recv(left)
        if not part:
            raise ConnectionError(f"the echo ended {left} bytes short")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def client(port: int, probe: int, interval: float) -> int:
    out = sys.stdout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                payload = os.urandom(probe)
                sent_at, sent = time.monotonic(), time.perf_counter()
                sock.sendall(payload)
                if _exactly(sock, probe) != payload:
                    out.write("error echo: the answer differs from what was sent\n")
                    return 1
                rtt = time.perf_counter() - sent
                out.write(f"echo {sent_at:.6f} {rtt:.6f} {time.monotonic():.6f}\n")
                out.flush()
                if select.select([sys.stdin], [], [], interval)[0]:
                    break  # stdin readable: closed by the demo
            sock.settimeout(DRAIN_WITHIN)  # a lost FIN ends in the error line, soon
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
    except OSError as error:
        out.write(f"error echo session: {error!r}\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m accessfabric.demo.echo")
    parser.add_argument("mode", choices=("serve", "client"))
    parser.add_argument("port", type=int)
    parser.add_argument("--probe", type=int, default=PROBE)
    parser.add_argument("--interval", type=float, default=PROBE_INTERVAL)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        serve(args.port)
        return 0
    return client(args.port, args.probe, args.interval)


if __name__ == "__main__":
    sys.exit(main())
