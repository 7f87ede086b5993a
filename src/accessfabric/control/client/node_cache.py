"""A node's on-disk cache of what the control plane told it, written atomically.

One JSON document per thing, in one directory (mode 0700)::

    record.json                   the signed node record (base64) and its revision
    policy.json                   the policy document of the last heartbeat reply
    directory.json                the last peer directory
    access.json                   the last access policy (signed grants, base64)
    routes/<service>.<class>.json the last route grant (signed leases, base64; a
                                  ROUTE_UPDATE's newer lease replaces its older one)
    services/<service>.json       the last service leases
    sync.json                     when the control plane last answered

Each write goes to a temporary file in the same directory, is fsynced, then renamed over
the old one, so a crash leaves the old document or the new one, never a torn file.
Signed blobs are verified again when read (the cache is not trusted more than the wire).

The documents are also held in memory (issue 17: a node read and parsed its record,
policy, directory and access policy from disk, and fsynced its policy and ``sync.json``,
on every heartbeat).  A read is served from memory while the file's ``stat`` still
matches what was written or read (a file changed or removed behind the node's back is
read again); a write whose bytes equal the held document's is skipped.  ``sync.json``
changes with every answer: it is held in memory and written (without fsync) at most
every :data:`SYNC_PERSIST_INTERVAL` seconds; after a crash it reads up to that much
older, or missing, which only makes the cache look older than it is.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accessfabric.control.kernel.vocabulary import check_name

SYNC_PERSIST_INTERVAL = 30.0
"""Seconds between two writes of ``sync.json`` (held in memory in between)."""
_LAZY = frozenset({("sync.json",)})
"""Documents written at most every :data:`SYNC_PERSIST_INTERVAL` seconds."""


def write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to a temporary file and rename it over ``path``; ``durable``: fsync
    it first (else a power loss may leave an empty file: fine for ``sync.json``)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class NodeCache:
    """Reads and writes the cache documents; a missing or unreadable one reads as ``None``.

    Documents returned by :meth:`read` are shared with the cache: treat them as read-only.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.directory = Path(directory)
        self._clock = clock
        self._held: dict[tuple[str, ...], tuple[tuple[int, int, int] | None, bytes, Any]] = {}
        """parts -> (the file's (inode, size, mtime_ns) when last written or read, its
        bytes, the parsed document)."""
        self._written_at: dict[tuple[str, ...], float] = {}
        """Lazily persisted documents -> when their file was last written."""
        self._pending: set[tuple[str, ...]] = set()
        """Lazily persisted documents held newer than their file."""
        self.durable = True
        """fsync every document but ``sync.json`` (``sim fleet``'s devices, hundreds per
        process on one disk, turn it off: their caches need not survive a power loss)."""
        self.disk_writes = 0
        """Files written (the work saved is measured: tests/control/test_node_cache.py)."""

    def _path(self, *parts: str) -> Path:
        return self.directory.joinpath(*parts)

    @staticmethod
    def _stat(path: Path) -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def read(self, *parts: str) -> dict[str, Any] | None:
        path = self._path(*parts)
        held = self._held.get(parts)
        if held is not None and (parts in self._pending or held[0] == self._stat(path)):
            value: Any = held[2]
        else:
            try:
                before = self._stat(path)
                data = path.read_bytes()
                value = json.loads(data)
            except (OSError, ValueError):
                self._held.pop(parts, None)
                return None
            if before is not None and before == self._stat(path):
                self._held[parts] = (before, data, value)
        return value if isinstance(value, dict) else None

    def write(self, document: dict[str, Any], *parts: str) -> None:
        data = json.dumps(document, sort_keys=True).encode()
        path = self._path(*parts)
        held = self._held.get(parts)
        if held is not None and held[1] == data and held[0] == self._stat(path):
            return  # this document is on disk already
        now = self._clock()
        written = self._written_at.get(parts)
        if (
            parts in _LAZY
            and held is not None
            and written is not None
            and now - written < SYNC_PERSIST_INTERVAL
            and (parts in self._pending or held[0] == self._stat(path))
        ):
            self._held[parts] = (held[0], data, json.loads(data))
            self._pending.add(parts)
            return
        self._store(parts, data, now)

    def _store(self, parts: tuple[str, ...], data: bytes, now: float) -> None:
        path = self._path(*parts)
        write_atomically(path, data, durable=self.durable and parts not in _LAZY)
        self.disk_writes += 1
        if parts in _LAZY:
            self._written_at[parts] = now
        self._pending.discard(parts)
        self._held[parts] = (self._stat(path), data, json.loads(data))

    def flush(self) -> None:
        """Write the lazily persisted documents that are held newer than their files."""
        for parts in list(self._pending):
            self._store(parts, self._held[parts][1], self._clock())

    @staticmethod
    def route_file(service: str, traffic_class: str) -> tuple[str, str]:
        check_name("service", service)
        return "routes", f"{service.replace('/', '_')}.{traffic_class}.json"

    @staticmethod
    def service_file(service: str) -> tuple[str, str]:
        check_name("service", service)
        return "services", f"{service.replace('/', '_')}.json"

    def route_documents(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self._path("routes").glob("*.json")):
            document = self.read("routes", path.name)
            if document is not None:
                out.append(document)
        return out

    def service_documents(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self._path("services").glob("*.json")):
            document = self.read("services", path.name)
            if document is not None:
                out.append(document)
        return out
