"""Store semantics: revisions, CAS, leases, the changes feed.

Tests taking ``any_store`` are the conformance suite: they run against SQLite and against
a real 3-member etcd cluster.  Tests of SQLite's injected clock, history bound and file
format take ``store`` (SQLite only); their etcd counterparts (real time) are in
``test_store_etcd.py``.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from accessfabric.control.server.store import (
    ChangeKind,
    CompactedError,
    FutureRevisionError,
    LeaseNotFoundError,
    SqliteStore,
    Store,
)
from accessfabric.control.server.store.base import prefix_range_end
from accessfabric.control.server.store.etcd import EtcdStore
from tests.control.conftest import FakeClock


def test_fresh_store_is_at_revision_one_and_first_write_is_two(store: SqliteStore) -> None:
    assert store.revision() == 1
    assert store.put("a", b"1") == 2
    assert store.revision() == 2


def test_revisions_and_versions_follow_etcd(any_store: Store) -> None:
    r1 = any_store.put("k", b"one")
    r2 = any_store.put("k", b"two")
    entry = any_store.get("k")
    assert entry is not None
    assert (entry.value, entry.create_revision, entry.mod_revision, entry.version) == (
        b"two",
        r1,
        r2,
        2,
    )
    assert entry.lease_id is None
    r3 = any_store.delete("k")
    assert r3 == r2 + 1
    assert any_store.get("k") is None
    assert any_store.delete("k") is None  # nothing deleted: no revision consumed
    assert any_store.revision() == r3
    r4 = any_store.put("k", b"again")
    entry = any_store.get("k")
    assert entry is not None
    assert (entry.create_revision, entry.version) == (r4, 1)


def test_range_is_prefix_bounded_and_sorted_by_bytes(any_store: Store) -> None:
    for key in ["/nodes/b", "/nodes/a", "/nodesx", "/node", "/nodes/\u00e9", "/z"]:
        any_store.put(key, key.encode())
    result = any_store.range("/nodes/")
    assert [e.key for e in result.entries] == ["/nodes/a", "/nodes/b", "/nodes/\u00e9"]
    assert result.revision == any_store.revision()
    assert len(any_store.range("").entries) == 6
    assert prefix_range_end(b"a\xff\xff") == b"b"
    assert prefix_range_end(b"\xff") is None


def test_put_if_compare_and_swap(any_store: Store) -> None:
    created = any_store.put_if("leader", b"n1", 0)
    assert created.succeeded and created.revision == any_store.revision()
    again = any_store.put_if("leader", b"n2", 0)
    assert not again.succeeded
    assert again.current is not None and again.current.value == b"n1"
    assert again.revision == created.revision
    swapped = any_store.put_if("leader", b"n2", created.revision)
    assert swapped.succeeded
    stale = any_store.put_if("leader", b"n3", created.revision)
    assert not stale.succeeded
    assert stale.current is not None and stale.current.mod_revision == swapped.revision
    missing = any_store.put_if("absent", b"x", 5)
    assert not missing.succeeded and missing.current is None
    with pytest.raises(ValueError):
        any_store.put_if("k", b"v", -1)


def test_delete_if_is_fenced_by_mod_revision(any_store: Store) -> None:
    rev = any_store.put("k", b"v")
    assert not any_store.delete_if("k", rev - 1).succeeded
    assert any_store.delete_if("k", rev).succeeded
    assert not any_store.delete_if("k", rev).succeeded


def test_lease_expiry_deletes_keys_at_the_injected_clock(
    store: SqliteStore, clock: FakeClock
) -> None:
    lease = store.grant_lease(10)
    store.put("/svc/a", b"1", lease=lease)
    store.put("/svc/b", b"2", lease=lease)
    store.put("/svc/c", b"3")
    entry = store.get("/svc/a")
    assert entry is not None and entry.lease_id == lease
    before = store.revision()
    clock.advance(9.9)
    assert store.time_to_live(lease) == pytest.approx(0.1)
    assert store.get("/svc/a") is not None
    clock.advance(0.1)
    assert store.get("/svc/a") is None
    assert [e.key for e in store.range("/svc/").entries] == ["/svc/c"]
    # Both keys went in one revision, as two delete events.
    deletes = store.changes(before, "/svc/")
    assert [(c.kind, c.key, c.revision) for c in deletes] == [
        (ChangeKind.DELETE, "/svc/a", before + 1),
        (ChangeKind.DELETE, "/svc/b", before + 1),
    ]
    with pytest.raises(LeaseNotFoundError):
        store.keepalive(lease)
    with pytest.raises(LeaseNotFoundError):
        store.put("/svc/d", b"4", lease=lease)


def test_keepalive_restarts_ttl(store: SqliteStore, clock: FakeClock) -> None:
    lease = store.grant_lease(5)
    store.put("k", b"v", lease=lease)
    for _ in range(4):
        clock.advance(4)
        assert store.keepalive(lease) == 5
    assert store.get("k") is not None
    clock.advance(5)
    assert store.get("k") is None


def test_revoke_deletes_keys_and_forgets_lease(any_store: Store) -> None:
    lease = any_store.grant_lease(60)
    empty = any_store.grant_lease(60)
    any_store.put("k", b"v", lease=lease)
    revision = any_store.revoke(lease)
    assert revision == any_store.revision()
    assert any_store.get("k") is None
    assert any_store.revoke(empty) is None
    with pytest.raises(LeaseNotFoundError):
        any_store.revoke(lease)
    with pytest.raises(LeaseNotFoundError):
        any_store.time_to_live(lease)


def test_put_without_lease_detaches_key(store: SqliteStore, clock: FakeClock) -> None:
    lease = store.grant_lease(1)
    store.put("k", b"v", lease=lease)
    store.put("k", b"w")
    clock.advance(2)
    entry = store.get("k")
    assert entry is not None and entry.lease_id is None


def test_refresh_leases_gives_full_ttl(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "s.db"
    with SqliteStore(path, clock=clock) as first:
        lease = first.grant_lease(10)
        first.put("k", b"v", lease=lease)
    clock.advance(8)
    with SqliteStore(path, clock=clock) as second:
        assert second.refresh_leases() == 1
        clock.advance(8)
        assert second.get("k") is not None
        clock.advance(2)
        assert second.get("k") is None


def test_changes_feed_is_ordered_and_prefix_filtered(any_store: Store) -> None:
    start = any_store.revision()
    any_store.put("/a/1", b"x")
    any_store.put("/b/1", b"y")
    any_store.put("/a/1", b"z")
    any_store.delete("/a/1")
    feed = any_store.changes(start, "/a/")
    assert [(c.kind, c.key, c.value, c.version) for c in feed] == [
        (ChangeKind.PUT, "/a/1", b"x", 1),
        (ChangeKind.PUT, "/a/1", b"z", 2),
        (ChangeKind.DELETE, "/a/1", b"", 0),
    ]
    revisions = [c.revision for c in any_store.changes(start)]
    assert revisions == sorted(revisions) == list(range(start + 1, start + 5))
    assert any_store.changes(any_store.revision()) == []
    with pytest.raises(FutureRevisionError):
        any_store.changes(any_store.revision() + 1)


def test_compaction_raises_compacted_error(any_store: Store) -> None:
    base = any_store.revision()
    for i in range(10):
        any_store.put(f"k{i}", b"v")
    any_store.compact(base + 5)
    assert any_store.compact_revision() == base + 5
    assert [c.revision for c in any_store.changes(base + 5)] == list(range(base + 6, base + 11))
    with pytest.raises(CompactedError) as caught:
        any_store.changes(base + 4)
    assert caught.value.compact_revision == base + 5
    assert "compacted" in str(caught.value)
    assert len(any_store.range("k").entries) == 10  # values survive compaction
    with pytest.raises(FutureRevisionError):
        any_store.compact(any_store.revision() + 1)


def test_change_log_is_bounded(store: SqliteStore) -> None:
    # The fixture keeps 50 revisions of history (compacting in batches of 5).
    for i in range(200):
        store.put("k", str(i).encode())
    compacted = store.compact_revision()
    assert store.revision() - 55 <= compacted <= store.revision() - 50
    assert len(store.changes(compacted)) == store.revision() - compacted
    with pytest.raises(CompactedError):
        store.changes(1)


def test_file_is_wal_with_synchronous_normal(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    with SqliteStore(path) as opened:
        opened.put("k", b"v")
        db = opened._db
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0] == 2


def test_reopen_keeps_data_and_revision(tmp_path: Path) -> None:
    path = tmp_path / "re.db"
    with SqliteStore(path) as first:
        first.put("k", b"v")
        revision = first.revision()
    with SqliteStore(path) as second:
        assert second.revision() == revision
        entry = second.get("k")
        assert entry is not None and entry.value == b"v"


def test_invalid_arguments(any_store: Store) -> None:
    with pytest.raises(ValueError):
        any_store.put("", b"v")
    with pytest.raises(TypeError):
        any_store.put("k", "v")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        any_store.put("k", b"v" * (1024 * 1024 + 1))
    with pytest.raises(ValueError):
        any_store.grant_lease(0)
    with pytest.raises(ValueError):
        any_store.put("k", b"v", lease=-3)


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_two_handles_share_revisions_and_cas(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        one: Store = SqliteStore(tmp_path / "shared.db")
        two: Store = SqliteStore(tmp_path / "shared.db")
    else:  # two clients of one namespace, each on its own connection
        first: EtcdStore = request.getfixturevalue("etcd_store")
        one = first
        two = EtcdStore(list(reversed(first.endpoints)), namespace=first.namespace)
    with one, two:
        start = one.revision()
        results: list[bool] = []
        barrier = threading.Barrier(2)

        def contend(store: Store) -> None:
            barrier.wait()
            results.append(store.put_if("lock", b"x", 0).succeeded)

        threads = [threading.Thread(target=contend, args=(s,)) for s in (one, two)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [False, True]
        assert one.revision() == two.revision() == start + 1
        two.put("other", b"y")
        assert one.revision() == start + 2


def test_put_many_writes_every_key_in_one_transaction(any_store: Store) -> None:
    before = any_store.revision()
    last = any_store.put_many([("/batch/a", b"1"), ("/batch/b", b"2")])
    # SQLite gives each key its revision, etcd one revision per transaction.
    assert before < last == any_store.revision()
    assert [e.value for e in any_store.range("/batch/").entries] == [b"1", b"2"]
    assert [c.key for c in any_store.changes(before, "/batch/")] == ["/batch/a", "/batch/b"]
    assert any_store.put_many([]) == last
