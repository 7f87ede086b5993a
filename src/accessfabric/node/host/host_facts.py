"""Facts measured on the machine: CPU, run-queue wait, memory, file descriptors, battery.

Everything is read from Linux's own files — ``/proc/self/stat`` (process CPU time),
``/proc/stat`` (system CPU), ``/proc/thread-self/schedstat`` (how long the event loop's
thread was runnable but waited for a CPU), ``cpu.pressure`` of the node's cgroup (v2) or
``/proc/pressure/cpu`` (PSI), ``/proc/self/statm`` and ``/proc/meminfo`` (memory),
``/proc/self/fd`` and ``RLIMIT_NOFILE`` (descriptors) and a ``/sys/class/power_supply``
tree (battery, charging) — so the node needs no extra package.  A file that is missing
or unreadable gives ``None`` for its fact (a container without a battery, a kernel
without ``/proc/stat``): absent facts are reported as unknown, never guessed.

:class:`CpuSampler` and :class:`RunQueueSampler` keep the previous reading: a share is
a difference of two readings, so the first sample of a node reports 0.
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CGROUP_ROOT = Path("/sys/fs/cgroup")
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
class RunQueueShares:
    running: float
    """Seconds per wall second the thread ran (its CPU use)."""
    waiting: float
    """Seconds per wall second it was runnable but waited for a CPU."""


class RunQueueSampler:
    """Seconds per wall second the calling thread spent runnable but off the CPU.

    ``schedstat``'s second field (``run_delay``, ns) counts the time a task waited in a run
    queue — behind other tasks on its CPU, or throttled by its cgroup's CFS quota — and
    nothing else: a thread busy with its own work, or sleeping in ``epoll_wait``, adds
    nothing.  So it tells "starved by other work" apart from "busy", which the process's
    CPU share cannot.  Read from ``/proc/thread-self/schedstat``: :class:`HostMonitor`
    samples on the event loop's thread, the one whose waiting delays every frame.
    """

    def __init__(self, path: Path = Path("/proc/thread-self/schedstat")) -> None:
        self.path = path
        self._previous: tuple[int, int, float] | None = None
        self.available = True
        """False once the file could not be read (a kernel without schedstats)."""

    def _read_ns(self) -> tuple[int, int] | None:
        try:
            with open(self.path) as stat:
                fields = stat.read().split()
            return int(fields[0]), int(fields[1])
        except (OSError, IndexError, ValueError):
            return None

    def sample(self, now: float) -> RunQueueShares | None:
        """Shares since the previous sample (0 at the first); None: unreadable."""
        read = self._read_ns()
        if read is None:
            self.available = False
            return None
        ran = waited = 0.0
        previous = self._previous
        if previous is not None and now > previous[2]:
            seconds = now - previous[2]
            ran = max(0.0, (read[0] - previous[0]) / 1e9 / seconds)
            waited = max(0.0, (read[1] - previous[1]) / 1e9 / seconds)
        self._previous = (read[0], read[1], now)
        return RunQueueShares(ran, waited)


def cpu_pressure_path(proc: Path = Path("/proc"), cgroup_root: Path = CGROUP_ROOT) -> Path:
    """The node's cgroup's ``cpu.pressure`` (cgroup v2), else the system's PSI file."""
    with contextlib.suppress(OSError):
        for line in (proc / "self" / "cgroup").read_text().splitlines():
            if line.startswith("0::"):
                candidate = cgroup_root / line[3:].lstrip("/") / "cpu.pressure"
                if candidate.exists():
                    return candidate
    return proc / "pressure" / "cpu"


def read_cpu_psi(path: Path) -> float | None:
    """PSI's ``some avg10`` (share of the last 10 s in which some task of the cgroup, or
    of the system, waited for a CPU), 0..1; None where the kernel has no PSI."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("some "):
                for field in line.split()[1:]:
                    name, _, value = field.partition("=")
                    if name == "avg10":
                        return min(1.0, max(0.0, float(value) / 100))
    except (OSError, ValueError):
        return None
    return None


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
