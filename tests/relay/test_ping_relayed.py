"""``accessfabric ping NODE`` across a relay (issue 20): a route lease to ``echo:<NODE>``.

An in-process control plane and three in-process nodes over real TCP+TLS on loopback:
``member`` (acme, mobile-edge) holds a session to ``relay`` (provider, entry + relay)
only; ``relay`` holds one to ``host`` (acme, service-host).  ``accessfabric ping host``
(the real command, over member's admin socket) gets a planned route lease for
``echo:<host>``, so the echo crosses the relay: it prints the leased hops and end-to-end
round trips.  Default deny holds: before a grant admits acme to ``echo`` the host refuses
the echo and ping says so; member never dials host.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from accessfabric.control.kernel.authority_key import format_authority_key
from accessfabric.control.server.plane import ControlConfig
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import load_node_config
from accessfabric.node.runtime import NodeRuntime
from tests.conditions import until_returns
from tests.control.api_harness import Running, running_plane

HEARTBEAT = 0.3


def _config(tmp_path: Path, name: str, plane: Running, token: str, extra: str = "") -> Path:
    NodeKey.generate().save(tmp_path / f"{name}.key")
    authority = format_authority_key(plane.authority.public_key)
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'key_path = "{name}.key"\n[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:0"\n'
        f"{extra}"
        f'[control]\nurl = "{plane.url}"\nauthority_key = "{authority}"\n'
        f'token = "{token}"\nheartbeat_interval = {HEARTBEAT}\n'
    )
    return path


def _peer(node: NodeRuntime, name: str) -> str:
    url = node.listeners[0].endpoint.url
    return f'[[peers]]\nnode_id = "{node.node_id}"\nname = "{name}"\nendpoints = ["{url}"]\n'


async def _cli(*args: str) -> tuple[int, str, str]:
    """The real command in a child process (the loop keeps serving the admin socket)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accessfabric", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    return await until_returns(check, timeout)


async def test_ping_crosses_a_relay_on_a_leased_route_to_the_nodes_echo(tmp_path: Path) -> None:
    runtimes: list[NodeRuntime] = []

    async def start(path: Path) -> NodeRuntime:
        runtime = NodeRuntime(load_node_config(path, environ={}))
        runtimes.append(runtime)
        await runtime.start()
        return runtime

    config = ControlConfig(heartbeat_interval=HEARTBEAT)
    async with running_plane(tmp_path, config=config) as plane:
        try:
            host = await start(
                _config(tmp_path, "host", plane, await plane.token("acme", ["service-host"]))
            )
            relay_token = await plane.token("provider", ["entry", "relay"])
            relay = await start(_config(tmp_path, "relay", plane, relay_token, _peer(host, "host")))
            member_config = _config(
                tmp_path, "member", plane, await plane.token("acme", ["mobile-edge"]),
                _peer(relay, "relay"),
            )  # fmt: skip
            member = await start(member_config)
            await member.peers.session(relay.node_id)
            await relay.peers.session(host.node_id)

            async def planned() -> bool:  # both links measured and heartbeated
                states = [plane.plane.heartbeats.get(n.node_id) for n in (member, relay)]
                return all(s is not None and s.facts.peers for s in states)

            await _until(planned)
            ping = ("ping", host.node_id, "--config", str(member_config), "--count", "3")

            # default deny: no grant admits acme to `echo` on the host yet
            code, out, err = await _until(lambda: _refused_or_none(ping))
            assert code == 1, (out, err)
            assert "refused the echo (ACCESS_DENIED)" in err, err

            await plane.grant("acme", ["echo"])

            async def granted() -> bool:
                policy = host.access.policy
                return policy is not None and bool(policy.grants)

            await _until(granted)
            started = time.monotonic()
            code, out, err = await _cli(*ping)
            assert code == 0, err
            lines = out.splitlines()
            assert re.fullmatch(rf"ping {host.node_id} via relays \(route \d+\):", lines[0]), out
            assert lines[1] == (
                f"  {member.node_id} -> {relay.node_id}  tcp_tls "
                f"127.0.0.1:{relay.listeners[0].endpoint.port}"
            ), out
            assert lines[2] == f"  {relay.node_id} -> {host.node_id}  relayed -", out
            for index in (1, 2, 3):
                assert re.fullmatch(rf"ping {index}: rtt \d+\.\d\d ms end to end", lines[2 + index])
            assert re.fullmatch(r"3 round trips, rtt min/avg/max = [\d./]+ ms", lines[-1]), out
            assert time.monotonic() - started < 30

            code, out, err = await _cli(*ping[:-2], "--json")
            assert code == 0, err
            document = json.loads(out)
            assert document["path"] == [member.node_id, relay.node_id, host.node_id]
            assert document["via"] == "relays" and len(document["ping_rtts_ms"]) == 3
            assert document["first_hop_rtt_ms"] > 0
            # the echo crossed the relay: member never held a session to host
            assert member.peers.current(host.node_id) is None
            assert host.access.served >= 2
            # a one-off ping leaves no lease renewed in the background
            assert member.control is not None
            assert not any(s.startswith("echo:") for s, _ in member.control.client.wanted)
        finally:
            for runtime in reversed(runtimes):
                await runtime.shutdown()


async def _refused_or_none(args: tuple[str, ...]) -> tuple[int, str, str] | None:
    """The ping's outcome once the route is leased (before, "no route": try again)."""
    code, out, err = await _cli(*args)
    return None if "no route to" in err else (code, out, err)
