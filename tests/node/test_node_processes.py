"""Two real ``accessfabric node run`` processes and ``accessfabric smoke`` against them."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import pytest

from accessfabric.identity.keys import NodeKey
from accessfabric.node.admin.smoke import SmokeExit
from accessfabric.node.dialing.dial import carrier_available
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.node.streams.connection import SessionClosed
from tests.node.fake_servers import (
    free_port,
    mitm_handler,
    plain_http_handler,
    thread_server,
    tls_garbage_handler,
)
from tests.node.harness import NodeProcess, smoke, start_node

RTT_LINE = re.compile(r"^ping [12]: rtt \d+\.\d+ ms$", re.MULTILINE)


def assert_one_line(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


def test_two_nodes_hold_a_session_and_answer_smoke(
    node_pair: tuple[NodeProcess, NodeProcess],
) -> None:
    a, b = node_pair
    b.wait_for("peer session opened", peer=a.node_id)
    a.wait_for("session accepted", peer=b.node_id)
    for node in (a, b):
        result = smoke(node.url, node.node_id)
        assert result.returncode == SmokeExit.OK, result.stderr
        assert len(RTT_LINE.findall(result.stdout)) == 2, result.stdout
        assert re.search(r"^echo: 4096 bytes, round trip \d+\.\d+ ms$", result.stdout, re.M)
        assert f"session up: peer {node.node_id}" in result.stdout


@pytest.mark.skipif(not carrier_available("websocket"), reason="no WebSocket carrier yet")
def test_two_nodes_over_websocket(tmp_path: Path) -> None:
    hub = start_node(tmp_path, "hub", websocket=True)
    try:
        url = f"wss://127.0.0.1:{hub.ws_port}/fabric"
        peer = f'[[peers]]\nnode_id = "{hub.node_id}"\nendpoints = ["{url}"]\nconnect = "always"\n'
        edge = start_node(tmp_path, "edge", peer)
        try:
            edge.wait_for("peer session opened", peer=hub.node_id, endpoint=url)
            hub.wait_for("session accepted", peer=edge.node_id, carrier="websocket")
            result = smoke(url, hub.node_id)
            assert result.returncode == SmokeExit.OK, result.stderr
            assert len(RTT_LINE.findall(result.stdout)) == 2, result.stdout
            wrong = smoke(url, edge.node_id)
            assert wrong.returncode == SmokeExit.IDENTITY_MISMATCH, wrong.stderr
            assert edge.terminate() == 0
        finally:
            edge.kill()
        assert hub.terminate() == 0
    finally:
        hub.kill()


def test_smoke_with_a_key_file(node_pair: tuple[NodeProcess, NodeProcess]) -> None:
    a, _ = node_pair
    result = smoke(a.url, a.node_id, "--key", str(a.directory / "b.key"))
    assert result.returncode == SmokeExit.OK, result.stderr


def test_smoke_wrong_peer_id(node_pair: tuple[NodeProcess, NodeProcess]) -> None:
    a, b = node_pair
    result = smoke(a.url, b.node_id)
    assert result.returncode == SmokeExit.IDENTITY_MISMATCH
    assert_one_line(result.stderr, "identity mismatch", a.node_id, b.node_id)


def test_smoke_closed_port() -> None:
    result = smoke(f"tcp://127.0.0.1:{free_port()}", NodeKey.generate().node_id)
    assert result.returncode == SmokeExit.UNREACHABLE
    assert_one_line(result.stderr, "unreachable", "refused")


def test_smoke_against_a_tls_server_that_is_not_a_node(tmp_path: Path) -> None:
    with thread_server(tls_garbage_handler(tmp_path)) as port:
        result = smoke(f"tcp://127.0.0.1:{port}", NodeKey.generate().node_id)
    assert result.returncode == SmokeExit.PROTOCOL_ERROR, result.stderr
    assert_one_line(result.stderr, "protocol error")


def test_smoke_against_plain_tcp() -> None:
    with thread_server(plain_http_handler) as port:
        result = smoke(f"tcp://127.0.0.1:{port}", NodeKey.generate().node_id)
    assert result.returncode == SmokeExit.TLS_FAILURE, result.stderr
    assert_one_line(result.stderr, "TLS failure")


def test_smoke_through_a_tls_terminating_man_in_the_middle(
    node_pair: tuple[NodeProcess, NodeProcess], tmp_path: Path
) -> None:
    a, _ = node_pair
    with thread_server(mitm_handler(a.port, tmp_path)) as port:
        result = smoke(f"tcp://127.0.0.1:{port}", a.node_id)
    assert result.returncode == SmokeExit.AUTHENTICATION_FAILED, result.stderr
    assert_one_line(result.stderr, "authentication failed")


def test_smoke_usage_errors(tmp_path: Path) -> None:
    node_id = NodeKey.generate().node_id
    mistyped = node_id[:-1] + ("a" if node_id[-1] != "a" else "b")
    cases = [
        (("tcp://127.0.0.1", node_id), "--peer: bad endpoint URL"),
        (("http://127.0.0.1:1", node_id), "unknown scheme 'http'"),
        (("tcp://127.0.0.1:1", mistyped), "--peer-id: node id checksum mismatch"),
        (("tcp://127.0.0.1:1", node_id, "--key", str(tmp_path / "no.key")), "does not exist"),
    ]
    for args, fragment in cases:
        result = smoke(*args)
        assert result.returncode == SmokeExit.USAGE, (args, result.stderr)
        assert_one_line(result.stderr, fragment)


async def test_sigterm_lets_an_open_echo_stream_finish(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    node = await loop.run_in_executor(None, start_node, tmp_path / "c", "c")
    try:
        local = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "client")
        connection = await connect_tcp(
            local, "127.0.0.1", node.port, expected_peer_id=node.node_id, timeout=5
        )
        stream = await connection.open_stream("echo")
        stream.write(b"before " * 100)
        assert await stream.readexactly(700) == b"before " * 100

        node.process.send_signal(signal.SIGTERM)
        await loop.run_in_executor(None, node.wait_for, "node draining")
        await asyncio.sleep(0.2)  # GOAWAY is on its way or here; the stream goes on
        after = bytes(range(256)) * 1024
        stream.write(after)
        await stream.drain()
        assert await stream.readexactly(len(after)) == after
        stream.close()
        assert await stream.read() == b""
        ended = await asyncio.wait_for(connection.wait_closed(), 5)
        assert ended.error_code == 0
        try:  # the listener is closed: no new sessions while draining
            late = await connect_tcp(local, "127.0.0.1", node.port, timeout=2)
        except (OSError, SessionClosed, TimeoutError):
            pass
        else:
            late.abort()
            raise AssertionError("a draining node accepted a new session")
        code = await loop.run_in_executor(None, node.process.wait, 10)
        assert code == 0
        stopped = node.wait_for("node stopped")
        assert stopped["drained"] is True
    finally:
        node.kill()
