"""The control plane freezes what survives its garbage collections (issue 17: full passes
of 50-180 ms in a 1000-device start), and unfreezes everything once per ``refresh`` so
cyclic garbage among frozen objects is still reclaimed."""

from __future__ import annotations

import asyncio
import gc
import weakref

from accessfabric.control.server.gc_survivors import FreezeSurvivors


class Node:
    """An object in a reference cycle (``self.me``): only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_survivors_are_frozen_and_a_refresh_reclaims_frozen_cycles() -> None:
    async def main() -> None:
        now = [0.0]
        survivors = FreezeSurvivors(asyncio.get_running_loop(), refresh=600.0, clock=lambda: now[0])
        try:
            cycle = Node()
            gone = weakref.ref(cycle)
            before = gc.get_freeze_count()
            gc.collect(1)
            await asyncio.sleep(0)  # the freeze runs on the loop
            assert gc.get_freeze_count() > before and survivors.freezes >= 1
            del cycle
            gc.collect()
            await asyncio.sleep(0)
            assert gone() is not None, "frozen: the full pass did not walk it"
            now[0] = 601.0
            gc.collect()  # a full pass after ``refresh``: everything is unfrozen ...
            await asyncio.sleep(0)
            assert survivors.refreshes == 1 and gc.get_freeze_count() == 0
            gc.collect()  # ... and the next full pass reclaims the cycle
            assert gone() is None
        finally:
            survivors.remove()
            gc.unfreeze()

    asyncio.run(main())
