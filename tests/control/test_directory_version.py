"""The directory version moves whenever what a node could see in its directory changes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from accessfabric.control.client import ControlClient
from accessfabric.control.plane import ControlConfig
from accessfabric.identity.keys import NodeKey
from tests.control.api_harness import Running, facts, running_plane
from tests.control.conftest import FakeClock


async def _refetch_if_moved(client: ControlClient, reply: dict[str, Any]) -> set[str]:
    """What a node does each cycle: refetch only when the heartbeat's version moved."""
    cached = client.cached_directory() or {}
    if not cached or reply["directory_version"] != cached.get("version"):
        cached = await client.directory()
    return {entry["node_id"] for entry in cached["entries"]}


async def _scenario(
    cp: Running, clock: FakeClock, watcher: ControlClient, relay: ControlClient, relay_id: str
) -> None:
    await watcher.enroll(await cp.token("acme", ["observer"]))
    assert await _refetch_if_moved(watcher, await watcher.heartbeat(facts())) == set()

    # the relay enrolls; the watcher fetches before the relay's first heartbeat
    await relay.enroll(await cp.token("acme", ["relay"]))
    assert await _refetch_if_moved(watcher, await watcher.heartbeat(facts())) == set()

    await relay.heartbeat(facts())
    seen = await _refetch_if_moved(watcher, await watcher.heartbeat(facts()))
    assert seen == {relay_id}, "the relay's first heartbeat must reach the watcher"

    # nothing changed: the version holds, so a node does not refetch every heartbeat
    await relay.heartbeat(facts())
    before = watcher.cached_directory() or {}
    reply = await watcher.heartbeat(facts())
    assert reply["directory_version"] == before["version"]

    # the relay falls silent past unreachable_after (45 s); the watcher keeps heartbeating
    for _ in range(5):
        clock.advance(10)
        reply = await watcher.heartbeat(facts())
    assert await _refetch_if_moved(watcher, reply) == set(), "the silent relay must leave"

    # it comes back
    await relay.heartbeat(facts())
    assert await _refetch_if_moved(watcher, await watcher.heartbeat(facts())) == {relay_id}

    # a live node's endpoints move: the content of its entry changed
    await relay.heartbeat(facts(endpoints=("tcp+tls://127.0.0.1:9",)))
    reply = await watcher.heartbeat(facts())
    assert reply["directory_version"] != (watcher.cached_directory() or {}).get("version")


def test_first_heartbeat_and_unreachability_move_the_directory_version(tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)

    async def main() -> None:
        config = ControlConfig(heartbeat_interval=10)
        async with running_plane(tmp_path, clock=clock, config=config) as cp:
            relay_key = NodeKey.generate()
            async with (
                cp.client(NodeKey.generate(), tmp_path / "watcher") as watcher,
                cp.client(relay_key, tmp_path / "relay") as relay,
            ):
                await _scenario(cp, clock, watcher, relay, relay_key.node_id)

    asyncio.run(main())
