"""Tenant fairness at a relay: byte-level fair queuing across tenants (issue 17).

A relay's splices pump bytes one chunk at a time, each on its own task, so without a
gate each *stream* gets an equal turn: a tenant with ten bulk streams gets ten times
the relay of a tenant with one.  :class:`TenantFairShare` gives each *tenant* an equal
share instead.  Every tenant has a virtual byte count (bytes it relayed since it became
active); a pump whose tenant is more than ``quantum`` bytes ahead of the least-served
active tenant waits until the others catch up (or go idle).  A tenant is active while
one of its pumps waits here, or for ``idle_after`` seconds after it last relayed; a
tenant that comes back from idle starts level with the least-served active tenant, so
idling banks no credit.  One tenant alone is never held back.  A tenant that only
trickles (an SSH session beside another tenant's bulk) stays active without ever
catching up: once a pump has waited ``starve_after``, tenants with no pump waiting that
relayed less than a quarter quantum meanwhile are raised to its count, so a trickle slows
bulk (to at least a quantum per ``starve_after``) but never stops it.

The gate only orders bytes that are already at the relay: the tenants' own flow
control (stream credit) pushes back on their sources while they wait.  What happens
before the relay is the senders': where tenants share the session to the relay, the
bytes held here stay in flight there (ACKs are end to end), and only the sender's
scheduler can give what frees to the tenant held back by it; nodes put a tenant's
streams in one stream group for that (``Session.set_stream_group``, ADR 0051).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable

DEFAULT_QUANTUM = 256 * 1024
"""Bytes a tenant may run ahead of the least-served active tenant (one relay chunk)."""
DEFAULT_IDLE_AFTER = 0.2
"""Seconds after its last relayed chunk a tenant with no pump waiting counts as idle."""
DEFAULT_STARVE_AFTER = 0.5
"""Seconds a pump waits for the others before tenants with no pump waiting are levelled."""


class TenantFairShare:
    def __init__(
        self,
        quantum: int = DEFAULT_QUANTUM,
        idle_after: float = DEFAULT_IDLE_AFTER,
        clock: Callable[[], float] = time.monotonic,
        starve_after: float = DEFAULT_STARVE_AFTER,
    ) -> None:
        self.quantum = quantum
        self.idle_after = idle_after
        self.starve_after = starve_after
        self._clock = clock
        self._served: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._waiting: Counter[str] = Counter()
        self._changed = asyncio.Event()
        self.waits = 0
        """Times a pump waited for other tenants (status)."""

    def _active(self, now: float) -> list[str]:
        return [
            t
            for t, last in self._last.items()
            if self._waiting[t] > 0 or now - last < self.idle_after
        ]

    def _ahead(self, tenant: str, now: float) -> bool:
        others = [t for t in self._active(now) if t != tenant]
        if not others:
            return False
        least = min(self._served[t] for t in others)
        return self._served[tenant] > least + self.quantum

    async def turn(self, tenant: str, nbytes: int) -> None:
        """Wait until ``tenant`` may relay ``nbytes`` more, then count them."""
        now = self._clock()
        if tenant not in self._active(now):  # back from idle: level with the least served
            active = self._active(now)
            floor = min((self._served[t] for t in active), default=0.0)
            self._served[tenant] = max(self._served.get(tenant, 0.0), floor)
            self._last[tenant] = now
        if self._ahead(tenant, now):
            self.waits += 1
            self._waiting[tenant] += 1
            since, before = now, dict(self._served)
            try:
                while self._ahead(tenant, now):
                    changed = self._changed
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancel
                    # that lands as the event is set, and the pump would outlive its splice
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.idle_after):
                            await changed.wait()
                    now = self._clock()
                    if now - since >= self.starve_after:
                        self._level_trailing(tenant, before)
                        since, before = now, dict(self._served)
            finally:
                self._waiting[tenant] -= 1
        self._served[tenant] += nbytes
        self._last[tenant] = now
        self._changed.set()  # wake the waiters: someone may be behind no more
        self._changed = asyncio.Event()
        if len(self._last) > 64:
            self._forget(now)

    def _level_trailing(self, tenant: str, before: dict[str, float]) -> None:
        """``tenant`` waited ``starve_after`` for the others to catch up.  A tenant with no
        pump waiting here that relayed less than a quarter quantum meanwhile is not
        backlogged (it trickles: keystrokes beside a bulk transfer) and must not hold
        ``tenant`` back any longer: it is raised to ``tenant``'s count and banks nothing.
        A tenant whose bytes flow (its source is still shifting its share to it) is not."""
        level = self._served[tenant]
        for other in self._last:
            if other == tenant or self._waiting[other] or self._served[other] >= level:
                continue
            if self._served[other] - before.get(other, 0.0) < self.quantum / 4:
                self._served[other] = level

    def _forget(self, now: float) -> None:
        """Drop tenants idle for long (their count would be levelled on return anyway)."""
        for tenant in [t for t, last in self._last.items() if now - last > 10 * self.idle_after]:
            if self._waiting[tenant] == 0:
                del self._last[tenant], self._served[tenant]
                self._waiting.pop(tenant, None)
