"""Drain an entry, end to end (issue 17 item 2, issue 21 "drain a node").

Real nodes on loopback with an in-process control plane: a service host ``S`` serving
``web`` (a TCP echo server), two entries ``A`` and ``B`` each holding a session to ``S``,
and a mobile-edge device ``D`` placed on one of them.  While ``D`` streams a transfer
through its entry, the operator drains that entry with ``accessfabric control drain``:

* ``D`` moves: it holds a session with the other entry (its directory's placement);
* the transfer under way completes intact, on the drained entry, which sends GOAWAY to
  ``D``'s session only after that stream ended (``told_with_streams == 0``);
* new streams go through the other entry, and the drained one refuses new sessions;
* ``control undrain`` makes it placeable again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from accessfabric.control.kernel.authority_key import format_authority_key
from accessfabric.control.server.cli import main as control_main
from accessfabric.control.server.plane import ControlConfig
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import load_node_config
from accessfabric.node.runtime import NodeRuntime
from accessfabric.services.host import ServicesComponent
from accessfabric.wire.registry import TrafficClass
from tests.conditions import until, until_returns
from tests.control.api_harness import Running, running_plane
from tests.echo_server import echo_server

CHUNK = 64 * 1024
CHUNKS = 48  # 3 MiB: half before the drain, half after the device moved


def _config(
    tmp_path: Path, name: str, plane: Running, token: str, extra: str, drain_timeout: float = 20
) -> Any:
    NodeKey.generate().save(tmp_path / f"{name}.key")
    authority = format_authority_key(plane.authority.public_key)
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
key_path = "{name}.key"
drain_timeout = {drain_timeout}
{extra}
[[listen]]
carrier = "tcp"
address = "127.0.0.1:0"

[control]
url = "{plane.url}"
authority_key = "{authority}"
token = "{token}"
heartbeat_interval = 0.3
"""
    )
    return load_node_config(path)


def _cli(plane: Running, *args: str) -> int:
    return control_main(
        ["control", *args, "--server", plane.url, "--admin-token", plane.admin_token]
    )


@dataclass
class Fabric:
    plane: Running
    entries: list[NodeRuntime]
    device: NodeRuntime


@asynccontextmanager
async def fabric(tmp_path: Path, drain_timeout: float = 20.0) -> AsyncIterator[Fabric]:
    """S serving web (echo), entries A and B with a session to S each, device D."""
    echo = await echo_server()
    echo_port = echo.sockets[0].getsockname()[1]
    nodes: list[NodeRuntime] = []
    async with running_plane(tmp_path, config=ControlConfig(heartbeat_interval=0.5)) as plane:
        await plane.grant("acme", ["web"])
        try:
            host = NodeRuntime(
                _config(
                    tmp_path, "s", plane, await plane.token("acme", ["service-host"]),
                    f'roles = ["service-host"]\n[[services]]\nname = "web"\n'
                    f'target = "127.0.0.1:{echo_port}"\n',
                ),
                components=(ServicesComponent(),),
            )  # fmt: skip
            await host.start()
            nodes.append(host)
            entries = []
            for name in ("a", "b"):
                entry = NodeRuntime(
                    _config(
                        tmp_path, name, plane, await plane.token("acme", ["entry"]),
                        'roles = ["entry"]\n'
                        f'[[peers]]\nnode_id = "{host.node_id}"\n'
                        f'endpoints = ["{host.listeners[0].endpoint.url}"]\n'
                        'connect = "always"\n',
                        drain_timeout,
                    )
                )  # fmt: skip
                await entry.start()
                nodes.append(entry)
                entries.append(entry)
            device = NodeRuntime(
                _config(
                    tmp_path, "d", plane, await plane.token("acme", ["mobile-edge"]),
                    'roles = ["mobile-edge"]',
                )
            )  # fmt: skip
            await device.start()
            nodes.append(device)
            yield Fabric(plane, entries, device)
        finally:
            for node in reversed(nodes):
                await node.shutdown()
            echo.close()
            await echo.wait_closed()


class Transfer:
    """Random bytes through an echo stream, hashed both ways."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.sent, self.received = hashlib.sha256(), hashlib.sha256()
        self.got = 0

    async def send(self, chunks: range) -> None:
        for _chunk in chunks:
            data = os.urandom(CHUNK)
            self.sent.update(data)
            self.stream.write(data)
            await self.stream.drain()

    async def receive(self, until_bytes: int) -> None:
        while self.got < until_bytes:
            data = await asyncio.wait_for(self.stream.read(65536), 20)
            assert data, "the stream ended early"
            self.received.update(data)
            self.got += len(data)

    async def run(self, chunks: range) -> None:
        await asyncio.gather(self.send(chunks), self.receive(chunks.stop * CHUNK))

    def intact(self) -> bool:
        return self.got == CHUNKS * CHUNK and self.received.digest() == self.sent.digest()


async def test_drained_entry_moves_its_device_and_the_transfer_completes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fabric(tmp_path) as fab:
        plane, entries, device = fab.plane, fab.entries, fab.device
        await until(lambda: sum(e.accepted_sessions for e in entries) == 1, 20, "device placed")
        first, second = entries if entries[0].accepted_sessions else entries[::-1]

        async def opened() -> Any:
            return await device.routes.open_stream("web", TrafficClass.RELIABLE)

        stream = await until_returns(opened, 20.0)
        transfer = Transfer(stream)
        half = CHUNKS // 2
        await transfer.run(range(half))
        assert device.control is not None

        # the operator drains the device's entry (the CLI, as an operator would)
        assert await asyncio.to_thread(_cli, plane, "drain", first.node_id) == 0
        assert "draining" in capsys.readouterr().out
        await until(lambda: first.operator_drain.active, 10, "the entry learnt its drain")
        await until(
            lambda: second.accepted_sessions == 1, 15, "the device moved to the other entry"
        )
        assert first.operator_drain.told == 0  # the transfer is still running through it
        assert first.accepted_sessions == 1

        await transfer.run(range(half, CHUNKS))
        assert transfer.intact()  # every byte, in order
        stream.close()
        await until(lambda: first.accepted_sessions == 0, 10, "session ended after the stream")
        status = first.operator_drain.status()  # the device left by itself, or was told
        assert status["sessions_told"] <= 1 and status["told_with_streams"] == 0, status
        assert device.routes.failovers == 0  # it completed where it was, no resume needed

        # new streams go through the other entry; the drained one gets no session
        async def through_second() -> Any:
            fresh = await device.routes.open_stream("web", TrafficClass.RELIABLE)
            fresh.write(b"after the drain")
            echoed = await asyncio.wait_for(fresh.readexactly(15), 5)
            fresh.close()
            return echoed == b"after the drain"

        assert await until_returns(through_second, 15.0)
        leases = device.control.client.cached_route_leases("web", TrafficClass.RELIABLE)
        assert leases and all(u.lease.hops[1] == second.node_id for u in leases)
        assert first.accepted_sessions == 0
        _, listing = await plane.admin("GET", "/v1/admin/nodes")
        drained = {n["node_id"]: n["draining"] for n in listing["nodes"]}
        assert drained[first.node_id] and not drained[second.node_id]
        assert "drained by the operator" in device_status(first)

        assert await asyncio.to_thread(_cli, plane, "undrain", first.node_id) == 0
        await until(lambda: not first.operator_drain.active, 10, "the entry undrained")
        assert first.observe.ready


async def test_a_stream_outliving_the_drain_bound_resumes_on_the_other_entry(
    tmp_path: Path,
) -> None:
    """The drained entry GOAWAYs a session whose stream is still open once drain_timeout
    passed: the device's route execution resumes the stream through the other entry from
    its last end-to-end ACK, and the transfer still arrives intact."""
    async with fabric(tmp_path, drain_timeout=1.5) as fab:
        entries, device = fab.entries, fab.device
        await until(lambda: sum(e.accepted_sessions for e in entries) == 1, 20, "device placed")
        first, second = entries if entries[0].accepted_sessions else entries[::-1]

        async def opened() -> Any:
            return await device.routes.open_stream("web", TrafficClass.RELIABLE)

        transfer = Transfer(await until_returns(opened, 20.0))
        await transfer.run(range(CHUNKS // 2))
        status, _ = await fab.plane.admin("POST", f"/v1/admin/nodes/{first.node_id}/drain")
        assert status == 200
        await until(lambda: first.operator_drain.cut == 1, 15, "GOAWAY at the bound, stream live")
        await transfer.run(range(CHUNKS // 2, CHUNKS))
        assert transfer.intact()
        assert device.routes.failovers == 1  # resumed once, on the other entry
        assert second.accepted_sessions == 1
        transfer.stream.close()


def device_status(node: NodeRuntime) -> str:
    assert node.control is not None
    return str(node.control.status()["drain"])
