"""Facts measured on the machine: CPU, memory, file descriptors, battery and charging.

Everything is read from Linux's own files — ``/proc/self/stat`` (process CPU time),
``/proc/stat`` (system CPU), ``/proc/self/statm`` and ``/proc/meminfo`` (memory),
``/proc/self/fd`` and ``RLIMIT_NOFILE`` (descriptors) and a ``/sys/class/power_supply``
tree (battery, charging) — so the node needs no extra package.  A file that is missing
or unreadable gives ``None`` for its fact (a container without a battery, a kernel
without ``/proc/stat``): absent facts are reported as unknown, never guessed.

:class:`CpuSampler` keeps the previous reading: a CPU share is a difference of two
readings, so the first sample of a node reports 0.
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MAX_SUPPLIES = 32
"""Entries of a power-supply tree read at most (a bound on a directory we do not own)."""


@dataclass(frozen=True, slots=True)
class CpuShares:
    process: float
    """This process's CPU time per wall second (1.0 = one core busy; the event loop is one)."""
    system: float | None
    """Busy share of all CPUs, 0..1 (``/proc/stat``); None when unreadable."""


class CpuSampler:
    """CPU shares since the previous :meth:`sample` (``proc``: the /proc root, for tests)."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self._process: tuple[float, float] | None = None
        self._system: tuple[int, int] | None = None

    def _process_seconds(self) -> float | None:
        try:
            text = (self.proc / "self" / "stat").read_text()
        except OSError:
            return None
        fields = text.rsplit(")", 1)[1].split()  # the name may hold spaces
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def _system_ticks(self) -> tuple[int, int] | None:
        try:
            with open(self.proc / "stat") as stat:
                first = stat.readline().split()
        except OSError:
            return None
        values = [int(v) for v in first[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return idle, sum(values[:8])

    def sample(self, now: float) -> CpuShares:
        process_share = 0.0
        seconds = self._process_seconds()
        if seconds is not None:
            if self._process is not None and now > self._process[1]:
                process_share = max(0.0, (seconds - self._process[0]) / (now - self._process[1]))
            self._process = (seconds, now)
        system_share: float | None = None
        ticks = self._system_ticks()
        if ticks is not None:
            if self._system is not None and ticks[1] > self._system[1]:
                idle = ticks[0] - self._system[0]
                total = ticks[1] - self._system[1]
                system_share = min(1.0, max(0.0, 1.0 - idle / total))
            self._system = ticks
        return CpuShares(process=process_share, system=system_share)


@dataclass(frozen=True, slots=True)
class MemoryFacts:
    process_rss_bytes: int | None
    system_total_bytes: int | None
    system_available_bytes: int | None

    @property
    def system_used(self) -> float | None:
        """Share of memory not available to new allocations (``1 - MemAvailable/MemTotal``)."""
        total, available = self.system_total_bytes, self.system_available_bytes
        if not total or available is None:
            return None
        return min(1.0, max(0.0, 1.0 - available / total))


def read_memory(proc: Path = Path("/proc")) -> MemoryFacts:
    rss: int | None = None
    with contextlib.suppress(OSError, IndexError, ValueError):
        rss = int((proc / "self" / "statm").read_text().split()[1]) * PAGE_SIZE
    info: dict[str, int] = {}
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("MemTotal", "MemAvailable"):
                info[name] = int(rest.split()[0]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return MemoryFacts(rss, info.get("MemTotal"), info.get("MemAvailable"))


@dataclass(frozen=True, slots=True)
class FdFacts:
    open: int
    limit: int | None
    """The soft ``RLIMIT_NOFILE``; None when unlimited."""

    @property
    def used(self) -> float:
        return 0.0 if not self.limit else min(1.0, self.open / self.limit)


def read_fds(proc: Path = Path("/proc")) -> FdFacts:
    try:
        count = len(os.listdir(proc / "self" / "fd"))
    except OSError:
        count = 0
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return FdFacts(count, None if soft == resource.RLIM_INFINITY else soft)


@dataclass(frozen=True, slots=True)
class PowerFacts:
    battery_percent: float | None
    """The battery's ``capacity`` (the lowest of several); None: no battery found."""
    charging: bool
    """A battery reports ``Charging``/``Full``, or an external supply is ``online``."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")[:64].strip()
    except OSError:
        return None


def read_power(root: Path) -> PowerFacts:
    """Battery and charging from a ``/sys/class/power_supply`` tree (``root``)."""
    try:
        entries = sorted(os.listdir(root))[:MAX_SUPPLIES]
    except OSError:
        return PowerFacts(None, False)
    levels: list[float] = []
    charging = False
    for name in entries:
        supply = root / name
        kind = _read(supply / "type")
        if kind == "Battery":
            capacity = _read(supply / "capacity")
            if capacity is not None and capacity.isdigit():
                levels.append(min(100.0, float(capacity)))
            if _read(supply / "status") in ("Charging", "Full"):
                charging = True
        elif kind is not None and _read(supply / "online") == "1":
            charging = True  # Mains, USB, Wireless: powered from outside
    return PowerFacts(min(levels) if levels else None, charging)
