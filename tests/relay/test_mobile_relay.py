"""Mobile relay opt-in, enforced: a fake power-supply tree drives a relaying mobile-edge node.

An in-process control plane and in-process nodes on loopback TCP:

* ``host`` (service-host) serves ``web`` (a TCP echo server);
* ``mob`` (mobile-edge + entry, ``[device] relay_opt_in``) reads its battery from a fake
  ``/sys/class/power_supply`` tree in ``tmp_path`` and keeps a session to ``host``;
* ``metered`` (mobile-edge + entry, opted in, charging, but ``metered = true``);
* ``phone`` (mobile-edge) learns the entries from its directory and opens streams to ``web``;
* ``fixed`` (entry) joins later: the alternate once ``mob`` stops relaying.

Draining ``mob``'s battery below its floor makes it refuse new relayed streams with the
reason (its open stream keeps working: a drain), its heartbeat says so, and the planner
routes around it; charging brings it back.  ``metered`` is never a hop and refuses a
relayed open with its reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from accessfabric.control.kernel.authority_key import format_authority_key
from accessfabric.control.server.plane import ControlConfig
from accessfabric.errors import ErrorCode
from accessfabric.identity.keys import NodeKey
from accessfabric.node.admin.status import render
from accessfabric.node.config.node_config import load_node_config
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import StreamResetError
from accessfabric.services.host import ServicesComponent
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until_returns
from tests.control.api_harness import Running, running_plane
from tests.echo_server import echo_server
from tests.node.test_host_facts import write_supply

WEB = "web"
CLASS = TrafficClass.RELIABLE


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    return await until_returns(check, timeout)


async def echo(stream: Any, payload: bytes) -> None:
    stream.write(payload)
    assert await asyncio.wait_for(stream.readexactly(len(payload)), 5) == payload


async def node(
    tmp_path: Path, plane: Running, name: str, roles: list[str], extra: str = ""
) -> NodeRuntime:
    token = await plane.token("acme", roles)
    NodeKey.generate().save(tmp_path / f"{name}.key")
    authority = format_authority_key(plane.authority.public_key)
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'key_path = "{name}.key"\nroles = {roles!r}\ndrain_timeout = 1\n'
        '[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:0"\n'
        f'[control]\nurl = "{plane.url}"\nauthority_key = "{authority}"\n'
        f'token = "{token}"\nheartbeat_interval = 0.3\n'
        "[pressure]\ninterval = 0.2\n"
        f"{extra}"
    )
    components = (ServicesComponent(),) if "service-host" in roles else ()
    runtime = NodeRuntime(load_node_config(path), components=components)
    await runtime.start()
    return runtime


def keeps_up(host: NodeRuntime) -> str:
    url = host.listeners[0].endpoint.url
    return f'[[peers]]\nnode_id = "{host.node_id}"\nendpoints = ["{url}"]\nconnect = "always"\n'


def hop_sets(routes: list[Any]) -> list[tuple[str, ...]]:
    return [tuple(r.lease.hops[1:-1]) for r in routes]


async def test_battery_drain_stops_relaying_and_charging_brings_it_back(tmp_path: Path) -> None:
    power = tmp_path / "power"
    write_supply(power, "BAT0", type="Battery", capacity="80", status="Discharging")
    write_supply(power, "AC", type="Mains", online="0")
    charged = tmp_path / "charged"
    write_supply(charged, "BAT0", type="Battery", capacity="90", status="Charging")
    server = await echo_server()
    port = server.sockets[0].getsockname()[1]
    started: list[NodeRuntime] = []
    async with running_plane(tmp_path, config=ControlConfig(heartbeat_interval=0.5)) as plane:
        try:
            await plane.grant("acme", [WEB])  # default deny: the tenant's nodes may reach it
            host = await node(
                tmp_path, plane, "host", ["service-host"],
                f'[[services]]\nname = "{WEB}"\ntarget = "127.0.0.1:{port}"\n',
            )  # fmt: skip
            started.append(host)
            device = (
                f'[device]\npower_supply = "{power}"\nnetwork_type = "cellular"\n'
                "relay_opt_in = true\nmin_relay_battery_percent = 30\n"
            )
            mob = await node(tmp_path, plane, "mob", ["mobile-edge", "entry"],
                             keeps_up(host) + device)  # fmt: skip
            started.append(mob)
            metered_device = (
                f'[device]\npower_supply = "{charged}"\nnetwork_type = "cellular"\n'
                "metered = true\nrelay_opt_in = true\n"
            )
            metered = await node(tmp_path, plane, "metered", ["mobile-edge", "entry"],
                                 keeps_up(host) + metered_device)  # fmt: skip
            started.append(metered)
            phone = await node(tmp_path, plane, "phone", ["mobile-edge"])
            started.append(phone)
            assert phone.control is not None
            heartbeats = plane.plane.heartbeats

            # 1. mob relays: the phone's route to web goes through it
            async def opened() -> Any:
                return await phone.routes.open_stream(WEB, CLASS)

            first = await until(opened, 30.0)
            await echo(first, b"through the phone-friendly relay")
            assert mob.data_plane.relay.active >= 1
            via_mob = [
                r for r in phone.control.client.cached_route_leases(WEB, CLASS)
                if r.lease.hops[1] == mob.node_id
            ]  # fmt: skip
            assert via_mob
            assert all(metered.node_id not in hops for hops in hop_sets(
                phone.control.client.cached_route_leases(WEB, CLASS)))  # fmt: skip
            facts = heartbeats.get(mob.node_id)
            assert facts is not None
            assert facts.facts.battery_percent == 80.0 and facts.facts.relay_opt_in
            assert facts.facts.network_type == "cellular" and not facts.facts.charging
            assert facts.facts.memory > 0.0  # measured: /proc/meminfo
            metered_facts = heartbeats.get(metered.node_id)
            assert metered_facts is not None and metered_facts.facts.metered
            assert metered_facts.facts.charging and not metered_facts.facts.relay_opt_in

            async def route_cache_reported() -> bool:  # the next heartbeat carries it
                state = heartbeats.get(phone.node_id)
                return state is not None and state.facts.route_cache_version >= 1

            await until(route_cache_reported, 5.0)
            text = render(mob.observe.status())
            assert "host:" in text and "battery_percent" in text and "allowed" in text

            # the metered node refuses a relayed open with its reason, even on a valid
            # lease naming it (as one issued before it went metered would)
            through_metered = dataclasses.replace(
                via_mob[0].lease, lease_id=os.urandom(16),
                hops=(phone.node_id, metered.node_id, host.node_id),
            )  # fmt: skip
            to_metered = await phone.peers.session(metered.node_id)
            refused = await to_metered.open_stream(
                WEB, CLASS, through_metered.route_id,
                route_lease=plane.authority.issue(through_metered),
            )  # fmt: skip
            with pytest.raises(StreamResetError) as reset:
                await asyncio.wait_for(refused.read(), 5)
            assert reset.value.code == ErrorCode.REFUSED_STREAM
            assert metered.data_plane.router.refused.get("mobile relay paused") == 1

            # 2. an alternate joins
            fixed = await node(tmp_path, plane, "fixed", ["entry"], keeps_up(host))
            started.append(fixed)

            async def fixed_measured() -> bool:
                state = heartbeats.get(fixed.node_id)
                return state is not None and any(p.node_id == host.node_id
                                                 for p in state.facts.peers)  # fmt: skip

            await until(fixed_measured)

            # 3. the battery drains below the floor
            write_supply(power, "BAT0", type="Battery", capacity="12", status="Discharging")

            async def paused() -> bool:
                state = heartbeats.get(mob.node_id)
                return (
                    mob.host.relay_refusal() is not None
                    and state is not None
                    and state.facts.battery_percent == 12.0
                    and not state.facts.relay_opt_in
                )

            await until(paused, 10.0)
            assert "battery 12 % below 30 %" in str(mob.host.relay_refusal())
            await echo(first, b"the open relayed stream drains, it is not cut")

            # a new relayed open through mob (its old lease) is refused with the reason
            to_mob = await phone.peers.session(mob.node_id)
            late = await to_mob.open_stream(
                WEB, CLASS, via_mob[0].lease.route_id, route_lease=via_mob[0].blob
            )
            with pytest.raises(StreamResetError) as reset:
                await asyncio.wait_for(late.read(), 5)
            assert reset.value.code == ErrorCode.REFUSED_STREAM
            assert mob.data_plane.router.refused.get("mobile relay paused", 0) >= 1

            # the planner routes around it: fresh leases avoid mob, a new stream flows
            async def around() -> bool:
                assert phone.control is not None
                routes = await phone.control.client.route_leases(WEB, CLASS)
                hops = hop_sets(routes)
                return (
                    bool(hops)
                    and all(mob.node_id not in h for h in hops)
                    and any(fixed.node_id in h for h in hops)
                )

            await until(around)
            second = await until(opened)
            await echo(second, b"around the drained phone")
            second.close()

            # 4. charging brings it back
            write_supply(power, "BAT0", type="Battery", capacity="12", status="Charging")

            async def back() -> bool:
                assert phone.control is not None
                state = heartbeats.get(mob.node_id)
                if mob.host.relay_refusal() is not None or state is None:
                    return False
                if not (state.facts.charging and state.facts.relay_opt_in):
                    return False
                routes = await phone.control.client.route_leases(WEB, CLASS)
                return any(mob.node_id in h for h in hop_sets(routes))

            await until(back)
            first.close()
        finally:
            for runtime in reversed(started):
                await runtime.shutdown()
            server.close()
