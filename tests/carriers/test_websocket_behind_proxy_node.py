"""``[[listen]] behind_proxy = true`` on a real ``node run``, through nginx terminating TLS.

nginx (Debian's nginx-light, the module fixture of test_websocket.py) holds its own
CA-signed certificate and proxies ``/fabric`` as plain ws to the node's listener; the
dialer uses proxy mode (``proxy_tls`` verifying nginx, the node id pinned) and runs a
ping and an echo round trip on the node's built-in echo service.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import ConfigError, load_node_config
from accessfabric.node.dialing.endpoints import LocalNode, connect_ws
from tests.carriers.test_websocket import LOOPBACK, Nginx, nginx
from tests.node.harness import start_node

__all__ = ["nginx"]  # the module fixture, used by name below


async def test_a_behind_proxy_node_listener_works_through_nginx(
    nginx: Nginx, tmp_path: Path
) -> None:
    loop = asyncio.get_running_loop()
    listener = (
        f'[[listen]]\ncarrier = "websocket"\naddress = "{LOOPBACK}:{nginx.unbound_upstream}"\n'
        "behind_proxy = true\ntls = false\n"
    )
    node = await loop.run_in_executor(None, start_node, tmp_path, "n", listener)
    try:
        await loop.run_in_executor(None, node.wait_for, "listening", 15.0)
        local = LocalNode(key=NodeKey.generate(), cert_dir=tmp_path / "dialer")
        connection = await connect_ws(
            local, f"wss://{LOOPBACK}:{nginx.proxy_port}/fabric",
            expected_peer_id=node.node_id, proxy_tls=nginx.proxy_tls(), timeout=10,
        )  # fmt: skip
        assert (await connection.ready()).peer_node_id == node.node_id
        assert await connection.ping() >= 0
        stream = await connection.open_stream("echo")
        stream.write(b"through nginx")
        assert await stream.readexactly(13) == b"through nginx"
        stream.close()
        accepted = await loop.run_in_executor(None, node.wait_for, "session accepted")
        assert accepted["carrier"] == "websocket"
        connection.abort()
        assert await loop.run_in_executor(None, node.terminate) == 0
    finally:
        node.kill()


def test_behind_proxy_config_errors(tmp_path: Path) -> None:
    cases = [
        ('carrier = "tcp"\naddress = "127.0.0.1:0"\nbehind_proxy = true\n',
         "listen[0].behind_proxy: only a websocket listener"),
        ('carrier = "websocket"\naddress = "127.0.0.1:0"\ntls = false\n',
         "listen[0].tls: false only with behind_proxy = true"),
        ('carrier = "websocket"\naddress = "127.0.0.1:0"\nbehind_proxy = "yes"\n',
         "listen[0].behind_proxy"),
    ]  # fmt: skip
    for table, message in cases:
        path = tmp_path / "n.toml"
        path.write_text(f'key_path = "n.key"\n[[listen]]\n{table}')
        try:
            load_node_config(path)
        except ConfigError as error:
            assert message in str(error), str(error)
        else:
            raise AssertionError(f"accepted: {table}")
    path.write_text(
        'key_path = "n.key"\n[[listen]]\ncarrier = "websocket"\naddress = "127.0.0.1:0"\n'
        "behind_proxy = true\n"
    )
    (endpoint,) = load_node_config(path).listen
    assert endpoint.behind_proxy and endpoint.tls
