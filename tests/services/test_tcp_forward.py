"""TCP forwarding over real fabric sessions on loopback: bytes, FIN and RST both ways,
curl against a Python HTTP server, metrics and status."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from accessfabric.node.admin.status import fetch_status, render
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until
from tests.services.fabric_pair import fabric_pair


async def _target(handler: object) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    return server, server.sockets[0].getsockname()[1]


async def test_bytes_and_half_close_both_ways(tmp_path: Path) -> None:
    """Client FIN reaches the target as EOF while the target still answers, then its FIN."""
    payload = os.urandom(3 << 20)

    async def target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's FIN
        writer.write(hashlib.sha256(data).digest() + data[:1000])
        await writer.drain()
        writer.close()

    server, port = await _target(target)
    async with fabric_pair(tmp_path, {"files": (port, TrafficClass.BULK)}) as pair:
        reader, writer = await asyncio.open_connection("127.0.0.1", pair.forward_port())
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 20)
        assert answer == hashlib.sha256(payload).digest() + payload[:1000]
        writer.close()
        hosted = pair.host.components[0]
        await until(
            lambda: hosted.hosted["files"][1].bytes_down == len(payload),  # type: ignore[attr-defined]
            what="the host counted every byte",
        )
    server.close()


async def test_target_half_close_first(tmp_path: Path) -> None:
    """The target ends its side first; the client still sends and the target still reads."""
    late: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"banner\n")
        writer.write_eof()
        late.set_result(await reader.read())
        writer.close()

    server, port = await _target(target)
    async with fabric_pair(tmp_path, {"svc": (port, TrafficClass.RELIABLE)}) as pair:
        reader, writer = await asyncio.open_connection("127.0.0.1", pair.forward_port())
        assert await asyncio.wait_for(reader.read(), 10) == b"banner\n"  # EOF after it
        writer.write(b"late data")
        writer.write_eof()
        assert await asyncio.wait_for(late, 10) == b"late data"  # read to the client's FIN
        assert pair.host.components[0].hosted["svc"][1].resets == 0  # type: ignore[attr-defined]
        writer.close()
    server.close()


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_reset_from_target_reaches_client(tmp_path: Path) -> None:
    async def target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        _rst(writer)

    server, port = await _target(target)
    async with fabric_pair(tmp_path, {"svc": (port, TrafficClass.INTERACTIVE)}) as pair:
        reader, writer = await asyncio.open_connection("127.0.0.1", pair.forward_port())
        writer.write(b"hello")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 10)
        writer.close()
    server.close()


async def test_reset_from_client_reaches_target(tmp_path: Path) -> None:
    seen: asyncio.Future[type[BaseException] | bytes] = asyncio.get_running_loop().create_future()
    greeted = asyncio.Event()

    async def target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(5)
            greeted.set()
            data = await reader.read()
            seen.set_result(data)
        except ConnectionResetError as error:
            seen.set_result(type(error))
        writer.close()

    server, port = await _target(target)
    async with fabric_pair(tmp_path, {"svc": (port, TrafficClass.INTERACTIVE)}) as pair:
        _, writer = await asyncio.open_connection("127.0.0.1", pair.forward_port())
        writer.write(b"hello")
        await writer.drain()
        await asyncio.wait_for(greeted.wait(), 10)  # the stream is open end to end
        _rst(writer)
        assert await asyncio.wait_for(seen, 10) is ConnectionResetError
    server.close()


async def test_unreachable_target_resets_client(tmp_path: Path) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]
    probe.close()
    async with fabric_pair(tmp_path, {"gone": (dead_port, TrafficClass.RELIABLE)}) as pair:
        reader, writer = await asyncio.open_connection("127.0.0.1", pair.forward_port())
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 10)
        writer.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_curl_through_forward_metrics_and_status(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    body = os.urandom(2 << 20)
    (site / "blob.bin").write_bytes(body)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    http_port = probe.getsockname()[1]
    probe.close()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(http_port), "--bind", "127.0.0.1"],
        cwd=site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", http_port), 0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        async with fabric_pair(
            tmp_path, {"http": (http_port, TrafficClass.RELIABLE)}, metrics=True
        ) as pair:
            out = tmp_path / "got.bin"
            url = f"http://127.0.0.1:{pair.forward_port()}/blob.bin"
            curl = await asyncio.create_subprocess_exec(
                "curl", "-sS", "--fail", "-o", str(out), url, stderr=asyncio.subprocess.PIPE
            )
            _, err = await curl.communicate()
            assert curl.returncode == 0, err
            assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(body).digest()

            metrics_url = pair.edge.observe.metrics_url
            curl = await asyncio.create_subprocess_exec(
                "curl", "-sS", "--fail", metrics_url, stdout=asyncio.subprocess.PIPE
            )
            text = (await curl.communicate())[0].decode()
            assert 'accessfabric_sessions_opened_total{carrier="tcp_tls"} 1.0' in text
            prefix = 'accessfabric_stream_bytes_total{direction="in",traffic_class="reliable"}'
            line = next(x for x in text.splitlines() if x.startswith(prefix))
            assert float(line.split()[-1]) >= len(body)

            status = await fetch_status(tmp_path / "edge.sock")
            assert status["forwards"][0]["service"] == "http"
            assert status["forwards"][0]["bytes_down"] >= len(body)
            assert status["sessions"][0]["peer"] == pair.host.node_id
            host_status = await fetch_status(tmp_path / "host.sock")
            assert host_status["services"][0]["service"] == "http"
            assert "services:" in render(host_status)
            assert oct((tmp_path / "edge.sock").stat().st_mode & 0o777) == "0o600"
    finally:
        server.terminate()
        server.wait()
