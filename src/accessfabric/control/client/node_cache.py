"""A node's on-disk cache of what the control plane told it, written atomically.

One JSON document per thing, in one directory (mode 0700)::

    record.json                   the signed node record (base64) and its revision
    policy.json                   the policy document of the last heartbeat reply
    directory.json                the last peer directory
    access.json                   the last access policy (signed grants, base64)
    routes/<service>.<class>.json the last route grant (signed leases, base64)
    services/<service>.json       the last service leases
    sync.json                     when the control plane last answered

Each write goes to a temporary file in the same directory, is fsynced, then renamed over
the old one, so a crash leaves the old document or the new one, never a torn file.
Signed blobs are verified again when read (the cache is not trusted more than the wire).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from accessfabric.control.kernel.vocabulary import check_name


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class NodeCache:
    """Reads and writes the cache documents; a missing or unreadable one reads as ``None``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _path(self, *parts: str) -> Path:
        return self.directory.joinpath(*parts)

    def read(self, *parts: str) -> dict[str, Any] | None:
        try:
            value = json.loads(self._path(*parts).read_bytes())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def write(self, document: dict[str, Any], *parts: str) -> None:
        write_atomically(self._path(*parts), json.dumps(document, sort_keys=True).encode())

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
