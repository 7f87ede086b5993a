"""The directory version moves whenever what a node could see in its directory changes."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from accessfabric.control.client.client import ControlClient
from accessfabric.control.server.plane import ControlConfig
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


def test_placement_leaves_out_entries_that_refuse_to_relay(tmp_path: Path) -> None:
    """A device holds one session, to its placed entry: a mobile entry that refuses to relay
    (metered, not opted in) would leave it without a route, so it is not placed on one;
    when that entry starts relaying the version moves and it is placed again."""

    async def main() -> None:
        async with running_plane(tmp_path, config=ControlConfig(heartbeat_interval=10)) as cp:
            keys = {name: NodeKey.generate() for name in ("device", "phone", "fixed")}
            async with (
                cp.client(keys["device"], tmp_path / "device") as device,
                cp.client(keys["phone"], tmp_path / "phone") as phone,
                cp.client(keys["fixed"], tmp_path / "fixed") as fixed,
            ):
                await device.enroll(await cp.token("acme", ["mobile-edge"]))
                await phone.enroll(await cp.token("acme", ["mobile-edge", "entry"]))
                await fixed.enroll(await cp.token("acme", ["entry"]))
                metered = facts(battery_percent=90.0, charging=True, metered=True)
                await phone.heartbeat(metered)
                await fixed.heartbeat(facts())
                await device.heartbeat(facts())
                directory = await device.directory()
                both = {keys["phone"].node_id, keys["fixed"].node_id}
                assert {entry["node_id"] for entry in directory["entries"]} == both
                assert directory["placement"] == [keys["fixed"].node_id]

                await phone.heartbeat(
                    dataclasses.replace(metered, metered=False, relay_opt_in=True)
                )
                reply = await device.heartbeat(facts())
                assert reply["directory_version"] != directory["version"]
                assert set((await device.directory())["placement"]) == both

    asyncio.run(main())


def test_a_devices_directory_version_ignores_other_devices(tmp_path: Path) -> None:
    """Refetch storms (issue 17): a mobile device's directory shows only entries, so its
    version must not move when other devices enroll, heartbeat or connect to an entry
    (before, each of those moved every directory's version and all devices refetched);
    it moves when an entry of its tenant appears, changes endpoints or disappears."""

    async def main() -> None:
        clock = FakeClock(1_800_000_000.0)
        config = ControlConfig(heartbeat_interval=10)
        async with running_plane(tmp_path, clock=clock, config=config) as cp:
            keys = {n: NodeKey.generate() for n in ("device", "other", "entry", "entry2")}
            async with (
                cp.client(keys["device"], tmp_path / "device") as device,
                cp.client(keys["other"], tmp_path / "other") as other,
                cp.client(keys["entry"], tmp_path / "entry") as entry,
                cp.client(keys["entry2"], tmp_path / "entry2") as entry2,
            ):
                await entry.enroll(await cp.token("acme", ["entry"]))
                await entry.heartbeat(facts())
                await device.enroll(await cp.token("acme", ["mobile-edge"]))
                reply = await device.heartbeat(facts((keys["entry"], 1.0)))
                held = await device.directory()
                assert held["version"] == reply["directory_version"]
                assert held["placement"] == [keys["entry"].node_id]

                # another device enrolls, heartbeats, connects to the entry (the entry
                # reports it as a peer): nothing the device's directory shows
                await other.enroll(await cp.token("acme", ["mobile-edge"]))
                await other.heartbeat(facts((keys["entry"], 1.0)))
                await entry.heartbeat(facts((keys["other"], 1.0)))
                reply = await device.heartbeat(facts((keys["entry"], 1.0)))
                assert reply["directory_version"] == held["version"]
                theirs = await other.heartbeat(facts((keys["entry"], 1.0)))
                assert theirs["directory_version"] == held["version"]  # same view, same tenant

                # a second entry of the tenant appears: the version moves, once
                await entry2.enroll(await cp.token("acme", ["entry"]))
                await entry2.heartbeat(facts())
                reply = await device.heartbeat(facts((keys["entry"], 1.0)))
                assert reply["directory_version"] != held["version"]
                held = await device.directory()
                assert held["version"] == reply["directory_version"]
                assert set(held["placement"]) == {keys["entry"].node_id, keys["entry2"].node_id}

                # the second entry's endpoints move: it moves again
                await entry2.heartbeat(facts(endpoints=("tcp+tls://127.0.0.1:9",)))
                reply = await device.heartbeat(facts((keys["entry"], 1.0)))
                assert reply["directory_version"] != held["version"]

    asyncio.run(main())
