"""CPU and RSS of another process from ``/proc`` (Linux), for the fleet tool's live view."""

from __future__ import annotations

import os
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds ``pid`` used so far (``OSError`` once it is gone)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for {pid}")


class CpuMeter:
    """Percent of one core ``pid`` used since the previous :meth:`percent` call."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu = cpu_seconds(pid)
        self._at = time.monotonic()

    def percent(self) -> float:
        cpu, now = cpu_seconds(self.pid), time.monotonic()
        used = (cpu - self._cpu) / max(now - self._at, 1e-6) * 100
        self._cpu, self._at = cpu, now
        return used
