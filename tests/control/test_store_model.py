"""Property test: SqliteStore behaves like a tiny in-memory model under random operations."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accessfabric.control.server.store import (
    Change,
    ChangeKind,
    CompactedError,
    Entry,
    LeaseNotFoundError,
    SqliteStore,
    TxnResult,
)
from tests.control.conftest import FakeClock

KEYS = ["/a", "/a/1", "/a/2", "/b/1", "/\u00e9"]
PREFIXES = ["", "/a", "/a/", "/b/", "/c"]


@dataclass
class Model:
    """The reference semantics, written for obviousness rather than speed."""

    now: float = 1_000.0
    revision: int = 1
    compacted: int = 0
    kv: dict[str, Entry] = field(default_factory=dict)
    leases: dict[int, tuple[float, float]] = field(default_factory=dict)  # id -> (ttl, expiry)
    log: list[Change] = field(default_factory=list)

    def expire(self) -> None:
        due = sorted((exp, lid) for lid, (_, exp) in self.leases.items() if exp <= self.now)
        for _, lease_id in due:
            self.revoke(lease_id)

    def revoke(self, lease_id: int) -> int | None:
        del self.leases[lease_id]
        keys = sorted(
            (k for k, e in self.kv.items() if e.lease_id == lease_id), key=lambda k: k.encode()
        )
        if not keys:
            return None
        self.revision += 1
        for key in keys:
            self.delete_key(key)
        return self.revision

    def delete_key(self, key: str) -> None:
        del self.kv[key]
        self.log.append(
            Change(
                kind=ChangeKind.DELETE,
                key=key,
                value=b"",
                revision=self.revision,
                create_revision=0,
                version=0,
                lease_id=None,
            )
        )

    def put(self, key: str, value: bytes, lease: int | None) -> int:
        if lease is not None and lease not in self.leases:
            raise LeaseNotFoundError(lease)
        self.revision += 1
        old = self.kv.get(key)
        entry = Entry(
            key=key,
            value=value,
            create_revision=self.revision if old is None else old.create_revision,
            mod_revision=self.revision,
            version=1 if old is None else old.version + 1,
            lease_id=lease,
        )
        self.kv[key] = entry
        self.log.append(
            Change(
                kind=ChangeKind.PUT,
                key=key,
                value=value,
                revision=self.revision,
                create_revision=entry.create_revision,
                version=entry.version,
                lease_id=lease,
            )
        )
        return self.revision

    def changes(self, since: int, prefix: str) -> list[Change]:
        if since < self.compacted:
            raise CompactedError(since, self.compacted)
        return [c for c in self.log if c.revision > since and c.key.startswith(prefix)]


operation = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(max_size=4), st.integers(-1, 3)),
    st.tuples(st.just("put_if"), st.sampled_from(KEYS), st.binary(max_size=4), st.integers(-2, 4)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("delete_if"), st.sampled_from(KEYS), st.integers(-2, 4)),
    st.tuples(st.just("grant"), st.sampled_from([1.0, 2.5, 5.0])),
    st.tuples(st.just("keepalive"), st.integers(0, 3)),
    st.tuples(st.just("revoke"), st.integers(0, 3)),
    st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 3.0])),
    st.tuples(st.just("compact"), st.integers(0, 3)),
    st.tuples(st.just("get"), st.sampled_from(KEYS)),
    st.tuples(st.just("range"), st.sampled_from(PREFIXES)),
    st.tuples(st.just("changes"), st.integers(0, 40), st.sampled_from(PREFIXES)),
)


def _lease(granted: list[int], index: int) -> int | None:
    return granted[index] if 0 <= index < len(granted) else None


def _expected(model: Model, key: str, choice: int) -> int:
    """-2: must not exist (0); -1: a wrong revision; n >= 0: the current or a past one."""
    current = model.kv.get(key)
    if choice == -2:
        return 0
    if choice == -1:
        return model.revision + 7
    if current is None:
        return choice  # 0 matches "absent", others fail
    return current.mod_revision if choice % 2 == 0 else max(0, current.mod_revision - choice)


def _apply(store: SqliteStore, model: Model, granted: list[int], op: tuple[Any, ...]) -> None:
    name = op[0]
    if name == "advance":
        model.now += op[1]
        return
    model.expire()
    if name == "put":
        lease = _lease(granted, op[3])
        try:
            want: Any = model.put(op[1], op[2], lease)
        except LeaseNotFoundError:
            with pytest.raises(LeaseNotFoundError):
                store.put(op[1], op[2], lease=lease)
            return
        assert store.put(op[1], op[2], lease=lease) == want
    elif name == "put_if":
        expected = _expected(model, op[1], op[3])
        current = model.kv.get(op[1])
        if (0 if current is None else current.mod_revision) == expected:
            want = TxnResult(succeeded=True, revision=model.put(op[1], op[2], None))
        else:
            want = TxnResult(succeeded=False, revision=model.revision, current=current)
        assert store.put_if(op[1], op[2], expected) == want
    elif name == "delete":
        want = None
        if op[1] in model.kv:
            model.revision += 1
            model.delete_key(op[1])
            want = model.revision
        assert store.delete(op[1]) == want
    elif name == "delete_if":
        expected = _expected(model, op[1], op[2])
        current = model.kv.get(op[1])
        if current is not None and current.mod_revision == expected:
            model.revision += 1
            model.delete_key(op[1])
            want = TxnResult(succeeded=True, revision=model.revision)
        else:
            want = TxnResult(succeeded=False, revision=model.revision, current=current)
        assert store.delete_if(op[1], expected) == want
    elif name == "grant":
        lease_id = store.grant_lease(op[1])
        granted.append(lease_id)
        model.leases[lease_id] = (op[1], model.now + op[1])
    elif name in ("keepalive", "revoke"):
        lease = _lease(granted, op[1])
        if lease is None:
            return
        if lease not in model.leases:
            with pytest.raises(LeaseNotFoundError):
                getattr(store, name)(lease)
            return
        if name == "keepalive":
            ttl, _ = model.leases[lease]
            model.leases[lease] = (ttl, model.now + ttl)
            assert store.keepalive(lease) == ttl
        else:
            assert store.revoke(lease) == model.revoke(lease)
    elif name == "compact":
        target = max(model.compacted, model.revision - op[1])
        store.compact(target)
        model.compacted = target
        model.log = [c for c in model.log if c.revision > target]
    elif name == "get":
        assert store.get(op[1]) == model.kv.get(op[1])
    elif name == "range":
        result = store.range(op[1])
        wanted = sorted(
            (e for k, e in model.kv.items() if k.startswith(op[1])), key=lambda e: e.key.encode()
        )
        assert result.entries == tuple(wanted)
        assert result.revision == model.revision
    elif name == "changes":
        since = min(op[1], model.revision)
        try:
            want = model.changes(since, op[2])
        except CompactedError:
            with pytest.raises(CompactedError):
                store.changes(since, op[2])
            return
        assert store.changes(since, op[2]) == want


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=40))
def test_sqlite_store_matches_model(ops: list[tuple[Any, ...]]) -> None:
    model = Model()
    clock = FakeClock(model.now)
    granted: list[int] = []
    with tempfile.TemporaryDirectory() as directory:
        history = 10_000  # compaction here comes only from explicit compact() calls
        with SqliteStore(
            Path(directory) / "m.db", clock=clock, history=history, checkpoint_interval=None
        ) as store:
            for op in ops:
                _apply(store, model, granted, op)
                clock.now = model.now
            model.expire()
            assert store.range("").entries == tuple(
                sorted(model.kv.values(), key=lambda e: e.key.encode())
            )
            assert store.revision() == model.revision
