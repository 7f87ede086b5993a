"""Give the C allocator's free memory back to the system after a connection flood.

Measured (docs/benchmarks.md "Abuse"): after a flood of 2000 TLS connections the node's
Python objects are all freed (``tracemalloc``: under 1 MB left), yet RSS stays near the
flood's peak, because glibc keeps the freed TLS buffers (256 KiB receive buffer and
OpenSSL's state per connection) in its heap for reuse.  ``malloc_trim(0)`` returns those
pages (RSS back within ~20 MB of the start).  :class:`AllocatorTrim` calls it once a flood
has subsided: after at least ``churn`` handshakes ended and none for ``quiet`` seconds.
Without glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

DEFAULT_CHURN = 256
DEFAULT_QUIET = 2.0


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
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
