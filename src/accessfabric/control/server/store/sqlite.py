"""``SqliteStore``: the embedded :class:`~accessfabric.control.server.store.base.Store` (one file).

* WAL journal, ``synchronous=NORMAL`` (a commit is durable once the WAL is checkpointed or
  fsynced; a power cut can lose the last transactions but never corrupts the file), one
  connection per store used under a lock.  Every write is one ``BEGIN IMMEDIATE``
  transaction, so several processes may open the same file: SQLite serialises writers and
  the revision counter lives in the file.
* WAL checkpoints (the only fsyncs under ``synchronous=NORMAL``) run every second in a
  background thread on a second connection, not inside a writer's commit: that cuts the
  p99 of a put from ~4 ms to ~0.2 ms on the development VM (``docs/control.md``).
* Keys are stored as UTF-8 BLOBs so ranges sort by bytes, as in etcd.
* The change log keeps the last ``history`` revisions; older ones are compacted in batches.
* Lease expiry is checked at the start of every call against the injected clock.  Leases
  keep their expiry across restarts; a process that becomes the serving control plane
  calls :meth:`SqliteStore.refresh_leases` (etcd extends every lease on leader election
  for the same reason: holders could not keep alive while nobody served).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from accessfabric.control.server.store.base import (
    Change,
    ChangeKind,
    Clock,
    CompactedError,
    Entry,
    FutureRevisionError,
    LeaseNotFoundError,
    RangeResult,
    Store,
    TxnResult,
    prefix_range_end,
    validate_key,
    validate_value,
)

SCHEMA_VERSION = 1
DEFAULT_HISTORY = 100_000
"""Revisions of change log kept; a watcher further behind must list again."""
BUSY_TIMEOUT_MS = 5_000
DEFAULT_CHECKPOINT_INTERVAL = 1.0
"""Seconds between WAL checkpoints, run off the write path (see :class:`WalCheckpointer`)."""
_MAX_LEASE_ID = (1 << 63) - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease_id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease_id) WHERE lease_id != 0;
CREATE TABLE IF NOT EXISTS leases (
    lease_id INTEGER PRIMARY KEY,
    ttl REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY,
    revision INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_revision ON changes (revision);
INSERT OR IGNORE INTO meta (name, value) VALUES
    ('schema_version', 1), ('revision', 1), ('compact_revision', 0);
"""

_EntryRow = tuple[bytes, bytes, int, int, int, int]


class SqliteStore(Store):
    """A :class:`Store` in one SQLite file (``":memory:"`` works too, for throwaway use)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = time.time,
        history: int = DEFAULT_HISTORY,
        checkpoint_interval: float | None = DEFAULT_CHECKPOINT_INTERVAL,
    ) -> None:
        if history < 1:
            raise ValueError("history must keep at least one revision")
        self._clock = clock
        self._history = history
        self._compact_slack = max(1, history // 10)
        self._lock = threading.RLock()
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            os.fspath(path),
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        with self._lock:
            self._db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        version = self._meta("schema_version")
        if version != SCHEMA_VERSION:
            self._db.close()
            raise ValueError(f"{path}: store schema version {version}, expected {SCHEMA_VERSION}")
        self._checkpointer: WalCheckpointer | None = None
        if str(path) != ":memory:" and checkpoint_interval is not None:
            self._db.execute("PRAGMA wal_autocheckpoint = 0")
            self._checkpointer = WalCheckpointer(path, checkpoint_interval)

    # -- transactions -------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[None]:
        """A read transaction, after expiring due leases (a write, only when some are due)."""
        with self._lock:
            if self._expiry_due():
                with self._write():
                    self._expire_leases()
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.execute("COMMIT")

    @contextmanager
    def _write_after_expiry(self) -> Iterator[None]:
        with self._write():
            self._expire_leases()
            yield

    def _meta(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def _set_meta(self, name: str, value: int) -> None:
        self._db.execute("UPDATE meta SET value = ? WHERE name = ?", (value, name))

    def _next_revision(self) -> int:
        revision = self._meta("revision") + 1
        self._set_meta("revision", revision)
        return revision

    # -- leases -------------------------------------------------------------------------

    def _expiry_due(self) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM leases WHERE expires_at <= ? LIMIT 1", (self._clock(),)
        ).fetchone()
        return row is not None

    def _expire_leases(self) -> None:
        rows = self._db.execute(
            "SELECT lease_id FROM leases WHERE expires_at <= ? ORDER BY expires_at, lease_id",
            (self._clock(),),
        ).fetchall()
        for (lease_id,) in rows:
            self._revoke(lease_id)

    def _revoke(self, lease_id: int) -> int | None:
        self._db.execute("DELETE FROM leases WHERE lease_id = ?", (lease_id,))
        keys = [
            row[0]
            for row in self._db.execute(
                "SELECT key FROM kv WHERE lease_id = ? ORDER BY key", (lease_id,)
            )
        ]
        if not keys:
            return None
        revision = self._next_revision()
        for key in keys:
            self._delete_row(key, revision)
        self._maybe_compact(revision)
        return revision

    def _lease_row(self, lease_id: int) -> tuple[float, float]:
        row = self._db.execute(
            "SELECT ttl, expires_at FROM leases WHERE lease_id = ?", (lease_id,)
        ).fetchone()
        if row is None:
            raise LeaseNotFoundError(lease_id)
        return float(row[0]), float(row[1])

    def grant_lease(self, ttl: float) -> int:
        if not ttl > 0:
            raise ValueError("lease ttl must be positive")
        with self._write_after_expiry():
            while True:
                lease_id = secrets.randbelow(_MAX_LEASE_ID) + 1
                exists = self._db.execute(
                    "SELECT 1 FROM leases WHERE lease_id = ?", (lease_id,)
                ).fetchone()
                if exists is None:
                    break
            self._db.execute(
                "INSERT INTO leases (lease_id, ttl, expires_at) VALUES (?, ?, ?)",
                (lease_id, float(ttl), self._clock() + ttl),
            )
        return lease_id

    def keepalive(self, lease_id: int) -> float:
        with self._write_after_expiry():
            ttl, _ = self._lease_row(lease_id)
            self._db.execute(
                "UPDATE leases SET expires_at = ? WHERE lease_id = ?",
                (self._clock() + ttl, lease_id),
            )
        return ttl

    def time_to_live(self, lease_id: int) -> float:
        with self._read():
            _, expires_at = self._lease_row(lease_id)
        return max(0.0, expires_at - self._clock())

    def revoke(self, lease_id: int) -> int | None:
        with self._write_after_expiry():
            self._lease_row(lease_id)
            return self._revoke(lease_id)

    def refresh_leases(self) -> int:
        """Give every live lease a full TTL from now; the number of leases refreshed.

        Call once when this process starts serving (etcd does this on leader election).
        """
        with self._write():
            cursor = self._db.execute(
                "UPDATE leases SET expires_at = ? + ttl WHERE expires_at > ?",
                (self._clock(), self._clock()),
            )
            return cursor.rowcount

    # -- keys ---------------------------------------------------------------------------

    def revision(self) -> int:
        with self._read():
            return self._meta("revision")

    def _entry_row(self, raw_key: bytes) -> _EntryRow | None:
        row: _EntryRow | None = self._db.execute(
            "SELECT key, value, create_revision, mod_revision, version, lease_id "
            "FROM kv WHERE key = ?",
            (raw_key,),
        ).fetchone()
        return row

    def get(self, key: str) -> Entry | None:
        raw = validate_key(key)
        with self._read():
            row = self._entry_row(raw)
        return None if row is None else _entry(row)

    def range(self, prefix: str) -> RangeResult:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        low = prefix.encode("utf-8")
        high = prefix_range_end(low)
        query = (
            "SELECT key, value, create_revision, mod_revision, version, lease_id FROM kv "
            "WHERE key >= ?"
        )
        params: tuple[bytes, ...] = (low,)
        if high is not None:
            query += " AND key < ?"
            params = (low, high)
        with self._read():
            rows = self._db.execute(query + " ORDER BY key", params).fetchall()
            revision = self._meta("revision")
        return RangeResult(entries=tuple(_entry(row) for row in rows), revision=revision)

    def _check_lease(self, lease: int | None) -> int:
        if lease is None:
            return 0
        if isinstance(lease, bool) or not isinstance(lease, int) or lease <= 0:
            raise ValueError(f"lease must be a positive lease id, got {lease!r}")
        self._lease_row(lease)
        return lease

    def _put_row(self, raw_key: bytes, value: bytes, lease_id: int, revision: int) -> None:
        old = self._entry_row(raw_key)
        create_revision, version = (revision, 1) if old is None else (old[2], old[4] + 1)
        self._db.execute(
            "INSERT OR REPLACE INTO kv "
            "(key, value, create_revision, mod_revision, version, lease_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (raw_key, value, create_revision, revision, version, lease_id),
        )
        self._log(ChangeKind.PUT, raw_key, value, revision, create_revision, version, lease_id)

    def _delete_row(self, raw_key: bytes, revision: int) -> None:
        self._db.execute("DELETE FROM kv WHERE key = ?", (raw_key,))
        self._log(ChangeKind.DELETE, raw_key, b"", revision, 0, 0, 0)

    def _log(
        self,
        kind: ChangeKind,
        raw_key: bytes,
        value: bytes,
        revision: int,
        create_revision: int,
        version: int,
        lease_id: int,
    ) -> None:
        self._db.execute(
            "INSERT INTO changes "
            "(revision, kind, key, value, create_revision, version, lease_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (revision, int(kind), raw_key, value, create_revision, version, lease_id),
        )

    def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        raw = validate_key(key)
        validate_value(value)
        with self._write_after_expiry():
            lease_id = self._check_lease(lease)
            revision = self._next_revision()
            self._put_row(raw, value, lease_id, revision)
            self._maybe_compact(revision)
        return revision

    def put_many(self, items: list[tuple[str, bytes]]) -> int:
        """Several puts (no lease) in one SQLite transaction: one commit, not one each."""
        rows = [(validate_key(key), validate_value(value)) for key, value in items]
        if not rows:
            return self.revision()
        with self._write_after_expiry():
            revision = 0
            for raw, value in rows:
                revision = self._next_revision()
                self._put_row(raw, value, 0, revision)
            self._maybe_compact(revision)
        return revision

    def put_if(
        self, key: str, value: bytes, expected_mod_revision: int, *, lease: int | None = None
    ) -> TxnResult:
        raw = validate_key(key)
        validate_value(value)
        _check_expected(expected_mod_revision)
        with self._write_after_expiry():
            lease_id = self._check_lease(lease)
            row = self._entry_row(raw)
            if (0 if row is None else row[3]) != expected_mod_revision:
                return TxnResult(
                    succeeded=False,
                    revision=self._meta("revision"),
                    current=None if row is None else _entry(row),
                )
            revision = self._next_revision()
            self._put_row(raw, value, lease_id, revision)
            self._maybe_compact(revision)
        return TxnResult(succeeded=True, revision=revision)

    def delete(self, key: str) -> int | None:
        raw = validate_key(key)
        with self._write_after_expiry():
            if self._entry_row(raw) is None:
                return None
            revision = self._next_revision()
            self._delete_row(raw, revision)
            self._maybe_compact(revision)
        return revision

    def delete_if(self, key: str, expected_mod_revision: int) -> TxnResult:
        raw = validate_key(key)
        _check_expected(expected_mod_revision)
        with self._write_after_expiry():
            row = self._entry_row(raw)
            if row is None or row[3] != expected_mod_revision:
                return TxnResult(
                    succeeded=False,
                    revision=self._meta("revision"),
                    current=None if row is None else _entry(row),
                )
            revision = self._next_revision()
            self._delete_row(raw, revision)
            self._maybe_compact(revision)
        return TxnResult(succeeded=True, revision=revision)

    # -- changes feed -------------------------------------------------------------------

    def changes(self, since_revision: int, prefix: str = "") -> list[Change]:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        low = prefix.encode("utf-8")
        high = prefix_range_end(low)
        query = (
            "SELECT kind, key, value, revision, create_revision, version, lease_id "
            "FROM changes WHERE revision > ? AND key >= ?"
        )
        params: tuple[int | bytes, ...] = (since_revision, low)
        if high is not None:
            query += " AND key < ?"
            params = (since_revision, low, high)
        with self._read():
            compacted = self._meta("compact_revision")
            current = self._meta("revision")
            if since_revision < compacted:
                raise CompactedError(since_revision, compacted)
            if since_revision > current:
                raise FutureRevisionError(
                    f"revision {since_revision} is beyond the current revision {current}"
                )
            rows = self._db.execute(query + " ORDER BY seq", params).fetchall()
        return [
            Change(
                kind=ChangeKind(kind),
                key=raw_key.decode("utf-8"),
                value=value,
                revision=revision,
                create_revision=create_revision,
                version=version,
                lease_id=lease_id or None,
            )
            for kind, raw_key, value, revision, create_revision, version, lease_id in rows
        ]

    def compact(self, revision: int) -> None:
        with self._write_after_expiry():
            current = self._meta("revision")
            if revision > current:
                raise FutureRevisionError(
                    f"cannot compact at {revision}: the current revision is {current}"
                )
            if revision > self._meta("compact_revision"):
                self._compact(revision)

    def compact_revision(self) -> int:
        with self._read():
            return self._meta("compact_revision")

    def _compact(self, revision: int) -> None:
        self._db.execute("DELETE FROM changes WHERE revision <= ?", (revision,))
        self._set_meta("compact_revision", revision)

    def _maybe_compact(self, revision: int) -> None:
        """Keep the last ``history`` revisions, compacting in batches of ``history // 10``."""
        if revision - self._meta("compact_revision") > self._history + self._compact_slack:
            self._compact(revision - self._history)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            self._db.close()


def _entry(row: _EntryRow) -> Entry:
    raw_key, value, create_revision, mod_revision, version, lease_id = row
    return Entry(
        key=raw_key.decode("utf-8"),
        value=value,
        create_revision=create_revision,
        mod_revision=mod_revision,
        version=version,
        lease_id=lease_id or None,
    )


def _check_expected(expected_mod_revision: int) -> None:
    if isinstance(expected_mod_revision, bool) or not isinstance(expected_mod_revision, int):
        raise TypeError("expected_mod_revision must be an int")
    if expected_mod_revision < 0:
        raise ValueError("expected_mod_revision must be >= 0 (0: the key must not exist)")


class WalCheckpointer:
    """A daemon thread that checkpoints the WAL every ``interval`` seconds.

    It uses its own connection and ``PASSIVE`` checkpoints, which never block writers;
    :meth:`stop` runs a final ``TRUNCATE`` checkpoint so a closed store leaves a small WAL.
    """

    def __init__(self, path: str | os.PathLike[str], interval: float) -> None:
        if not interval > 0:
            raise ValueError("checkpoint interval must be positive")
        self._path = os.fspath(path)
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"wal-checkpoint {self._path}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            while not self._stopping.wait(self._interval):
                _checkpoint(db, "PASSIVE")
            _checkpoint(db, "TRUNCATE")
        finally:
            db.close()

    def stop(self) -> None:
        """Stop the thread after one last checkpoint; wait for it."""
        self._stopping.set()
        self._thread.join()


def _checkpoint(db: sqlite3.Connection, mode: str) -> None:
    with contextlib.suppress(sqlite3.OperationalError):  # busy: the next round catches up
        db.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
