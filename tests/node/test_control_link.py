"""NodeRuntime with ``[control]``: enroll, heartbeat, services, route leases, degraded mode.

An in-process control plane (``tests/control/api_harness.py``) and in-process nodes
configured from TOML: a service host (``entry`` + ``service-host``) whose ``[[services]]``
``web`` points at a TCP echo server, and a mobile-edge source that learns the host from the
directory, gets route leases for ``web`` and opens echo streams over them — also after the
control plane is stopped, from its cached leases.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from accessfabric.control.client.facts import FactsError, HeartbeatFacts, parse_facts
from accessfabric.control.kernel.authority_key import format_authority_key
from accessfabric.control.server.plane import ControlConfig
from accessfabric.control.server.server import ControlServer
from accessfabric.identity.keys import NodeKey
from accessfabric.node.admin.status import render
from accessfabric.node.config.node_config import ConfigError, load_node_config
from accessfabric.node.routing.routes import NoUsableRoute
from accessfabric.node.runtime import NodeRuntime
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until, until_returns
from tests.control.api_harness import Running, running_plane
from tests.echo_server import echo_server


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    return await until_returns(check, timeout)


def _write_config(tmp_path: Path, name: str, plane: Running, token: str, extra: str = "") -> Path:
    key = NodeKey.generate()
    key_path = tmp_path / f"{name}.key"
    key.save(key_path)
    authority = format_authority_key(plane.authority.public_key)
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
key_path = "{name}.key"
[[listen]]
carrier = "tcp"
address = "127.0.0.1:0"

[control]
url = "{plane.url}"
authority_key = "{authority}"
token = "{token}"
heartbeat_interval = 0.3
{extra}
"""
    )
    return path


async def _echo(stream: Any, payload: bytes) -> None:
    stream.write(payload)
    assert await asyncio.wait_for(stream.readexactly(len(payload)), 5) == payload


async def test_nodes_enroll_register_lease_and_survive_control_outage(tmp_path: Path) -> None:
    config = ControlConfig(heartbeat_interval=0.5)
    server = await echo_server()
    echo_port = server.sockets[0].getsockname()[1]
    async with running_plane(tmp_path, config=config) as plane:
        host_token = await plane.token("acme", ["entry", "service-host"])
        source_token = await plane.token("acme", ["mobile-edge"])
        await plane.grant("acme", ["web"])  # default deny: the tenant's nodes may reach web
        host_config = load_node_config(
            _write_config(
                tmp_path,
                "host",
                plane,
                host_token,
                f'[[services]]\nname = "web"\ntarget = "127.0.0.1:{echo_port}"\n',
            )
        )
        source_config = load_node_config(_write_config(tmp_path, "source", plane, source_token))
        assert source_config.control is not None
        assert source_config.authority_key == plane.authority.public_key
        assert source_config.control.state_dir == tmp_path / "source.control"

        from accessfabric.services.host import ServicesComponent

        host = NodeRuntime(host_config, components=(ServicesComponent(),))
        source = NodeRuntime(source_config)
        await host.start()
        await source.start()
        try:
            # enrolled, heartbeating, healthy in the admin node list
            async def listed() -> bool:
                _, body = await plane.admin("GET", "/v1/admin/nodes")
                nodes = {n["node_id"]: n for n in body["nodes"]}
                return all(
                    nodes.get(r.node_id, {}).get("health") == "healthy" for r in (host, source)
                )

            await _until(listed)
            assert host.control is not None and source.control is not None
            assert host.control.health == "healthy"

            # the host's [[services]] replica has a service lease
            async def served() -> bool:
                _, body = await plane.admin("GET", "/v1/admin/services")
                return "web" in str(body) and host.node_id in str(body)

            await _until(served)

            async def leased() -> bool:  # the host's next cycle fetches the service leases
                assert host.control is not None
                return bool(host.control.client.cached_service_leases("web"))

            await _until(leased, 5.0)

            # the source finds the host in its directory, measures it, gets route leases
            async def opened() -> Any:
                return await source.routes.open_stream("web", TrafficClass.RELIABLE)

            stream = await _until(opened, 20.0)
            await _echo(stream, b"hello over a control-plane lease")
            assert ("web", TrafficClass.RELIABLE) in source.control.client.wanted

            # the heartbeat carries the session RTT and the ranker's endpoint health
            async def reported() -> bool:
                state = plane.plane.heartbeats.get(source.node_id)
                return (
                    state is not None
                    and bool(state.facts.endpoint_health)
                    and any(p.node_id == host.node_id for p in state.facts.peers)
                )

            await _until(reported, 5.0)
            host_state = plane.plane.heartbeats.get(host.node_id)
            assert host_state is not None and host_state.facts.endpoints
            assert [s.name for s in host_state.facts.services] == ["web"]
            rows = source.control.lease_rows()
            assert rows and rows[0]["kind"] == "route" and rows[0]["expires_in_s"] > 0
            # the planner's score and its largest reasons, as the control plane gave them
            assert isinstance(rows[0]["score"], float) and rows[0]["reasons"] != "-"
            assert source.observe.status()["routes"]  # route table from the leases

            # the control plane goes away
            await plane.server.stop()

            async def failing() -> bool:
                assert source.control is not None
                return source.control.status()["state"] == "unreachable"

            await _until(failing, 10.0)
            await _echo(stream, b"the open stream keeps working")
            second = await source.routes.open_stream("web", TrafficClass.RELIABLE)
            await _echo(second, b"a new stream opens on the cached lease")
            second.close()
            stream.close()

            status = source.observe.status()
            assert status["control"]["state"] == "unreachable"
            assert "cannot reach" in status["control"]["last_error"]
            text = render(status)
            assert "control:" in text and "UNREACHABLE" in text and "route" in text

            # once the cached leases expire, the reason is given, logged and in status
            source.routes.clock = lambda: time.time() + 3600
            source.control.client._clock = lambda: time.time() + 3600
            with pytest.raises(NoUsableRoute, match="unreachable") as why:
                await source.routes.open_stream("web", TrafficClass.RELIABLE)
            assert "no answer for 36" in str(why.value)  # ~3600 s by the faked clock
            control = source.observe.status()["control"]
            assert control["route_lease_error"] == f"web/reliable: {why.value}"
            assert control["route_lease_error_s_ago"] < 5
            assert "route_lease_error" in render(source.observe.status())

            # the control plane comes back: the next stream fetches a fresh lease, and the
            # link heartbeats at once instead of waiting out its backoff
            source.routes.clock = source.control.client._clock = time.time
            cached = source_config.control.state_dir / "routes" / "web.reliable.json"
            cached.unlink()  # as if the cached leases had expired: on disk and in the book
            source.route_book.put("web", TrafficClass.RELIABLE, [])

            async def backing_off() -> bool:  # the next attempt is 2 s or more away
                assert source.control is not None
                return source.control.failures >= 2

            await _until(backing_off, 10.0)
            scheduled = source.control.client.next_attempt_at
            assert scheduled is not None
            link = source.control
            beats: list[float] = []  # when each heartbeat after the outage landed
            cycle = link.cycle

            async def recorded_cycle() -> None:
                await cycle()
                assert link.last_heartbeat_at is not None
                beats.append(link.last_heartbeat_at)

            link.cycle = recorded_cycle  # type: ignore[method-assign]
            back = ControlServer(plane.plane, "127.0.0.1", plane.server.port, tick_interval=0.05)
            await back.start()
            try:
                # (the first attempt may be refused: the restarted plane has not heard
                # from the source for longer than its health rules allow)
                third = await _until(opened, 10.0)
                await _echo(third, b"a fresh lease after the outage")
                third.close()

                async def heartbeating() -> bool:
                    assert source.control is not None
                    return source.control.failures == 0

                await _until(heartbeating, 5.0)
                # the first heartbeat after the outage: woken, not at the end of the backoff
                # (later ones follow every interval; the last may well be past it)
                assert beats and beats[0] < scheduled, (beats, scheduled)
                control = source.observe.status()["control"]
                assert control["state"] == "reachable"
                assert control["route_lease_error"] == "-"
            finally:
                await back.stop()
        finally:
            await source.shutdown()
            await host.shutdown()
            server.close()


async def test_backoff_max_bounds_the_retry_interval(tmp_path: Path) -> None:
    """With the control plane unreachable the link retries at least every backoff_max."""
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    key = NodeKey.generate()
    key.save(tmp_path / "n.key")
    authority = format_authority_key(NodeKey.generate().public_key_bytes)
    path = tmp_path / "n.toml"
    path.write_text(
        f'key_path = "n.key"\n[control]\nurl = "http://127.0.0.1:{port}"\n'
        f'authority_key = "{authority}"\ntoken = "t"\nbackoff_max = 0.2\n'
    )
    config = load_node_config(path)
    assert config.control is not None and config.control.backoff_max == 0.2
    node = NodeRuntime(config)
    await node.start()
    try:
        assert node.control is not None
        control = node.control
        # 1 s, 2 s, 4 s, 8 s (the default back-off) would reach the fifth failure after 15 s
        await until(lambda: control.failures >= 5, timeout=6.0, what="five failed attempts")
        assert node.control.status()["state"] == "unreachable"
    finally:
        await node.shutdown()


def test_control_config_errors(tmp_path: Path) -> None:
    (tmp_path / "n.key").write_text("")
    path = tmp_path / "n.toml"
    path.write_text('key_path = "n.key"\n[control]\nurl = "http://127.0.0.1:8600"\n')
    with pytest.raises(ConfigError, match=r"n.toml: control.authority_key: required"):
        load_node_config(path)
    path.write_text('key_path = "n.key"\n[control]\nurl = "ftp://x"\nauthority_key = "x"\n')
    with pytest.raises(ConfigError, match=r"control.url: expected an http"):
        load_node_config(path)
    path.write_text('key_path = "n.key"\n[control]\ncolour = 1\n')
    with pytest.raises(ConfigError, match=r"control.colour: unknown key"):
        load_node_config(path)
    authority = format_authority_key(NodeKey.generate().public_key_bytes)
    path.write_text(f'key_path = "n.key"\n[control]\nauthority_key = "{authority}"\n')
    assert load_node_config(path).control.backoff_max == 60.0  # type: ignore[union-attr]
    path.write_text(
        f'key_path = "n.key"\n[control]\nauthority_key = "{authority}"\nbackoff_max = 0\n'
    )
    with pytest.raises(ConfigError, match=r"control.backoff_max: must be a positive"):
        load_node_config(path)


def test_endpoint_health_facts_are_bounded() -> None:
    entry = {"transport": "tcp", "address": "192.0.2.1:7443", "success_rate": 0.5}
    facts = parse_facts({"endpoint_health": [entry]})
    assert facts.endpoint_health[0].success_rate == 0.5
    assert parse_facts(facts.to_json()) == facts
    assert parse_facts(HeartbeatFacts().to_json()).endpoint_health == ()
    with pytest.raises(FactsError, match=r"endpoint_health: at most 64"):
        parse_facts({"endpoint_health": [entry] * 65})
    with pytest.raises(FactsError, match=r"endpoint_health\[0\].success_rate"):
        parse_facts({"endpoint_health": [{**entry, "success_rate": 2}]})


def _logged(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    """The structured fields of every record of ``message``."""
    return [
        dict(getattr(r, "fabric_fields", {})) for r in caplog.records if r.getMessage() == message
    ]


async def test_an_outage_is_logged_once_then_its_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A short backoff_max retries often; the log says "failing" once per 30 s, with the
    count, and says when the control plane answers again."""
    caplog.set_level(logging.INFO, logger="accessfabric.node.control_link")
    async with running_plane(tmp_path) as cp:
        token = await cp.token("acme", ["entry"])
        port = cp.server.port
        await cp.server.stop()  # the control plane is down from the node's first attempt
        key = NodeKey.generate()
        key.save(tmp_path / "n.key")
        authority = format_authority_key(cp.authority.public_key)
        path = tmp_path / "n.toml"
        path.write_text(
            f'key_path = "n.key"\n[control]\nurl = "http://127.0.0.1:{port}"\n'
            f'authority_key = "{authority}"\ntoken = "{token}"\nbackoff_max = 0.05\n'
            f'state_dir = "{tmp_path / "state"}"\n'
        )
        node = NodeRuntime(load_node_config(path))
        await node.start()
        server: ControlServer | None = None
        try:
            assert node.control is not None
            control = node.control
            loop = asyncio.get_running_loop()
            await until(lambda: control.failures >= 1, what="a failed attempt")
            down_since = loop.time()
            await until(lambda: control.failures >= 5, timeout=6.0, what="five failed attempts")
            seen_down = loop.time() - down_since  # the outage lasted at least this long
            failing = _logged(caplog, "control plane link failing")
            assert len(failing) == 1 and failing[0]["failures"] == 1, failing
            server = ControlServer(cp.plane, "127.0.0.1", port)
            await server.start()

            async def recovered() -> list[dict[str, Any]]:
                return _logged(caplog, "control plane reachable again")

            (back,) = await _until(recovered)
            assert back["failures"] >= 5 and back["down_s"] >= round(seen_down, 1)  # logged rounded
        finally:
            await node.shutdown()
            if server is not None:
                await server.stop()


async def test_a_bad_enrollment_token_is_reported_as_such_in_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The control plane answers but refuses the token: status must not say "reachable"."""
    caplog.set_level(logging.INFO, logger="accessfabric.node.control_link")
    async with running_plane(tmp_path) as cp:
        path = _write_config(tmp_path, "n", cp, "aftok1_not_a_real_token", "backoff_max = 0.1")
        node = NodeRuntime(load_node_config(path))
        await node.start()
        try:
            assert node.control is not None
            control = node.control

            async def refused() -> bool:
                return control.failures >= 3

            await _until(refused)
            state = control.status()["state"]
            assert state.startswith("enrollment refused ("), state
            assert "reachable" not in state
            logged = _logged(caplog, "enrollment refused")
            assert len(logged) == 1, logged  # once, not once per retry
            assert "token create" in logged[0]["fix"]
            text = render(node.observe.status())
            assert "enrollment refused" in text
        finally:
            await node.shutdown()


async def test_status_shows_which_control_replica_answers_and_which_failed(
    tmp_path: Path,
) -> None:
    """``[control] urls``: a dead replica first; the node moves on and says so in status."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there
    async with running_plane(tmp_path, config=ControlConfig(heartbeat_interval=0.5)) as plane:
        token = await plane.token("acme", ["mobile-edge"])
        path = _write_config(tmp_path, "edge", plane, token)
        path.write_text(
            path.read_text().replace(f'url = "{plane.url}"', f'urls = ["{dead}", "{plane.url}"]')
        )
        config = load_node_config(path)
        assert config.control is not None and config.control.urls == (dead, plane.url)
        node = NodeRuntime(config)
        await node.start()
        try:
            assert node.control is not None
            node.control.client.replicas.current = node.control.client.replicas.replicas[0]

            async def moved() -> bool:
                assert node.control is not None
                status = node.control.status()
                return status["state"] == "reachable" and status["url"] == plane.url

            await _until(moved, 10.0)
            status = node.observe.status()["control"]
            assert f"{dead} failed" in status["replicas"]
            assert f"{plane.url} ok (answering)" in status["replicas"]
            assert f"{plane.url} ok (answering)" in render(node.observe.status())
        finally:
            await node.shutdown()
