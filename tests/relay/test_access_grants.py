"""Default deny with a control plane: grants signed by the authority, enforced by the host.

An in-process control plane (``tests/control/api_harness.py``) and in-process nodes over
real TCP+TLS on loopback:

* ``host`` (tenant acme, service-host) serves ``web`` (a TCP echo server);
* ``relay`` (tenant provider) is peered with the host;
* ``member`` (acme, mobile-edge): admitted by a grant to acme for ``web``;
* ``outsider`` (tenant other, enrolled) and ``stranger`` (a key never enrolled).

Each opens ``web`` directly (a one-hop stream, no lease) and through the relay (a route
lease signed by the same authority, ``[opener, relay, host]``).  Only ``member`` is
served; the others are reset with ``ACCESS_DENIED``.  Revoking the grant reaches the host
with its next heartbeat: then ``member`` is refused too, directly and via the relay.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from accessfabric.bench.relay_lab import issue_route
from accessfabric.control.kernel.authority_key import format_authority_key
from accessfabric.control.server.plane import ControlConfig
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import load_node_config
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import FabricStream, StreamResetError
from accessfabric.services.host import ServicesComponent
from accessfabric.wire.registry import TrafficClass
from tests.control.api_harness import Running, running_plane
from tests.echo_server import echo_server

HEARTBEAT = 0.3
CLASS = TrafficClass.RELIABLE


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def _config(tmp_path: Path, name: str, plane: Running | None, token: str | None,
            extra: str = "", port: int = 0) -> Path:  # fmt: skip
    NodeKey.generate().save(tmp_path / f"{name}.key")
    text = f'key_path = "{name}.key"\n[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:{port}"\n'
    text += extra
    if plane is not None and token is not None:
        authority = format_authority_key(plane.authority.public_key)
        text += (
            f'[control]\nurl = "{plane.url}"\nauthority_key = "{authority}"\n'
            f'token = "{token}"\nheartbeat_interval = {HEARTBEAT}\n'
        )
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _peer_table(node: NodeRuntime) -> str:
    url = node.listeners[0].endpoint.url
    return f'[[peers]]\nnode_id = "{node.node_id}"\nendpoints = ["{url}"]\n'


async def _start(runtimes: list[NodeRuntime], config: Path, host: bool = False) -> NodeRuntime:
    """Start a node on ``config`` (a service host with ``host``), listed in ``runtimes``."""
    runtime = NodeRuntime(load_node_config(config, environ={}),
                          components=(ServicesComponent(),) if host else ())  # fmt: skip
    runtimes.append(runtime)
    await runtime.start()
    return runtime


def _enrolled_and_granted(member: NodeRuntime, host: NodeRuntime) -> Callable[[], Awaitable[bool]]:
    """The member holds its record and the host a policy with grants."""

    async def ready() -> bool:
        assert member.control is not None
        return member.control.client.record() is not None and bool(
            host.access.policy and host.access.policy.grants
        )

    return ready


async def _outcome(stream: FabricStream) -> str:
    """ "served" when ``web`` echoes, else the name of the reset code."""
    stream.write(b"ping")
    try:
        echoed = await asyncio.wait_for(stream.readexactly(4), 10)
    except StreamResetError as reset:
        return getattr(reset.code, "name", str(reset.code))
    finally:
        stream.close()
    return "served" if echoed == b"ping" else "garbled"


class World:
    def __init__(self, plane: Running, host: NodeRuntime, relay: NodeRuntime) -> None:
        self.plane = plane
        self.host = host
        self.relay = relay
        self.route_ids = iter(range(100, 200))

    async def direct(self, opener: NodeRuntime) -> str:
        connection = await opener.peers.session(self.host.node_id)
        return await _outcome(await connection.open_stream("web", CLASS))

    async def relayed(self, opener: NodeRuntime) -> str:
        hops = [opener.node_id, self.relay.node_id, self.host.node_id]
        route = issue_route(
            self.plane.authority, next(self.route_ids), hops, services=("web",), tenant="acme"
        )
        opener.routes.source = None  # this lease, not one the planner would choose
        opener.routes.set_routes("web", CLASS, [route])
        return await _outcome(await opener.routes.open_stream("web", CLASS))

    async def both(self, opener: NodeRuntime) -> tuple[str, str]:
        return await self.direct(opener), await self.relayed(opener)


async def test_grants_admit_their_tenant_only_and_revocation_takes_one_heartbeat(
    tmp_path: Path,
) -> None:
    echo = await echo_server()
    port = echo.sockets[0].getsockname()[1]
    config = ControlConfig(heartbeat_interval=HEARTBEAT)
    runtimes: list[NodeRuntime] = []

    async def start(name: str, token: str | None, extra: str = "", plane: Any = None,
                    host: bool = False) -> NodeRuntime:  # fmt: skip
        return await _start(runtimes, _config(tmp_path, name, plane, token, extra), host=host)

    async with running_plane(tmp_path, config=config) as plane:
        try:
            grant = await plane.grant("acme", ["web"], roles=("mobile-edge",))
            service = f'[[services]]\nname = "web"\ntarget = "127.0.0.1:{port}"\n'
            host = await start(
                "host", await plane.token("acme", ["service-host"]), service, plane, host=True
            )
            relay = await start(
                "relay", await plane.token("provider", ["relay"]), _peer_table(host), plane
            )
            near = _peer_table(host) + _peer_table(relay)
            member = await start("member", await plane.token("acme", ["mobile-edge"]), near, plane)
            outsider = await start(
                "outsider", await plane.token("other", ["mobile-edge"]), near, plane
            )
            stranger = await start("stranger", None, near)  # never enrolled
            for runtime in runtimes:  # sealing keys, as the directory would give them
                for other in runtimes:
                    runtime.sealing_keys.add(other.node_id, other.key.sealing_public_key_bytes)
            world = World(plane, host, relay)

            async def enrolled_and_granted() -> bool:
                records = [r.control.client.record() for r in (member, outsider) if r.control]
                policy = host.access.policy
                return all(records) and policy is not None and len(policy.grants) == 1

            await _until(enrolled_and_granted)

            assert await world.both(member) == ("served", "served")
            assert await world.both(outsider) == ("ACCESS_DENIED", "ACCESS_DENIED")
            assert await world.both(stranger) == ("ACCESS_DENIED", "ACCESS_DENIED")
            refused = host.observe.status()["access"]["refused"]
            assert refused == 4 and host.data_plane.router.refused == {"access denied": 4}

            # revoke: the host's first heartbeat after it brings a policy without it
            state = plane.plane.heartbeats.get(host.node_id)
            assert state is not None
            before = state.count
            status, body = await plane.admin("DELETE", f"/v1/admin/grants/{grant}")
            assert status == 200, body
            assert host.access.policy is not None and len(host.access.policy.grants) == 1

            async def revoked() -> bool:
                policy = host.access.policy
                return policy is not None and not policy.grants

            await _until(revoked, 10.0)
            after = plane.plane.heartbeats.get(host.node_id)
            assert after is not None
            # at most one heartbeat was already on its way when the grant was revoked
            assert after.count - before <= 2, (before, after.count)
            assert await world.both(member) == ("ACCESS_DENIED", "ACCESS_DENIED")
        finally:
            for runtime in reversed(runtimes):
                await runtime.shutdown()
            echo.close()


async def test_cached_grants_hold_while_the_control_plane_is_down_until_they_expire(
    tmp_path: Path,
) -> None:
    """A host keeps enforcing the policy it holds (the member is served) while the control
    plane is unreachable, also after a restart (from its state directory); once the
    policy's time is up it serves nobody."""
    echo = await echo_server()
    port = echo.sockets[0].getsockname()[1]
    config = ControlConfig(heartbeat_interval=HEARTBEAT, access_policy_ttl=60.0)
    runtimes: list[NodeRuntime] = []
    async with running_plane(tmp_path, config=config) as plane:
        try:
            await plane.grant("acme", ["web"])
            service = f'[[services]]\nname = "web"\ntarget = "127.0.0.1:{port}"\n'
            with socket.socket() as probe:  # a fixed port: the host restarts on it
                probe.bind(("127.0.0.1", 0))
                host_port = probe.getsockname()[1]
            host_cfg = _config(
                tmp_path, "host", plane, await plane.token("acme", ["service-host"]), service,
                host_port,
            )  # fmt: skip
            host = await _start(runtimes, host_cfg, host=True)
            member_cfg = _config(
                tmp_path, "member", plane, await plane.token("acme", ["mobile-edge"]),
                _peer_table(host),
            )  # fmt: skip
            member = await _start(runtimes, member_cfg)

            await _until(_enrolled_and_granted(member, host))
            await plane.server.stop()
            assert host.control is not None

            async def unreachable() -> bool:
                assert host.control is not None
                return host.control.status()["state"] == "unreachable"

            await _until(unreachable, 10.0)
            world = World(plane, host, host)
            assert await world.direct(member) == "served"

            await host.shutdown()  # restarted while the control plane is still down
            host = await _start(runtimes, host_cfg, host=True)
            assert host.access.policy is not None and host.access.policy.grants  # from disk
            world = World(plane, host, host)
            assert await world.direct(member) == "served"
            host.access.clock = lambda: time.time() + 120  # past the policy's 60 s
            assert await world.direct(member) == "ACCESS_DENIED"
            assert host.observe.status()["access"]["refused"] == 1
        finally:
            for runtime in reversed(runtimes):
                await runtime.shutdown()
            echo.close()


async def test_a_revoked_role_loses_access_at_the_hosts_next_heartbeat(tmp_path: Path) -> None:
    """``revoke-role`` re-signs the node's record; the host, whose session to the node holds
    the old record (from HELLO), refuses it once its next heartbeat brings the policy's
    record floor, not when the old record expires (a week)."""
    echo = await echo_server()
    port = echo.sockets[0].getsockname()[1]
    config = ControlConfig(heartbeat_interval=HEARTBEAT)
    runtimes: list[NodeRuntime] = []
    async with running_plane(tmp_path, config=config) as plane:
        try:
            await plane.grant("acme", ["web"], roles=("mobile-edge",))
            service = f'[[services]]\nname = "web"\ntarget = "127.0.0.1:{port}"\n'
            host_cfg = _config(
                tmp_path, "host", plane, await plane.token("acme", ["service-host"]), service
            )
            host = await _start(runtimes, host_cfg, host=True)
            member_cfg = _config(
                tmp_path, "member", plane,
                await plane.token("acme", ["mobile-edge", "observer"]), _peer_table(host),
            )  # fmt: skip
            member = await _start(runtimes, member_cfg)

            await _until(_enrolled_and_granted(member, host))
            world = World(plane, host, host)
            assert await world.direct(member) == "served"
            session = await member.peers.session(host.node_id)
            state = plane.plane.heartbeats.get(host.node_id)
            assert state is not None
            before = state.count
            status, body = await plane.admin(
                "POST", f"/v1/admin/nodes/{member.node_id}/revoke-role", {"role": "mobile-edge"}
            )
            assert status == 200, body

            async def floored() -> bool:
                policy = host.access.policy
                return policy is not None and policy.floor_of(member.node_id) > 0

            await _until(floored, 10.0)
            after = plane.plane.heartbeats.get(host.node_id)
            assert after is not None
            assert after.count - before <= 2, (before, after.count)  # its next heartbeat
            assert await member.peers.session(host.node_id) is session  # the same session
            assert await world.direct(member) == "ACCESS_DENIED"
        finally:
            for runtime in reversed(runtimes):
                await runtime.shutdown()
            echo.close()
