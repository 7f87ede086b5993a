"""Delay-based pacing of reliable and bulk traffic (LEDBAT-like).

When the measured RTT climbs above the path's minimum by more than a target,
a queue is building somewhere on the path — where no scheduler can put an
interactive frame first.  The pacer then releases reliable/bulk bytes at a
rate that it moves by at most ``gain`` per RTT sample, in proportion to how
far the queueing delay is from the target (down when above, up when below),
so the standing queue stays near the target and the link stays full.  Until
the first sign of queueing the pacer does not limit anything.
"""

from __future__ import annotations

BASE_WINDOW = 10.0
"""Seconds over which the minimum RTT is remembered before it may rise again."""


class DelayPacer:
    """Token bucket whose rate follows the queueing delay (time is injected)."""

    __slots__ = (
        "_base",
        "_base_time",
        "_delivered",
        "_delivered_since",
        "_last_refill",
        "_tokens",
        "burst",
        "gain",
        "min_rate",
        "rate",
        "slowdowns",
        "target",
    )

    def __init__(
        self,
        target_delay: float,
        min_rate: float = 1_000_000.0,
        burst: int = 65536,
        gain: float = 0.05,
    ) -> None:
        self.target = target_delay
        self.gain = gain
        self.min_rate = min_rate
        self.burst = burst
        self.rate: float | None = None  # bytes/s; None: not pacing
        self.slowdowns = 0
        self._tokens = float(burst)
        self._last_refill = 0.0
        self._base: float | None = None
        self._base_time = 0.0
        self._delivered = 0
        self._delivered_since: float | None = None

    @property
    def active(self) -> bool:
        return self.rate is not None

    def on_delivered(self, nbytes: int, now: float) -> None:
        """Count bytes the peer acknowledged (the delivery rate feeds the first paced rate)."""
        if self._delivered_since is None:
            self._delivered_since = now
        self._delivered += nbytes

    def _delivery_rate(self, now: float) -> float | None:
        if self._delivered_since is None or now - self._delivered_since <= 0:
            return None
        return self._delivered / (now - self._delivered_since)

    def on_rtt_sample(self, rtt: float, now: float) -> None:
        if self._base is None or rtt < self._base or now - self._base_time > BASE_WINDOW:
            self._base = rtt
            self._base_time = now
        queueing = rtt - self._base
        if self.rate is None:
            if queueing <= self.target:
                return
            measured = self._delivery_rate(now)
            if measured is None:
                return
            self.rate = measured  # first sign of a queue: start from what gets through
            self._tokens = 0.0
            self._last_refill = now
        # Proportional control toward the target (LEDBAT): off_target in [-1, 1].
        off_target = max(-1.0, min(1.0, (self.target - queueing) / max(self.target, 1e-6)))
        if off_target < 0:
            self.slowdowns += 1
        self.rate = max(self.min_rate, self.rate * (1.0 + self.gain * off_target))
        self._delivered = 0
        self._delivered_since = now

    def available(self, now: float) -> float:
        """Bytes that may be released now (infinite while not pacing)."""
        if self.rate is None:
            return float("inf")
        if now > self._last_refill:
            self._tokens = min(
                float(self.burst), self._tokens + (now - self._last_refill) * self.rate
            )
            self._last_refill = now
        return self._tokens

    def consume(self, nbytes: int) -> None:
        if self.rate is not None:
            self._tokens -= nbytes

    def next_release(self, now: float, nbytes: int) -> float:
        """When ``nbytes`` tokens will be there (``now`` if already)."""
        if self.rate is None:
            return now
        missing = nbytes - self.available(now)
        return now if missing <= 0 else now + missing / self.rate
