"""The demo's interactive ends (``accessfabric.demo.echo``): each a process of its own,
apart from the bulk download (ADR 0058)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from accessfabric.demo.echo import PROBE
from accessfabric.demo.fleet import Fleet
from accessfabric.demo.procs import free_port
from accessfabric.demo.traffic import Traffic, _interactive
from tests.conditions import until

ECHO = [sys.executable, "-m", "accessfabric.demo.echo"]


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the echo server did not listen"
            time.sleep(0.05)


def _client(port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*ECHO, "client", str(port), "--interval", "0.01"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def _echoes(client: subprocess.Popen[str], count: int) -> list[list[float]]:
    """``count`` lines of the client, then its stdin closed: it must end on its own."""
    assert client.stdin is not None and client.stdout is not None
    lines = [client.stdout.readline() for _ in range(count)]
    client.stdin.close()
    rest = client.stdout.read()
    assert client.wait(30) == 0, rest
    assert all(line.startswith("echo ") for line in lines), lines
    return [[float(f) for f in line.split()[1:]] for line in lines + rest.splitlines()]


def test_client_and_server_processes_echo_and_stop_when_stdin_closes() -> None:
    port = free_port()
    server = subprocess.Popen([*ECHO, "serve", str(port)])
    try:
        _wait_listening(port)
        first, second = _client(port), _client(port)  # two sessions at once (threads)
        for client in (first, second):
            for sent_at, rtt, answered_at in _echoes(client, 5):
                assert 0 < rtt <= answered_at - sent_at + 0.001
    finally:
        server.terminate()
        server.wait(10)


def test_client_reports_an_answer_that_differs() -> None:
    """A server that does not echo what it got: the client says so and exits 1."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def wrong() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(PROBE)
                conn.sendall(b"x" * PROBE)
                conn.recv(1)

        thread = threading.Thread(target=wrong, daemon=True)
        thread.start()
        client = _client(port)
        out, _ = client.communicate(timeout=30)
        thread.join(10)
    assert client.returncode == 1
    assert out.startswith("error echo: the answer differs"), out


async def test_the_demo_reads_the_client_process_lines_and_stops_it() -> None:
    """``traffic._interactive``: the echoes of the client process land in the demo's
    result as they come; ``stop`` ends the client; a dead server is an error."""
    port = free_port()
    server = subprocess.Popen([*ECHO, "serve", str(port)])
    try:
        await asyncio.to_thread(_wait_listening, port)
        fleet = Fleet(Path("."), ports={"forward_term": port})
        result, stop = Traffic(), asyncio.Event()
        task = asyncio.create_task(_interactive(fleet, result, stop))
        await until(lambda: len(result.rtts) >= 3, timeout=30, what="three echoes")
        stop.set()
        await asyncio.wait_for(task, 30)
        assert result.errors == [] and len(result.sent_at) == len(result.rtts)
        assert all(a > s for s, a in zip(result.sent_at, result.answered_at, strict=True))

        failed, stop = Traffic(), asyncio.Event()
        task = asyncio.create_task(_interactive(fleet, failed, stop))
        await until(lambda: failed.rtts, timeout=30, what="an echo")
        server.kill()
        await asyncio.wait_for(task, 30)  # ends by itself: the session broke
        assert failed.errors and failed.errors[0].startswith("echo session"), failed.errors
    finally:
        server.kill()
        server.wait(10)
