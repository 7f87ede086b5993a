"""The issue's reproducer: ``accessfabric forward --peer --peer-id`` straight at a host.

A host (in process, real TCP+TLS on loopback) serves ``web`` — a TCP echo server — to
one node id only.  ``forward`` run with that node's key (``--key``) gets through; the
same command with a fresh key (what an outsider has) gets its connection reset, and the
host never connects to its target for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import NodeConfig, ServiceConfig
from accessfabric.node.dialing.address import Endpoint, HostPort
from accessfabric.node.runtime import NodeRuntime
from accessfabric.services.host import ServicesComponent

COMMAND = [sys.executable, "-m", "accessfabric"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _through_forward(host: NodeRuntime, key: Path | None, scratch: Path) -> tuple[bytes, str]:
    """Start ``forward`` (as ``key``, or a fresh key; its TMPDIR is ``scratch``), send a
    line through it; the answer (b"" when the connection was reset or closed) and what
    ``forward`` logged.  The ephemeral node's key and certificate must be gone once
    ``forward`` has stopped."""
    port = _free_port()
    endpoint = host.listeners[0].endpoint
    argv = [*COMMAND, "forward", "--listen", f"127.0.0.1:{port}", "--service", "web",
            "--peer", endpoint.url, "--peer-id", host.node_id]  # fmt: skip
    if key is not None:
        argv += ["--key", str(key)]
    scratch.mkdir()
    forward = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    try:
        for _ in range(200):  # until it listens
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("forward did not listen")
        writer.write(b"hello web\n")
        await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(100), 10)
        except ConnectionResetError:
            answer = b""
        finally:
            writer.close()
        await asyncio.sleep(0.2)  # the forward's log line follows the RST
    finally:
        forward.terminate()
        _, stderr = forward.communicate(timeout=10)
    assert list(scratch.iterdir()) == [], "forward left its ephemeral key material behind"
    return answer, stderr.decode()


async def test_forward_from_an_unadmitted_key_is_refused(tmp_path: Path) -> None:
    accepted = 0

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    friend = NodeKey.generate()
    friend.save(tmp_path / "friend.key")
    web = ServiceConfig(
        name="web",
        target=HostPort(host="127.0.0.1", port=target.sockets[0].getsockname()[1]),
        allow=(friend.node_id,),
    )
    config = NodeConfig(
        key_path=tmp_path / "host.key", cert_dir=tmp_path / "host",
        listen=(Endpoint(carrier="tcp", host="127.0.0.1", port=0),), services=(web,),
    )  # fmt: skip
    host = NodeRuntime(config, key=NodeKey.generate(), components=(ServicesComponent(),))
    await host.start()
    try:
        answer, log = await _through_forward(host, None, tmp_path / "fresh")  # a fresh key: refused
        assert answer == b"" and accepted == 0 and host.access.refused >= 1
        assert "forward: stream reset by the far end" in log and "ACCESS_DENIED" in log, log
        answer, log = await _through_forward(host, tmp_path / "friend.key", tmp_path / "friend")
        assert answer == b"hello web\n" and accepted == 1
        assert "ACCESS_DENIED" not in log, log
    finally:
        await host.shutdown()
        target.close()
