"""The control plane's store: one interface (:class:`Store`), SQLite now, etcd later."""

from __future__ import annotations

from accessfabric.control.store.base import (
    Change,
    ChangeKind,
    Clock,
    CompactedError,
    Entry,
    FutureRevisionError,
    LeaseNotFoundError,
    RangeResult,
    Store,
    StoreError,
    TxnResult,
)
from accessfabric.control.store.sqlite import SqliteStore

__all__ = [
    "Change",
    "ChangeKind",
    "Clock",
    "CompactedError",
    "Entry",
    "FutureRevisionError",
    "LeaseNotFoundError",
    "RangeResult",
    "SqliteStore",
    "Store",
    "StoreError",
    "TxnResult",
]
