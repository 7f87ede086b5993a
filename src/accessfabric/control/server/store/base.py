"""The ``Store`` interface: revisioned keys, TTL leases, compare-and-swap and a changes feed.

The semantics are etcd v3's (see ``docs/control.md`` and ADR 0006), so an etcd backend fits
behind the same calls:

* Every write that changes something gets the next value of one store-wide **revision**
  counter.  An entry remembers ``create_revision`` (the revision that created it),
  ``mod_revision`` (the revision of its last write: the fencing token) and ``version``
  (writes since creation; a delete resets it).  A fresh store is at revision 1, so the first
  write is revision 2 (as in etcd); callers must not depend on particular numbers.
* ``put_if(key, value, expected_mod_revision)`` is etcd's ``Txn(If(mod_revision(key) ==
  expected)).Then(Put)``; ``expected_mod_revision=0`` means "the key must not exist".
* A **lease** has a TTL in seconds.  Keys put with it disappear (as deletes, in the changes
  feed) when it expires or is revoked.  All keys of one lease go in one revision.
* The **changes feed** returns the changes after a revision; old changes are compacted and a
  request for them raises :class:`CompactedError` (etcd's ``ErrCompacted``).

Nothing here does I/O or imports asyncio; the asyncio wrapper and ``watch`` are in
:mod:`accessfabric.control.server.store.aio`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

Clock = Callable[[], float]
"""Seconds as a float; the store evaluates lease expiry against it (inject one in tests)."""

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1024 * 1024
"""etcd refuses requests over 1.5 MiB by default; 1 MiB per value fits every backend."""


class StoreError(Exception):
    """Base of the errors a store raises for a request it cannot serve."""


class LeaseNotFoundError(StoreError):
    """The lease does not exist: never granted, revoked, or expired (etcd: lease not found)."""

    def __init__(self, lease_id: int) -> None:
        self.lease_id = lease_id
        super().__init__(f"lease {lease_id:#x} not found (expired or revoked)")


class CompactedError(StoreError):
    """The changes after ``requested`` were compacted away; resync with a fresh ``range``.

    ``compact_revision`` is the revision up to which history is gone: the feed can answer
    ``changes(since_revision)`` only for ``since_revision >= compact_revision``.
    """

    def __init__(self, requested: int, compact_revision: int) -> None:
        self.requested = requested
        self.compact_revision = compact_revision
        super().__init__(
            f"changes after revision {requested} were compacted (history starts after "
            f"revision {compact_revision}); list the prefix again and watch from its revision"
        )


class StoreUnavailableError(StoreError):
    """The backend cannot answer now (etcd unreachable, no quorum, deadline passed).

    Nothing was read from stale state; a write may or may not have happened.  The control
    API answers 503 with this message as the reason.
    """


class FutureRevisionError(StoreError):
    """A revision beyond the store's current revision was asked for (etcd: future rev)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """One key's current value and metadata (etcd's ``KeyValue``)."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease_id: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class RangeResult:
    """The entries under a prefix, sorted by key (UTF-8 byte order), as of ``revision``.

    Watch from ``revision`` to see every later change: the list-then-watch pattern.
    """

    entries: tuple[Entry, ...]
    revision: int


@dataclass(frozen=True, kw_only=True, slots=True)
class TxnResult:
    """Outcome of a compare-and-swap.

    ``revision`` is the store revision after the request: the new entry's ``mod_revision``
    when ``succeeded``.  On failure ``current`` is the entry as it is now (``None`` when the
    key does not exist), so a retry loop needs no extra ``get``.
    """

    succeeded: bool
    revision: int
    current: Entry | None = None


class ChangeKind(enum.IntEnum):
    """What happened to a key (the numbers are those stored in the SQLite change log)."""

    PUT = 0
    DELETE = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class Change:
    """One event of the changes feed (etcd's watch ``Event``).

    For a ``DELETE``, ``value`` is empty, ``version`` and ``create_revision`` are 0 and
    ``lease_id`` is ``None``; ``revision`` is the revision of the delete.
    """

    kind: ChangeKind
    key: str
    value: bytes
    revision: int
    create_revision: int
    version: int
    lease_id: int | None


def validate_key(key: str) -> bytes:
    """The key's UTF-8 bytes; :class:`ValueError` if it is empty, too long or not a str."""
    if not isinstance(key, str):
        raise TypeError(f"store keys are str, not {type(key).__name__}")
    raw = key.encode("utf-8")
    if not raw:
        raise ValueError("store keys must not be empty")
    if len(raw) > MAX_KEY_BYTES:
        raise ValueError(f"store key longer than {MAX_KEY_BYTES} bytes")
    return raw


def validate_value(value: bytes) -> bytes:
    """``value`` itself; :class:`TypeError`/:class:`ValueError` if it is not small bytes."""
    if not isinstance(value, bytes):
        raise TypeError(f"store values are bytes, not {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise ValueError(f"store value longer than {MAX_VALUE_BYTES} bytes")
    return value


def prefix_range_end(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``.

    etcd's ``GetPrefixRangeEnd``: increment the last byte that is not 0xff, drop the rest.
    ``None`` means no upper bound (empty prefix, or all 0xff).
    """
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return None


class Store(ABC):
    """Revisioned key-value store with TTL leases, CAS and a changes feed.

    Implementations are thread-safe.  Every call first applies lease expiry due at the
    store's clock, so no call ever returns a key whose lease has expired.
    """

    @abstractmethod
    def revision(self) -> int:
        """The current store revision (the revision of the latest write)."""

    @abstractmethod
    def get(self, key: str) -> Entry | None:
        """The entry at ``key``, or ``None``."""

    @abstractmethod
    def range(self, prefix: str) -> RangeResult:
        """Every entry whose key starts with ``prefix`` ("" for all), sorted by key."""

    @abstractmethod
    def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        """Write ``value`` at ``key``; return the new revision.

        ``lease`` attaches the key to a lease; a put without one detaches it (as in etcd).
        Raises :class:`LeaseNotFoundError` for an unknown or expired lease.
        """

    def put_many(self, items: list[tuple[str, bytes]]) -> int:
        """Write several keys (no lease) in one transaction where the backend has one
        (etcd: one txn); the last revision, or the current one for no items."""
        revision = self.revision()
        for key, value in items:
            revision = self.put(key, value)
        return revision

    @abstractmethod
    def put_if(
        self, key: str, value: bytes, expected_mod_revision: int, *, lease: int | None = None
    ) -> TxnResult:
        """Write only if ``key``'s ``mod_revision`` is ``expected_mod_revision`` (0: absent)."""

    @abstractmethod
    def delete(self, key: str) -> int | None:
        """Delete ``key``; the revision of the delete, or ``None`` if there was no such key."""

    @abstractmethod
    def delete_if(self, key: str, expected_mod_revision: int) -> TxnResult:
        """Delete only if ``key`` exists with this ``mod_revision`` (for fenced step-down)."""

    @abstractmethod
    def grant_lease(self, ttl: float) -> int:
        """A new lease that expires ``ttl`` seconds from now unless kept alive; its id (> 0).

        Backends may round ``ttl`` up (etcd grants whole seconds and has a minimum): a lease
        lives *at least* ``ttl`` seconds after each grant or keepalive.
        """

    @abstractmethod
    def keepalive(self, lease_id: int) -> float:
        """Restart the lease's TTL; return the TTL.  :class:`LeaseNotFoundError` if gone."""

    @abstractmethod
    def time_to_live(self, lease_id: int) -> float:
        """Seconds until the lease expires.  :class:`LeaseNotFoundError` if gone."""

    @abstractmethod
    def revoke(self, lease_id: int) -> int | None:
        """End the lease now and delete its keys (in one revision, returned; ``None`` if it
        had no keys).  :class:`LeaseNotFoundError` if gone."""

    @abstractmethod
    def changes(self, since_revision: int, prefix: str = "") -> list[Change]:
        """Changes to keys under ``prefix`` with revision > ``since_revision``, in order.

        Raises :class:`CompactedError` when ``since_revision`` is older than the retained
        history, and :class:`FutureRevisionError` when it is beyond :meth:`revision`.
        """

    @abstractmethod
    def compact(self, revision: int) -> None:
        """Forget the changes at and before ``revision`` (current values are kept)."""

    @abstractmethod
    def compact_revision(self) -> int:
        """The revision up to which the changes feed has been compacted."""

    @abstractmethod
    def close(self) -> None:
        """Release the backend's resources; the store is unusable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
