"""Give the C allocator's free memory back to the system after a connection flood.

Measured (docs/benchmarks.md "Abuse"): after a flood of 2000 TLS connections the node's
Python objects are all freed (``tracemalloc``: under 1 MB left), yet RSS stays near the
flood's peak, because glibc keeps the freed TLS buffers (256 KiB receive buffer and
OpenSSL's state per connection) in its heap for reuse.  ``malloc_trim(0)`` returns those
pages (RSS back within ~20 MB of the start).  :class:`AllocatorTrim` calls it once a flood
has subsided: after at least ``churn`` handshakes ended and none for ``quiet`` seconds.
Without glibc (musl, macOS) it does nothing.

:func:`keep_large_blocks` fixes glibc's thresholds for the data path (ADR 0041): by
default a block over 128 KiB is mapped on ``malloc`` and unmapped on ``free`` (a
dynamic threshold that moves with what was freed) and the heap top is given back
above twice that, so the large ``bytes`` the fabric makes for a reader (a read of
everything buffered, 256 KiB to MiBs) or the carrier (a 128 KiB batch) were fresh
memory again and again: page faults and the kernel clearing pages per allocation.
Fixed at 8 MiB (mapping) and 16 MiB (trim), such blocks are reused from the heap; a
process keeps at most 16 MiB of free heap top beyond what it uses (``AllocatorTrim``
still hands it back after a connection flood).  Measured in ``bench carrier``'s
unpaced transfer: receiver page faults ~250 -> ~8 per MiB, receiver CPU about
-30 % (docs/benchmarks.md, "Issue 18: receive path").
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

DEFAULT_CHURN = 256
DEFAULT_QUIET = 2.0

MMAP_THRESHOLD = 8 << 20
"""Blocks at least this large are mapped and unmapped per allocation (glibc: 128 KiB,
raised dynamically up to 32 MiB by what is freed)."""
TRIM_THRESHOLD = 16 << 20
"""Free heap top kept for reuse before it is given back to the system (glibc: 128 KiB)."""
_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once per process: ``find_library`` runs ``ldconfig -p``
    in a subprocess (a fork of the whole process), and every node runtime of a fleet
    worker looked it up twice at its start, stalling the worker's loop (issue 17)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def keep_large_blocks(
    mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD
) -> bool:
    """Let glibc reuse freed blocks up to ``mmap_threshold`` instead of mapping fresh pages;
    whether it was set (False without glibc, or when the environment already tunes it)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(name in os.environ for name in _ENVIRONMENT) or "threshold" in tunables:
        return False  # the operator's choice wins
    libc = _libc()
    if libc is None:
        return False
    try:
        mallopt: Callable[[int, int], int] = libc.mallopt
    except AttributeError:
        return False
    # Trim first: setting either turns off the dynamic mmap threshold.
    return bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold)) and bool(
        mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    )


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    libc = _libc()
    if libc is None:
        return None
    try:
        trim: Callable[[int], int] = libc.malloc_trim
    except AttributeError:
        return None
    return trim


class AllocatorTrim:
    """Trim the C heap once ``churn`` connections have ended and ``quiet`` seconds passed
    without another ending."""

    def __init__(self, churn: int = DEFAULT_CHURN, quiet: float = DEFAULT_QUIET) -> None:
        self._trim = _glibc_malloc_trim()
        self._churn = churn
        self._quiet = quiet
        self._ended = 0
        self._timer: asyncio.TimerHandle | None = None
        self.trims = 0

    def connection_ended(self) -> None:
        if self._trim is None:
            return
        self._ended += 1
        if self._ended < self._churn:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._quiet, self._run)

    def _run(self) -> None:
        self._timer = None
        self._ended = 0
        if self._trim is not None:
            self._trim(0)
            self.trims += 1
            log.debug("returned free allocator memory to the system after a connection flood")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
