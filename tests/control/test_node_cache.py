"""The node's cache is held in memory: unchanged documents are not written again,
``sync.json`` is written at most every ``SYNC_PERSIST_INTERVAL``, and a file changed or
removed behind the node's back is read again (issue 17: every heartbeat read, parsed and
fsynced the cache)."""

from __future__ import annotations

import json
from pathlib import Path

from accessfabric.control.client.node_cache import SYNC_PERSIST_INTERVAL, NodeCache
from tests.control.conftest import FakeClock


def test_unchanged_documents_are_not_written_again(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    cache.write({"version": 1, "heartbeat_interval_s": 10}, "policy.json")
    for _ in range(5):
        cache.write({"heartbeat_interval_s": 10, "version": 1}, "policy.json")
    assert cache.disk_writes == 1
    cache.write({"version": 2, "heartbeat_interval_s": 10}, "policy.json")
    assert cache.disk_writes == 2
    assert json.loads((tmp_path / "policy.json").read_text())["version"] == 2


def test_sync_is_persisted_lazily_and_flushed(tmp_path: Path) -> None:
    clock = FakeClock()
    cache = NodeCache(tmp_path, clock=clock)
    cache.write({"last_success_at": 1.0}, "sync.json")
    for at in range(2, 10):
        clock.advance(1)
        cache.write({"last_success_at": float(at)}, "sync.json")
    assert cache.disk_writes == 1
    assert cache.read("sync.json") == {"last_success_at": 9.0}  # memory is current
    assert json.loads((tmp_path / "sync.json").read_text()) == {"last_success_at": 1.0}
    clock.advance(SYNC_PERSIST_INTERVAL)
    cache.write({"last_success_at": 99.0}, "sync.json")
    assert cache.disk_writes == 2
    cache.write({"last_success_at": 100.0}, "sync.json")
    cache.flush()
    assert json.loads((tmp_path / "sync.json").read_text()) == {"last_success_at": 100.0}


def test_a_file_changed_behind_the_cache_is_read_again(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    cache.write({"version": 1}, "directory.json")
    assert cache.read("directory.json") == {"version": 1}
    (tmp_path / "directory.json").write_text(json.dumps({"version": 22, "cursor": "x"}))
    assert cache.read("directory.json") == {"version": 22, "cursor": "x"}
    (tmp_path / "directory.json").unlink()
    assert cache.read("directory.json") is None
    cache.write({"version": 22, "cursor": "x"}, "directory.json")  # same bytes, file gone
    assert (tmp_path / "directory.json").exists()
