"""A sans-IO one-way link: delay, jitter, random loss and an optional rate limit.

:class:`DelayLine` never reads a clock and never touches a socket: the caller feeds
packets with ``push(packet, now)`` and collects them with ``pop_ready(now)``, arming
one timer at ``next_deadline()``.  With the same seed and the same calls it makes the
same decisions, so tests can inject time and assert exact outcomes.

Model, per pushed packet, in this order:

1. **loss** -- dropped with probability ``loss`` (independent draws); a lost packet
   uses no bandwidth, as if it was lost upstream of the bottleneck;
2. **rate** -- with ``rate_bps`` set, the packet is serialised after every earlier
   packet (``len * 8 / rate_bps`` seconds each); if it would wait longer than
   ``max_backlog_s`` before serialisation starts it is tail-dropped (like ``tc tbf``'s
   ``latency``);
3. **delay and jitter** -- it arrives ``delay_s + U(-jitter_s, +jitter_s)`` seconds
   (never less than zero) after its serialisation ends.

**Order**: FIFO always.  Jitter never reorders: a packet whose sampled arrival time is
earlier than its predecessor's is held back until its predecessor is delivered, as
on a real link whose queueing delay varies.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass


@dataclass
class DelayLineStats:
    """Counters of one :class:`DelayLine` since it was created."""

    offered: int = 0
    lost: int = 0
    overflowed: int = 0
    delivered: int = 0


class DelayLine:
    """One direction of an emulated link (see the module docstring for the model)."""

    def __init__(
        self,
        delay_s: float,
        jitter_s: float = 0.0,
        loss: float = 0.0,
        rate_bps: float | None = None,
        seed: int = 0,
        max_backlog_s: float | None = None,
    ) -> None:
        if delay_s < 0 or jitter_s < 0:
            raise ValueError("delay_s and jitter_s must be >= 0")
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss is a probability in [0, 1], got {loss!r}")
        if rate_bps is not None and rate_bps <= 0:
            raise ValueError(f"rate_bps must be > 0, got {rate_bps!r}")
        if max_backlog_s is not None and max_backlog_s < 0:
            raise ValueError(f"max_backlog_s must be >= 0, got {max_backlog_s!r}")
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.loss = loss
        self.rate_bps = rate_bps
        self.max_backlog_s = max_backlog_s
        self.stats = DelayLineStats()
        self._random = random.Random(seed)
        self._queue: deque[tuple[float, bytes]] = deque()
        self._link_free_at = float("-inf")
        self._last_deadline = float("-inf")

    def __len__(self) -> int:
        """Packets accepted and not yet delivered."""
        return len(self._queue)

    def push(self, packet: bytes, now: float) -> None:
        """Offer ``packet`` to the line at time ``now`` (seconds, any monotonic origin)."""
        self.stats.offered += 1
        if self.loss > 0.0 and self._random.random() < self.loss:
            self.stats.lost += 1
            return
        sent_at = self._serialise(len(packet), now)
        if sent_at is None:
            self.stats.overflowed += 1
            return
        jitter = self._random.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s else 0.0
        deadline = max(sent_at + max(0.0, self.delay_s + jitter), self._last_deadline)
        self._last_deadline = deadline
        self._queue.append((deadline, packet))

    def pop_ready(self, now: float) -> list[bytes]:
        """Every packet whose arrival time is ``<= now``, in order."""
        ready: list[bytes] = []
        while self._queue and self._queue[0][0] <= now:
            ready.append(self._queue.popleft()[1])
        self.stats.delivered += len(ready)
        return ready

    def next_deadline(self) -> float | None:
        """When the next packet becomes ready, or ``None`` when the line is empty."""
        return self._queue[0][0] if self._queue else None

    def _serialise(self, size: int, now: float) -> float | None:
        """When the last bit of a ``size``-byte packet leaves, or ``None`` on overflow."""
        if self.rate_bps is None:
            return now
        start = max(now, self._link_free_at)
        if self.max_backlog_s is not None and start - now > self.max_backlog_s:
            return None
        self._link_free_at = start + size * 8 / self.rate_bps
        return self._link_free_at
