"""Tiny TCP throughput probe run inside namespaces by the tbf test.

``recv PORT SECONDS``: listen, print ``ready``, accept one connection and count the
bytes that arrive during SECONDS after the first one; print ``{"bytes", "seconds"}``.
``send HOST PORT SECONDS``: send zeros until the receiver closes or SECONDS pass.
"""

from __future__ import annotations

import json
import socket
import sys
import time

CHUNK = b"\0" * 65536


def receive(port: int, seconds: float) -> None:
    with socket.create_server(("0.0.0.0", port)) as server:
        print("ready", flush=True)
        server.settimeout(10)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            total = len(conn.recv(65536))
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                conn.settimeout(max(0.01, seconds - elapsed))
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    break
                if not data:
                    break
                total += len(data)
            print(json.dumps({"bytes": total, "seconds": time.monotonic() - start}), flush=True)


def send(host: str, port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with socket.create_connection((host, port), timeout=5) as conn:
        while time.monotonic() < deadline:
            try:
                conn.sendall(CHUNK)
            except OSError:
                return


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "recv":
        receive(int(args[0]), float(args[1]))
    else:
        send(args[0], int(args[1]), float(args[2]))
