"""Name, list and delete the network namespaces of the harness.

A namespace is named ``{prefix}-{pid}-{tag}-{host}``: ``pid`` is the process that
owns it and ``tag`` a random hex string, so concurrent runs never collide and a
leftover whose owner is dead can be recognised and removed safely.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from dataclasses import dataclass

from accessfabric.sim.commands import CommandError, run_command

PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
HOST_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class NamespaceName:
    prefix: str
    pid: int
    tag: str
    host: str

    def __str__(self) -> str:
        return f"{self.prefix}-{self.pid}-{self.tag}-{self.host}"

    @classmethod
    def parse(cls, name: str) -> NamespaceName | None:
        parts = name.split("-", 3)
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        return cls(prefix=parts[0], pid=int(parts[1]), tag=parts[2], host=parts[3])


def check_prefix(prefix: str) -> str:
    if not PREFIX_RE.match(prefix):
        raise ValueError(f"prefix {prefix!r} must match {PREFIX_RE.pattern}")
    return prefix


def check_host(host: str) -> str:
    if not HOST_RE.match(host):
        raise ValueError(f"host name {host!r} must match {HOST_RE.pattern}")
    return host


def list_namespaces() -> list[str]:
    """Names of every named network namespace (``ip netns list``)."""
    out = run_command(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_namespace_processes(ns: str) -> None:
    """SIGKILL every process still running inside ``ns``."""
    out = run_command(["ip", "netns", "pids", ns], check=False).stdout
    for word in out.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(word), signal.SIGKILL)


def delete_namespace(ns: str) -> None:
    """Kill what runs in ``ns`` and delete it (with its veths and nft tables)."""
    kill_namespace_processes(ns)
    try:
        run_command(["ip", "netns", "del", ns])
    except CommandError:
        if ns in list_namespaces():
            raise


def stale_namespaces(prefix: str) -> list[str]:
    """Namespaces of ``prefix`` whose owning process is gone."""
    check_prefix(prefix)
    stale = []
    for name in list_namespaces():
        parsed = NamespaceName.parse(name)
        if parsed and parsed.prefix == prefix and not process_alive(parsed.pid):
            stale.append(name)
    return stale
