"""Keep the control plane's full garbage collections short while its state grows (issue 17).

``control serve`` freezes what it loaded at start (``gc.freeze``, cli.py).  A fleet's start
then grows the heap by the state of every device (records, heartbeats, leases, the
coordinators' memos), and CPython runs a full collection each time the oldest generation
has grown by a quarter: each walks all of that state.  With 1000 devices starting on this
2-core machine they took 50-180 ms in the middle of the start storm, and every request
queued behind them (the route lease p99, docs/benchmarks.md).

:class:`FreezeSurvivors` freezes everything alive after each collection of the middle or
oldest generation (``FREEZE_FROM``): what survives one is mostly the long-lived state, so
the oldest generation stays nearly empty and a full collection walks little (measured in
a 1000-device start: the longest pass 179 ms before, 25 ms after; freezing after full
collections alone left passes of 98 ms, the state grows that fast).  Reference counting
still frees frozen objects; only cyclic garbage among them is kept while they are frozen,
so every ``refresh`` seconds everything is unfrozen instead and the next full collection
walks, and reclaims, all of it: one long pass per ``refresh``.

A collection may run on any thread (the signature verifier's pool): the freeze is
handed to the event loop, which runs it between two callbacks.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

FREEZE_FROM = 1
"""The youngest generation whose collections are followed by a freeze."""
REFRESH = 600.0
"""Seconds between two full collections that walk everything (frozen objects included)."""


class FreezeSurvivors:
    """Installs a ``gc.callbacks`` hook; :meth:`remove` takes it out again."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        refresh: float = REFRESH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop = loop
        self.refresh = refresh
        self._clock = clock
        self._refreshed_at = clock()
        self.freezes = 0
        """Full collections whose survivors were frozen."""
        self.refreshes = 0
        """Times everything was unfrozen for one full walk."""
        gc.callbacks.append(self._on_collection)

    def remove(self) -> None:
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation", 0) < FREEZE_FROM or self._loop.is_closed():
            return
        now = self._clock()
        if now - self._refreshed_at >= self.refresh:
            self._refreshed_at = now
            self.refreshes += 1
            self._loop.call_soon_threadsafe(gc.unfreeze)
        else:
            self.freezes += 1
            self._loop.call_soon_threadsafe(gc.freeze)
