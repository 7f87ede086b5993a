"""Directory deltas and partitions (issue 17): a node that holds a directory gets only what
changed since its cursor; a change to one node sends O(1) bytes to its partition and
nothing to others, whatever the fleet size."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from accessfabric.control.client.client import ControlClient
from accessfabric.control.kernel.authority import Authority
from accessfabric.control.server.directory import directory_document
from accessfabric.control.server.plane import ControlConfig, ControlPlane
from accessfabric.control.server.registry import RegisteredNode
from accessfabric.control.server.store.sqlite import SqliteStore
from accessfabric.identity.keys import NodeKey
from tests.control.api_harness import facts, running_plane
from tests.control.conftest import FakeClock


class Fleet:
    """A control plane driven in-process: nodes enroll and heartbeat without sockets."""

    def __init__(self, tmp_path: Path, clock: FakeClock) -> None:
        self.clock = clock
        self.store = SqliteStore(tmp_path / "control.db", clock=clock)
        config = ControlConfig(heartbeat_interval=10)
        self.plane = ControlPlane(self.store, Authority(NodeKey.generate()), config=config,
                                  clock=clock)  # fmt: skip
        self.tokens: dict[tuple[str, str], str] = {}

    def enroll(self, tenant: str, role: str, region: str = "eu", **fields: Any) -> RegisteredNode:
        token = self.tokens.get((tenant, role))
        if token is None:
            created = self.plane.registry.tokens.create(tenant, [role], 3600, uses=10_000)
            token = self.tokens[(tenant, role)] = created.token
        key = NodeKey.generate()
        node = self.plane.registry.enroll(token, key.public_key_bytes, key.sealing_public_key_bytes)
        self.beat(node, region=region, **fields)
        return node

    def beat(self, node: RegisteredNode, region: str = "eu", **fields: Any) -> None:
        self.plane.ingest_heartbeat(node, facts(region=region, **fields))

    def fetch(self, node: RegisteredNode, since: str | None = None) -> dict[str, Any]:
        p = self.plane
        return directory_document(node, p.registry, p.heartbeats, self.clock(), p.config.policy,
                                  since, p.drains)  # fmt: skip


def _bytes(document: dict[str, Any]) -> int:
    return len(json.dumps(document, separators=(",", ":")).encode())


def _one_change(tmp_path: Path, size: int) -> dict[str, Any]:
    """A fleet of ``size`` nodes in two tenants; one entry of tenant acme moves its
    endpoints; what each watcher's delta carries."""
    fleet = Fleet(tmp_path, FakeClock(1_800_000_000.0))
    entries = [fleet.enroll("acme", "entry", endpoints=(f"tcp+tls://10.0.0.{i}:443",))
               for i in range(4)]  # fmt: skip
    for i in range(4):
        fleet.enroll("other", "entry", endpoints=(f"tcp+tls://10.1.0.{i}:443",))
    device = fleet.enroll("acme", "mobile-edge")
    stranger = fleet.enroll("other", "mobile-edge")
    observer = fleet.enroll("acme", "observer")
    far_relay = fleet.enroll("acme", "relay", region="us")
    for i in range(size - 12):  # the rest of the fleet: devices and relays of both tenants
        tenant = ("acme", "other")[i % 2]
        fleet.enroll(tenant, ("mobile-edge", "relay")[i % 5 == 0], region=("eu", "us")[i % 3 == 0])
    assert len(fleet.plane.registry) == size
    held = {n.node_id: fleet.fetch(n) for n in (device, stranger, observer, far_relay)}
    fleet.clock.advance(1)
    fleet.beat(entries[0], endpoints=("tcp+tls://10.0.0.99:443",))
    deltas = {i: fleet.fetch(n, held[n.node_id]["cursor"])
              for i, n in (("device", device), ("stranger", stranger),
                           ("observer", observer), ("far_relay", far_relay))}  # fmt: skip
    out: dict[str, Any] = {"deltas": deltas, "entry": entries[0].node_id}
    out["observer_full"] = _bytes(fleet.fetch(observer))
    out["stranger_version_moved"] = (
        deltas["stranger"]["version"] != held[stranger.node_id]["version"]
    )
    fleet.store.close()
    return out


def test_a_change_sends_its_partition_o1_bytes_and_nothing_to_others(tmp_path: Path) -> None:
    small = _one_change(tmp_path / "50", 50)
    large = _one_change(tmp_path / "500", 500)
    for run in (small, large):
        d = run["deltas"]
        for name in ("device", "stranger", "observer", "far_relay"):
            assert d[name]["delta"] is True, name
        # the partition: acme's device and observer get the changed entry, and only it
        assert [e["node_id"] for e in d["device"]["entries"]] == [run["entry"]]
        assert d["device"]["entries"][0]["endpoints"] == ["tcp+tls://10.0.0.99:443"]
        assert [e["node_id"] for e in d["observer"]["entries"]] == [run["entry"]]
        assert d["observer"]["removed"] == []
        # another tenant: nothing, and its version did not move (it does not even ask)
        assert d["stranger"]["entries"] == [] and "ids" not in d["stranger"]
        assert not run["stranger_version_moved"]
        # acme, but another region and not a neighbour: nothing either
        assert d["far_relay"]["entries"] == [] and d["far_relay"]["removed"] == []
    for name in ("device", "observer", "stranger"):
        a, b = _bytes(small["deltas"][name]), _bytes(large["deltas"][name])
        # equal but for the cursor's digits (the change log's sequence grows with the fleet)
        assert abs(a - b) <= 8, (name, a, b)
    # the observer's whole directory grows with the fleet; its delta does not
    assert large["observer_full"] > 20 * _bytes(large["deltas"]["observer"])


def test_a_node_removed_or_silent_leaves_by_delta_and_the_cursor_is_bounded(
    tmp_path: Path,
) -> None:
    fleet = Fleet(tmp_path, FakeClock(1_800_000_000.0))
    observer = fleet.enroll("acme", "observer")
    relays = [fleet.enroll("acme", "relay") for _ in range(3)]
    held = fleet.fetch(observer)
    assert {e["node_id"] for e in held["entries"]} == {r.node_id for r in relays}
    fleet.plane.registry.remove(relays[0].node_id)
    fleet.plane.heartbeats.remove(relays[0].node_id)
    for _ in range(5):  # relays[1] falls silent past unreachable_after (45 s)
        fleet.clock.advance(10)
        fleet.beat(observer)
        fleet.beat(relays[2])
    delta = fleet.fetch(observer, held["cursor"])
    assert delta["delta"] is True and delta["entries"] == []
    assert delta["removed"] == sorted([relays[0].node_id, relays[1].node_id])
    # a cursor of another log, or one the bounded log no longer covers: the whole directory
    assert fleet.fetch(observer, "feedface.1")["delta"] is False
    log = fleet.plane.heartbeats.changes
    for i in range((log._log.maxlen or 0) + 1):  # one more than the ring keeps
        log.note(f"n{i}")
    assert fleet.fetch(observer, delta["cursor"])["delta"] is False
    # a drain (the entry's "draining" flag, placement): whole, then deltas again
    cursor = fleet.fetch(observer)["cursor"]
    fleet.plane.drains.drain(relays[2].node_id)
    drained = fleet.fetch(observer, cursor)
    assert drained["delta"] is False
    assert [e["draining"] for e in drained["entries"]] == [True]
    assert fleet.fetch(observer, drained["cursor"])["delta"] is True
    # the asking node's own change (its region: its whole view may move): whole
    cursor = fleet.fetch(observer)["cursor"]
    fleet.beat(observer, region="us")
    assert fleet.fetch(observer, cursor)["delta"] is False
    fleet.store.close()


def test_the_node_client_merges_deltas_into_what_a_whole_fetch_gives(tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)

    async def main() -> None:
        async with running_plane(
            tmp_path, clock=clock, config=ControlConfig(heartbeat_interval=10)
        ) as cp:
            keys = [NodeKey.generate() for _ in range(4)]
            clients = [cp.client(k, tmp_path / f"n{i}") for i, k in enumerate(keys)]
            opened: list[ControlClient] = [await c.__aenter__() for c in clients]
            try:
                watcher, *relays = opened
                await watcher.enroll(await cp.token("acme", ["observer"]))
                for relay in relays:
                    await relay.enroll(await cp.token("acme", ["relay"]))
                    await relay.heartbeat(facts())
                await watcher.heartbeat(facts())
                first = await watcher.directory()
                assert first["delta"] is False and len(first["entries"]) == 3
                paths: list[str] = []
                request = watcher.request

                async def spy(method: str, path: str, *args: Any, **kw: Any) -> Any:
                    paths.append(path)
                    return await request(method, path, *args, **kw)

                watcher.request = spy  # type: ignore[method-assign]
                await relays[0].heartbeat(facts(endpoints=("tcp+tls://127.0.0.1:9",)))
                for _ in range(5):  # relays[1] falls silent
                    clock.advance(10)
                    await watcher.heartbeat(facts())
                    await relays[0].heartbeat(facts(endpoints=("tcp+tls://127.0.0.1:9",)))
                    await relays[2].heartbeat(facts())
                merged = await watcher.directory()
                fetched = [p for p in paths if p.startswith("/v1/directory")]
                assert fetched == [f"/v1/directory?since={first['cursor']}"]
                watcher.request = request  # type: ignore[method-assign]
                (watcher.cache.directory / "directory.json").unlink()
                whole = await watcher.directory()

                def view(d: dict[str, Any]) -> dict[str, Any]:
                    return {e["node_id"]: (e["endpoints"], e["revision"]) for e in d["entries"]}

                assert view(merged) == view(whole)
                assert set(view(merged)) == {keys[1].node_id, keys[3].node_id}
                assert view(merged)[keys[1].node_id][0] == ["tcp+tls://127.0.0.1:9"]
                assert merged["version"] == whole["version"]
            finally:
                for client in clients:
                    await client.__aexit__(None, None, None)

    asyncio.run(main())


def test_a_cursor_with_non_ascii_digits_gets_the_whole_directory() -> None:
    from accessfabric.control.server.directory_log import ChangeLog

    log = ChangeLog()
    assert log.since(f"{log.epoch}.0") is not None
    assert log.since(f"{log.epoch}.\u00b2") is None  # int('²') raised: a 500 before


def test_a_delta_with_an_entry_that_does_not_verify_is_followed_by_a_whole_fetch(
    tmp_path: Path,
) -> None:
    """Dropping the bad entry of a delta would keep the older held one (issue 14 review)."""
    clock = FakeClock(1_800_000_000.0)

    async def main() -> None:
        async with running_plane(
            tmp_path, clock=clock, config=ControlConfig(heartbeat_interval=10)
        ) as cp:
            keys = [NodeKey.generate() for _ in range(2)]
            clients = [cp.client(k, tmp_path / f"n{i}") for i, k in enumerate(keys)]
            watcher, relay = [await c.__aenter__() for c in clients]
            try:
                await watcher.enroll(await cp.token("acme", ["observer"]))
                await relay.enroll(await cp.token("acme", ["relay"]))
                await relay.heartbeat(facts())
                await watcher.heartbeat(facts())
                first = await watcher.directory()
                assert [e["node_id"] for e in first["entries"]] == [keys[1].node_id]
                paths: list[str] = []
                request = watcher.request

                async def tamper(method: str, path: str, *args: Any, **kw: Any) -> Any:
                    paths.append(path)
                    reply = await request(method, path, *args, **kw)
                    if "since=" in path:  # the delta's entry arrives with a broken signature
                        for entry in reply["entries"]:
                            entry["record"] = entry["record"][:-8] + "AAAAAAA="
                    return reply

                watcher.request = tamper  # type: ignore[method-assign]
                await relay.heartbeat(facts(endpoints=("tcp+tls://127.0.0.1:9",)))
                got = await watcher.directory()
                assert paths == [f"/v1/directory?since={first['cursor']}", "/v1/directory"]
                assert [e["endpoints"] for e in got["entries"]] == [["tcp+tls://127.0.0.1:9"]]
                assert watcher.cached_directory() == got
            finally:
                for client in clients:
                    await client.__aexit__(None, None, None)

    asyncio.run(main())
