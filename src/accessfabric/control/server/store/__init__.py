"""The control plane's store: one interface (:class:`Store`); SQLite embedded, etcd for replicas.

The etcd backend (:mod:`accessfabric.control.server.store.etcd`) is imported on demand: it needs
the optional ``etcd`` extra.
"""

from __future__ import annotations

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
    StoreError,
    StoreUnavailableError,
    TxnResult,
)
from accessfabric.control.server.store.sqlite import SqliteStore

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
    "StoreUnavailableError",
    "TxnResult",
]
