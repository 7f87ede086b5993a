"""The light profile's node cache (sim/device_cache.py): a simulated device's cache
writes are held and written together, and its files end up with the final state."""

from __future__ import annotations

import json
from pathlib import Path

from accessfabric.control.client.node_cache import NodeCache
from accessfabric.sim.device_cache import CoalescedCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_writes_are_held_then_written_once_with_the_final_state(tmp_path: Path) -> None:
    clock = Clock()
    cache = CoalescedCache(tmp_path, interval=30.0, clock=clock)
    for version in range(10):  # a fleet's start: the directory changes at every heartbeat
        document = {"version": version, "entries": [f"n{version}"]}
        cache.write(document, "directory.json")
        document["entries"].append("changed by the caller")  # the cache holds its copy
        clock.now += 1.0
    cache.write({"last_success_at": clock.now}, "sync.json")
    route = NodeCache.route_file("fleet-echo", "reliable")
    cache.write({"service": "fleet-echo", "traffic_class": "reliable", "routes": []}, *route)
    assert cache.disk_writes == 0
    assert not (tmp_path / "directory.json").exists()
    assert cache.read("directory.json") == {"version": 9, "entries": ["n9"]}
    assert [d["service"] for d in cache.route_documents()] == ["fleet-echo"]
    assert cache.flush_due(clock.now) is False  # held for 11 s of 30

    clock.now += 20.0  # the first held write is now 30 s old: the next write writes all
    cache.write({"version": 10, "entries": ["n10"]}, "directory.json")
    assert cache.disk_writes == 3  # directory, sync, one route: each once
    on_disk = NodeCache(tmp_path)  # another reader: the files hold the final state
    assert on_disk.read("directory.json") == {"version": 10, "entries": ["n10"]}
    assert on_disk.read(*route) is not None
    assert json.loads((tmp_path / "sync.json").read_text())["last_success_at"] == 110.0


def test_flush_writes_what_is_held(tmp_path: Path) -> None:
    clock = Clock()
    cache = CoalescedCache(tmp_path, interval=30.0, clock=clock)
    cache.write({"record": "abc", "revision": 1}, "record.json")
    cache.write({"record": "abd", "revision": 2}, "record.json")
    service = NodeCache.service_file("fleet-echo")
    cache.write({"service": "fleet-echo", "leases": []}, *service)
    clock.now += 5.0
    assert cache.flush_due() is False
    cache.flush()  # what the control client does on close
    assert NodeCache(tmp_path).read("record.json") == {"record": "abd", "revision": 2}
    assert [d["service"] for d in NodeCache(tmp_path).service_documents()] == ["fleet-echo"]
    assert cache.disk_writes == 2
    cache.flush()  # nothing held: nothing written again
    assert cache.disk_writes == 2
    # held documents shadow older files; files not held are read as the node cache reads
    cache.write({"record": "abe", "revision": 3}, "record.json")
    assert cache.read("record.json") == {"record": "abe", "revision": 3}
    assert NodeCache(tmp_path).read("record.json") == {"record": "abd", "revision": 2}
    clock.now += 30.0
    assert cache.flush_due() is True
    assert NodeCache(tmp_path).read("record.json") == {"record": "abe", "revision": 3}
