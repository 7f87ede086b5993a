"""Delay-based control of reliable, bulk and droppable traffic (LEDBAT-like, window-based).

When the RTT of the data path climbs above its minimum by more than a
target, a queue is building somewhere on the path — where no scheduler can
put an interactive frame first.  The pacer then limits the bytes of the
shared classes in flight (sent, not yet acknowledged) to a window, and moves
that window once per round trip, in proportion to how far the queueing delay
is from the target: down when above, up when below.  A window is
self-clocking — new bytes leave as ACKs come back — so the standing queue
settles near ``target x rate`` while the link stays full.  Until the first
sign of queueing nothing is limited.

Samples come only from ACK timing of data (never PING/PONG, which skip the
data path's batching), and the current delay is the minimum of the last few
samples, so event-loop and ACK-batching spikes that no pacing could remove do
not shrink the window.
"""

from __future__ import annotations

BASE_WINDOW = 10.0
"""Seconds over which the minimum RTT is remembered before it may rise again."""

CURRENT_FILTER = 4
"""The current delay is the minimum of this many recent samples (LEDBAT's filter)."""

MIN_WINDOW = 64 * 1024
"""Bytes always allowed in flight, whatever the delay says."""


class DelayPacer:
    """A delay-driven window on the shared classes' bytes in flight (time is injected)."""

    __slots__ = (
        "_acked_since_sample",
        "_base",
        "_base_time",
        "_delivered",
        "_delivered_since",
        "_recent",
        "_smoothed",
        "_variation",
        "gain",
        "inflight",
        "min_window",
        "slowdowns",
        "target",
        "window",
    )

    def __init__(
        self, target_delay: float, min_window: int = MIN_WINDOW, gain: float = 0.25
    ) -> None:
        self.target = target_delay
        self.gain = gain
        self.min_window = min_window
        self.window: float | None = None  # bytes in flight allowed; None: not limiting
        self.inflight = 0
        self.slowdowns = 0
        self._base: float | None = None
        self._base_time = 0.0
        self._recent: list[tuple[float, float]] = []  # (at, rtt)
        self._smoothed: float | None = None
        self._variation = 0.0
        self._acked_since_sample = 0
        self._delivered = 0
        self._delivered_since: float | None = None

    @property
    def active(self) -> bool:
        return self.window is not None

    def consume(self, nbytes: int) -> None:
        """Shared-class bytes were sent."""
        self.inflight += nbytes

    def forget(self, nbytes: int) -> None:
        """Bytes in flight that will never be acknowledged (their stream was reset)."""
        self.inflight = max(0, self.inflight - nbytes)

    def on_delivered(self, nbytes: int, now: float) -> None:
        """Shared-class bytes the peer acknowledged."""
        self.inflight = max(0, self.inflight - nbytes)
        self._acked_since_sample += nbytes
        if self._delivered_since is None:
            self._delivered_since = now
        self._delivered += nbytes

    def available(self, now: float) -> float:
        """Bytes of the shared classes that may leave now (infinite while not limiting)."""
        if self.window is None:
            return float("inf")
        return self.window - self.inflight

    def effective_target(self, rtt: float) -> float:
        """The target, raised to twice the samples' variation when the path is noisy.

        A busy CPU or ACK batching adds delay that does not fall when we send less;
        aiming below that noise would only starve bulk (measured: a 3 ms mean reply
        jitter held bulk at a quarter of the link with a fixed 2 ms target).
        """
        if self._smoothed is None:
            self._smoothed = rtt
            self._variation = rtt / 2
        else:
            self._variation = 0.75 * self._variation + 0.25 * abs(self._smoothed - rtt)
            self._smoothed = 0.875 * self._smoothed + 0.125 * rtt
        return max(self.target, 2 * self._variation)

    def on_rtt_sample(self, rtt: float, now: float) -> None:
        """One ACK-timed RTT sample of the data path."""
        recent = self._recent
        recent.append((now, rtt))
        if len(recent) > CURRENT_FILTER:
            del recent[0]
        current = min(sample for _, sample in recent)
        # The base is the lowest *filtered* delay: noise the filter lets through is in
        # both, so it cancels instead of reading as a queue.
        if self._base is None or current < self._base or now - self._base_time > BASE_WINDOW:
            self._base = current
            self._base_time = now
        queueing = current - self._base
        target = self.effective_target(rtt)
        if self.window is None:
            if queueing <= target or self._delivered_since is None:
                return
            elapsed = now - self._delivered_since
            if elapsed <= 0:
                return
            # First sign of a queue: start from bandwidth x (RTT + target) as delivered so far.
            rate = self._delivered / elapsed
            self.window = max(float(self.min_window), rate * (self._base + target))
            self._acked_since_sample = 0
            return
        off_target = max(-1.0, min(1.0, (target - queueing) / max(target, 1e-6)))
        if off_target < 0:
            self.slowdowns += 1
        # ``gain`` is per round trip: a sample counts for the share of a window it acknowledged.
        share = min(1.0, self._acked_since_sample / self.window)
        self._acked_since_sample = 0
        if off_target > 0 and self.inflight < self.window / 2:
            return  # not using the window: no evidence it could be larger
        self.window = max(
            float(self.min_window), self.window * (1.0 + self.gain * off_target * share)
        )
