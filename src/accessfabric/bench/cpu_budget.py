"""Give a benchmark process a fixed share of a CPU, as if it ran on a machine of its own.

A chain of fabric nodes on one small machine measures the machine: on 2 cores, a source,
a relay and a destination that each want a whole core share 2 cores three ways, so a relay
that costs per byte what an end costs can never pass 2/3 of the direct figure, while on
real hosts (each node its own machine) the relay's cost overlaps with the ends'.  A CPU
bandwidth limit (CFS quota) of the same ``fraction`` of a core for every node process
gives each one an equal, fixed machine: the chain's throughput is then set by the most
expensive node per byte and by what the pipeline loses, which is what a relay benchmark
means to compare (docs/adr/0012-relay-bench-cpu-budget.md).

cgroup v2 (``cpu.max``) where the unified hierarchy has the cpu controller, else cgroup v1
(``cpu.cfs_quota_us``).  Needs root; :func:`unavailable_reason` says why not otherwise.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PERIOD_US = 5_000
"""CFS period: short, so a throttled node waits at most a few ms at a time (20 and 100 ms
periods gave the same direct figure but wider swings in the relayed ones)."""

_V2_ROOTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
_V1_ROOT = Path("/sys/fs/cgroup/cpu")


def _cgroup_root() -> tuple[Path, int] | None:
    for root in _V2_ROOTS:
        controllers = root / "cgroup.controllers"
        with contextlib.suppress(OSError):
            if "cpu" in controllers.read_text().split():
                return root, 2
    if (_V1_ROOT / "cpu.cfs_quota_us").exists():
        return _V1_ROOT, 1
    return None


def unavailable_reason() -> str | None:
    """Why budgets cannot be set here (``None`` when they can)."""
    if os.geteuid() != 0:
        return "CPU budgets need root (cgroup CPU quota)"
    if _cgroup_root() is None:
        return "no cgroup CPU controller is mounted (v2 cpu.max or v1 cpu.cfs_quota_us)"
    return None


class CpuBudget:
    """One cgroup limited to ``fraction`` of a CPU; processes are added with :meth:`add`."""

    def __init__(self, name: str, fraction: float) -> None:
        found = _cgroup_root()
        if found is None or os.geteuid() != 0:
            raise OSError(unavailable_reason())
        if not 0.01 <= fraction <= float(os.cpu_count() or 1):
            raise ValueError(f"CPU budget {fraction} outside 0.01..{os.cpu_count()} CPUs")
        root, self.version = found
        self.fraction = fraction
        self.path = root / f"accessfabric-bench-{os.getpid()}-{name}"
        self.path.mkdir()
        quota = max(1000, int(PERIOD_US * fraction))
        if self.version == 2:
            if "cpu" not in (root / "cgroup.subtree_control").read_text().split():
                (root / "cgroup.subtree_control").write_text("+cpu")
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def add(self, pid: int) -> None:
        """Move process ``pid`` (and the threads it starts from now on) into the budget."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_seconds(self) -> float:
        """Time the group's processes wanted to run but had used up their quota."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_usec":
                return int(value) / 1e6
            if key == "throttled_time":  # v1: nanoseconds
                return int(value) / 1e9
        return 0.0

    def close(self) -> None:
        """Remove the group; its processes (if any are left) go back to the parent."""
        parent = self.path.parent / "cgroup.procs"
        with contextlib.suppress(OSError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    parent.write_text(pid)
        with contextlib.suppress(OSError):
            self.path.rmdir()
