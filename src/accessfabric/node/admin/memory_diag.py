"""``accessfabric diag memory``: where a running node's memory goes (ADR 0050).

Served on the admin socket (0600: the node's operator only) as ``GET /diag/memory``:

* ``action=start`` starts ``tracemalloc`` (one frame per trace; it costs memory per
  traced block and CPU per allocation until ``stop``); ``action=stop`` stops it;
* ``action=report`` (the default): RSS (``/proc/self/statm``), the C heap (glibc's
  ``mallinfo2``: arena, in use, free, mapped), the largest object types by count (``gc``)
  and, while tracing, the Python heap traced since ``start`` with the ``top`` allocation
  sites by ``filename:lineno``.

``top`` is bounded (``MAX_TOP``).  A report walks every object and, while tracing, every
traced block, holding the node's event loop for that long (a second or more for a large
heap): an operator's diagnostic, not a monitoring probe.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import os
import tracemalloc
from typing import Any

MAX_TOP = 200
DEFAULT_TOP = 25
_MALLINFO2 = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
              "uordblks", "fordblks", "keepcost")  # fmt: skip


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2]


def _c_heap() -> dict[str, int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        mallinfo2 = ctypes.CDLL(name).mallinfo2
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {
        "arena_bytes": info.arena,
        "in_use_bytes": info.uordblks,
        "free_bytes": info.fordblks,
        "mapped_bytes": info.hblkhd,
    }


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def memory_report(action: str = "report", top: int = DEFAULT_TOP) -> dict[str, Any]:
    """Do ``action`` (``start``, ``stop``, ``report``) and describe the node's memory."""
    if action not in ("start", "stop", "report"):
        raise ValueError(f"action: expected start, stop or report, not {action!r}")
    if not 1 <= top <= MAX_TOP:
        raise ValueError(f"top: expected 1..{MAX_TOP}")
    if action == "start" and not tracemalloc.is_tracing():
        tracemalloc.start(1)
    elif action == "stop" and tracemalloc.is_tracing():
        tracemalloc.stop()
    document: dict[str, Any] = {
        "rss_bytes": _rss_bytes(),
        "c_heap": _c_heap(),
        "tracing": tracemalloc.is_tracing(),
    }
    if action != "report":
        return document
    gc.collect()
    types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    document["types"] = [{"type": name, "count": n} for name, n in types.most_common(top)]
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        stats = tracemalloc.take_snapshot().statistics("lineno")
        document["traced_bytes"] = current
        document["traced_peak_bytes"] = peak
        document["tracemalloc_overhead_bytes"] = tracemalloc.get_tracemalloc_memory()
        document["sites"] = [
            {"site": f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
             "bytes": s.size, "count": s.count}
            for s in stats[:top]
        ]  # fmt: skip
    return document
