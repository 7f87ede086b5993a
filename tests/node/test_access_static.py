"""Default deny without a control plane: ``[[services]] allow`` / ``[allow]`` static lists.

In-process nodes over real TCP+TLS on loopback.  A node serves a stream only to a node
its allow list names (or to any node, for ``*`` written out); a node with no allow list
for a service serves it to nobody.  Refusals are ``ACCESS_DENIED`` resets, counted in
``status`` and ``/metrics``, and logged at most once per interval per (peer, service).
The same holds for a stream routed through a relay (the opener is the lease's source).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from pathlib import Path

import aiohttp
import pytest

from accessfabric.bench.relay_lab import issue_route
from accessfabric.errors import ErrorCode
from accessfabric.identity.keys import NodeKey
from accessfabric.node.admin.smoke import SmokeExit, classify_failure, run_smoke
from accessfabric.node.admin.status import render
from accessfabric.node.config.node_config import ConfigError, NodeConfig, load_node_config
from accessfabric.node.dialing.address import Endpoint, HostPort
from accessfabric.node.dialing.endpoints import LocalNode, connect_tcp
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import FabricStream, StreamResetError
from accessfabric.wire.registry import TrafficClass
from tests.relay.fabric import build, config, peer

LOOPBACK = Endpoint(carrier="tcp", host="127.0.0.1", port=0)


async def _host(tmp_path: Path, allow: dict[str, tuple[str, ...]]) -> NodeRuntime:
    cfg = NodeConfig(
        key_path=tmp_path / "host.key", cert_dir=tmp_path / "host", listen=(LOOPBACK,),
        allow=allow, metrics_listen=HostPort(host="127.0.0.1", port=0),
        admin_socket=tmp_path / "host.sock",
    )  # fmt: skip
    runtime = NodeRuntime(cfg, key=NodeKey.generate())
    await runtime.start()
    return runtime


async def _echo_as(host: NodeRuntime, key: NodeKey, tmp_path: Path) -> bytes:
    """Open ``echo`` on ``host`` as ``key`` (a direct stream); the bytes echoed."""
    local = LocalNode(key=key, cert_dir=tmp_path / key.node_id[:12])
    port = host.listeners[0].endpoint.port
    connection = await connect_tcp(local, "127.0.0.1", port, expected_peer_id=host.node_id)
    try:
        stream = await connection.open_stream("echo", TrafficClass.INTERACTIVE)
        stream.write(b"ping")
        stream.close()
        return await asyncio.wait_for(stream.readexactly(4), 5)
    finally:
        connection.abort()


async def _refused_code(host: NodeRuntime, key: NodeKey, tmp_path: Path) -> ErrorCode | int:
    with pytest.raises(StreamResetError) as reset:
        await _echo_as(host, key, tmp_path)
    return reset.value.code


async def test_allow_list_serves_the_listed_node_and_refuses_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    friend, stranger = NodeKey.generate(), NodeKey.generate()
    host = await _host(tmp_path, {"echo": (friend.node_id,)})
    try:
        assert await _echo_as(host, friend, tmp_path) == b"ping"
        with caplog.at_level(logging.WARNING, logger="accessfabric.node.serving.stream_router"):
            for _ in range(3):
                assert await _refused_code(host, stranger, tmp_path) == ErrorCode.ACCESS_DENIED
        lines = [r.getMessage() for r in caplog.records if "access denied" in r.getMessage()]
        assert len(lines) == 1, lines  # one line per (peer, service) per interval
        assert f"peer={stranger.node_id}" in lines[0] and "service=echo" in lines[0]
        assert host.dispatcher.active == 0 and host.dispatcher.refused == 0  # never dispatched

        status = host.observe.status()
        assert status["access"]["refused"] == 3 and status["access"]["served"] == 1
        assert re.search(r"^access:\n(.*\n)*  refused +3$", render(status), re.M)
        assert host.data_plane.router.refused == {"access denied": 3}
        async with (
            aiohttp.ClientSession() as client,
            client.get(host.observe.metrics_url) as response,
        ):
            text = await response.text()
        assert 'accessfabric_streams_refused_total{reason="access denied"} 3.0' in text
    finally:
        await host.shutdown()


async def test_no_allow_list_means_nobody_and_star_means_anybody(tmp_path: Path) -> None:
    key = NodeKey.generate()
    closed = await _host(tmp_path / "closed", {})
    try:
        assert await _refused_code(closed, key, tmp_path) == ErrorCode.ACCESS_DENIED
    finally:
        await closed.shutdown()
    nobody = await _host(tmp_path / "nobody", {"echo": ()})  # written out: nobody
    try:
        assert await _refused_code(nobody, key, tmp_path) == ErrorCode.ACCESS_DENIED
    finally:
        await nobody.shutdown()
    anybody = await _host(tmp_path / "anybody", {"echo": ("*",)})
    try:
        assert await _echo_as(anybody, NodeKey.generate(), tmp_path) == b"ping"
    finally:
        await anybody.shutdown()


async def test_a_relayed_stream_is_allowed_by_its_source_not_by_the_relay(
    tmp_path: Path,
) -> None:
    """The destination allows the fabric's source only: its stream through the relay is
    served; another node's stream through the same relay, on a valid lease, is refused."""
    fabric = await build(tmp_path, relays=1)
    relay, dst = fabric.relays[0], fabric.destination
    intruder_key = NodeKey.generate()
    intruder = NodeRuntime(
        config(tmp_path, "intruder", fabric.authority, (peer(relay),)), key=intruder_key
    )
    await intruder.start()
    try:
        for runtime in (intruder, dst):
            for key in (intruder_key, *fabric.keys.values()):
                runtime.sealing_keys.add(key.node_id, key.sealing_public_key_bytes)
        src = fabric.source
        src.routes.set_routes("echo", TrafficClass.INTERACTIVE, fabric.routes([0]))
        served = await src.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        await _round_trip(served)

        route = issue_route(fabric.authority, 77, [intruder.node_id, relay.node_id, dst.node_id])
        intruder.routes.set_routes("echo", TrafficClass.INTERACTIVE, [route])
        refused = await intruder.routes.open_stream("echo", TrafficClass.INTERACTIVE)
        refused.write(b"let me in")
        with pytest.raises(StreamResetError) as reset:
            await asyncio.wait_for(refused.read(), 5)
        assert reset.value.code == ErrorCode.ACCESS_DENIED
        assert dst.data_plane.router.refused == {"access denied": 1}
    finally:
        await intruder.shutdown()
        await fabric.stop()


async def _round_trip(stream: FabricStream) -> None:
    stream.write(b"hello")
    assert await asyncio.wait_for(stream.readexactly(5), 5) == b"hello"
    stream.close()


def _load(tmp_path: Path, text: str) -> NodeConfig:
    path = tmp_path / "node.toml"
    path.write_text('key_path = "node.key"\n' + text)
    return load_node_config(path, environ={})


def test_allow_lists_in_config(tmp_path: Path) -> None:
    a, b = NodeKey.generate().node_id, NodeKey.generate().node_id
    cfg = _load(
        tmp_path,
        f'[[services]]\nname = "web"\ntarget = "127.0.0.1:80"\nallow = ["{a}", "{b.upper()}"]\n'
        '[[services]]\nname = "ssh"\ntarget = "127.0.0.1:22"\n'
        '[allow]\necho = ["*"]\n',
    )
    assert cfg.allow_lists() == {"web": (a, b), "echo": ("*",)}  # ssh: nobody
    assert dataclasses.replace(cfg, allow={}).allow_lists() == {"web": (a, b)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('allow = ["bob"]', "services[0].allow[0]: bad node id prefix"),
        ('allow = ["*", "{a}"]', 'services[0].allow: "*" admits every node'),
        ('allow = ["{a}", "{a}"]', "services[0].allow[1]: this node id is listed twice"),
        ('allow = "*"', "services[0].allow: expected a list, got a string"),
        ("allow = [1]", "services[0].allow[0]: expected a string, got an integer"),
    ],
)
def test_bad_allow_entries_are_clear_config_errors(tmp_path: Path, text: str, message: str) -> None:
    a = NodeKey.generate().node_id
    with pytest.raises(ConfigError) as error:
        _load(
            tmp_path,
            '[[services]]\nname = "web"\ntarget = "127.0.0.1:80"\n' + text.replace("{a}", a),
        )
    assert message in str(error.value)


def test_allow_table_may_not_repeat_a_hosted_service(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"allow\.web: service 'web' is in \[\[services\]\]"):
        _load(
            tmp_path,
            '[[services]]\nname = "web"\ntarget = "127.0.0.1:80"\n[allow]\nweb = ["*"]\n',
        )


async def test_smoke_says_access_denied(tmp_path: Path) -> None:
    """``smoke`` from a key the node does not admit: exit 8 and one clear line."""
    host = await _host(tmp_path, {"echo": (NodeKey.generate().node_id,)})
    try:
        endpoint = host.listeners[0].endpoint
        with pytest.raises(StreamResetError) as refused:
            await run_smoke(endpoint, host.node_id, NodeKey.generate(), timeout=5)
        code, message = classify_failure(refused.value, endpoint)
        assert code == SmokeExit.ACCESS_DENIED == 8
        assert message.startswith(f"access denied at {endpoint.url}: ") and "echo" in message
    finally:
        await host.shutdown()
