"""What a node advertises to the control plane is what its process serves (issue 13).

An in-process control plane (``tests/control/api_harness.py``) and in-process nodes:

* a host whose process runs the ``vpn`` handler (as ``vpn up --exit`` registers it in
  the dispatcher) and its ``[[services]]`` ``web``: both are registered, heartbeated and
  leased, and a source gets a route lease for ``vpn`` and reaches the handler over it;
* a host whose config lists ``web`` but whose process runs only the ``vpn`` handler
  (what ``vpn up`` did before it ran the services component): ``web`` is not advertised.

The VPN itself (TUN devices, namespaces) is tested with real ``vpn up`` processes in
``tests/services/test_vpn_control_netns.py``; here the ``vpn`` handler is an echo.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from accessfabric.control.kernel.authority_key import format_authority_key
from accessfabric.control.server.plane import ControlConfig
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import load_node_config
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import FabricStream
from accessfabric.services.host import ServicesComponent
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until_returns
from tests.control.api_harness import Running, running_plane
from tests.echo_server import echo_server


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    return await until_returns(check, timeout)


class VpnHandler:
    """A node component that serves ``vpn`` the way ``VpnComponent(exit_node=True)`` does:
    a handler in the dispatcher, nothing in the config."""

    def __init__(self) -> None:
        self.streams = 0

    async def start(self, runtime: NodeRuntime) -> None:
        runtime.dispatcher.register("vpn", self.handle)

    async def handle(self, stream: FabricStream) -> None:
        self.streams += 1
        while data := await stream.read(65536):
            stream.write(data)
            await stream.drain()
        stream.close()

    async def close(self) -> None:
        return None


def _config(tmp_path: Path, name: str, plane: Running, token: str, extra: str = "") -> Path:
    NodeKey.generate().save(tmp_path / f"{name}.key")
    authority = format_authority_key(plane.authority.public_key)
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'key_path = "{name}.key"\n[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:0"\n'
        f"{extra}"
        f'[control]\nurl = "{plane.url}"\nauthority_key = "{authority}"\n'
        f'token = "{token}"\nheartbeat_interval = 0.3\n'
    )
    return path


async def _registered(plane: Running, node_id: str) -> set[str]:
    """The services the control plane lists ``node_id`` as a replica of."""
    _, body = await plane.admin("GET", "/v1/admin/services")
    return {
        service["service"]
        for service in body["services"]
        if any(r["node_id"] == node_id for r in service["replicas"])
    }


def _heartbeated(plane: Running, node_id: str) -> set[str]:
    state = plane.plane.heartbeats.get(node_id)
    return set() if state is None else {s.name for s in state.facts.services}


async def test_the_vpn_exit_and_its_services_are_registered_and_leased(tmp_path: Path) -> None:
    server = await echo_server()
    web = f'[[services]]\nname = "web"\ntarget = "127.0.0.1:{server.sockets[0].getsockname()[1]}"\n'
    async with running_plane(tmp_path, config=ControlConfig(heartbeat_interval=0.3)) as plane:
        host_token = await plane.token("acme", ["entry", "exit", "service-host"])
        source_token = await plane.token("acme", ["mobile-edge"])
        await plane.grant("acme", ["vpn"], roles=("mobile-edge",))  # default deny
        vpn = VpnHandler()
        host = NodeRuntime(
            load_node_config(_config(tmp_path, "host", plane, host_token, web)),
            components=(vpn, ServicesComponent()),
        )
        source = NodeRuntime(load_node_config(_config(tmp_path, "source", plane, source_token)))
        await host.start()
        await source.start()
        try:
            served = set(host.dispatcher.services) - {"echo"}  # echo: built in, never advertised
            assert served == {"vpn", "web"}

            async def advertised() -> bool:
                registered = await _registered(plane, host.node_id)
                return registered == served and _heartbeated(plane, host.node_id) == served

            await _until(advertised)

            # a client gets a route lease for `vpn` and its stream reaches the handler
            async def opened() -> Any:
                return await source.routes.open_stream("vpn", TrafficClass.INTERACTIVE)

            stream = await _until(opened, 20.0)
            stream.write(b"a packet batch")
            assert await asyncio.wait_for(stream.readexactly(14), 5) == b"a packet batch"
            stream.close()
            assert vpn.streams == 1
            assert source.control is not None
            assert source.control.client.cached_route_leases("vpn", TrafficClass.INTERACTIVE)
            assert host.control is not None
            leased = {row["service"] for row in host.control.lease_rows()}
            assert leased == served
            assert host.observe.status()["control"]["registered"] == "vpn, web"
        finally:
            await source.shutdown()
            await host.shutdown()
            server.close()


async def test_a_configured_service_the_process_does_not_serve_is_not_advertised(
    tmp_path: Path,
) -> None:
    web = '[[services]]\nname = "web"\ntarget = "127.0.0.1:9"\n'
    async with running_plane(tmp_path, config=ControlConfig(heartbeat_interval=0.3)) as plane:
        token = await plane.token("acme", ["entry", "exit", "service-host"])
        host = NodeRuntime(
            load_node_config(_config(tmp_path, "host", plane, token, web)),
            components=(VpnHandler(),),  # no services component: `web` has no handler
        )
        await host.start()
        try:
            assert set(host.dispatcher.services) - {"echo"} == {"vpn"}

            async def advertised() -> bool:
                return await _registered(plane, host.node_id) == {"vpn"} and _heartbeated(
                    plane, host.node_id
                ) == {"vpn"}

            await _until(advertised)
        finally:
            await host.shutdown()


def test_vpn_up_exit_refuses_a_configured_vpn_service(tmp_path: Path) -> None:
    """The old workaround (a dummy ``[[services]] vpn``) would shadow the exit: one line, 2."""
    import subprocess
    import sys

    NodeKey.generate().save(tmp_path / "exit.key")
    config = tmp_path / "exit.toml"
    config.write_text('key_path = "exit.key"\n[[services]]\nname = "vpn"\ntarget = "127.0.0.1:9"\n')
    done = subprocess.run(
        [sys.executable, "-m", "accessfabric", "vpn", "up", "--exit", "--config", str(config)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "'vpn' is served by `vpn up --exit` itself" in done.stderr
