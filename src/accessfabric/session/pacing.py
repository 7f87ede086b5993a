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

**Is it a queue?** (issue 18, ADR 0034.)  Delay that a busy CPU or loopback batching
adds looks like a queue but does not behave like one: holding bytes back does not
lower it, it lowers the delivery rate (the two ends' loops stop overlapping).  So
while limiting, the pacer measures the delivery rate per *period* (at least
``PERIOD`` and four RTTs) and, after a period in which the window was used, *probes*:
it raises the window by ``PROBE_GAIN`` for one period.  Behind a real bottleneck the rate does not
move (the link is full; the probe adds one window of queue for one period) and the
window goes back.  If the rate rises by ``PRODUCTIVE`` or more, the delay was not
ours: the window stays raised and the queueing delay seen during the probe becomes
a tolerated *floor* under the target (at most ``FLOOR_MAX`` or two base RTTs, whichever
is more, never above ``FLOOR_LIMIT``; forgotten after
``BASE_WINDOW``), so the delay
controller stops shrinking the window below what the path needs, and the next probe
starts at once (the window climbs by ``PROBE_GAIN`` per period while that pays).  An
unproductive probe puts the window back and the wait before the next one doubles (up
to ``PROBE_MAX``).  The rate's own noise (its smoothed change between ordinary
periods) raises the bar a probe must clear.

**While interactive data flows** (ADR 0072) the shared classes' bytes in flight are
also bounded by ``interactive_in_flight`` or two bandwidth-delay products (delivery
rate x the lowest RTT seen), whichever is more, whatever the delay says: toward a
receiver that is itself the bottleneck (a CPU-bound node) the delay controller tolerates what
looks like loop turns, and bulk fills the session window — every byte of it in the
carrier's FIFO ahead of the next interactive frame.  The bound holds for
``INTERACTIVE_WINDOW`` after the session last sent or received interactive DATA; a
session that carries only bulk keeps its whole window.
"""

from __future__ import annotations

from accessfabric.session.metrics import PacerMetrics

BASE_WINDOW = 10.0
"""Seconds over which the minimum RTT is remembered before it may rise again."""

CURRENT_FILTER = 4
"""The current delay is the minimum of this many recent samples (LEDBAT's filter)."""

MIN_WINDOW = 64 * 1024
"""Bytes always allowed in flight, whatever the delay says."""

PERIOD = 0.05
"""Shortest delivery-rate measurement period (seconds; also at least four RTTs)."""

PROBE_GAIN = 1.25
"""A probe raises the window by this factor for one period (BBR's probing gain)."""

PRODUCTIVE = 1.05
"""A probe whose period delivered this many times the period before it was productive."""

FLOOR_MAX = 0.001
"""The most queueing delay a probe may show and still count as productive, and the most
the pacer then tolerates (seconds), on a path whose base RTT is under half of it: what
two event loops' turns add on a loopback or LAN path.  More is treated as a queue: in
``bench hol`` on a loaded machine a window raised while the sender was CPU-bound stood
as a queue in the 800 Mbit/s bottleneck once the CPU freed (p99 up)."""

FLOOR_BASE_FACTOR = 2.0
"""On a slower path the cap is this many base RTTs (up to ``FLOOR_LIMIT``).  Where the
base itself is a loop's turn (a receiver that spends 1 ms per turn, or more), waiting
for the other end's turn adds about one more: with a fixed 1 ms cap no probe could pay
and the pacer held bulk at a fifth of its rate (issue 18; the pipeline model of
``tests/session/test_pacer_queue_or_cpu.py`` with 256 KiB reads and 1 ms turns: 19-26 %
of unpaced, 99-100 % with this cap)."""

FLOOR_LIMIT = 0.004
"""The most queueing delay the pacer ever tolerates because of a probe (seconds)."""

INTERACTIVE_WINDOW = 1.0
"""Seconds after the session's last interactive DATA during which
``interactive_in_flight`` bounds the shared classes."""

INTERACTIVE_BDPS = 2.0
"""... or this many bandwidth-delay products (delivery rate x lowest RTT), where that is
more: a relayed stream is acknowledged end to end, and through the demo's three hops a
fixed 256 KiB cost bulk 12 %; through one VPN hop, whose lowest RTT is the two loops'
turn, two BDPs stay under it (ADR 0072)."""

_UNLIMITED = float("inf")

PROBE_MAX = 8.0
"""Longest wait between probes (seconds) while probes find nothing."""


class DelayPacer:
    """A delay-driven window on the shared classes' bytes in flight (time is injected)."""

    __slots__ = (
        "_acked_since_sample",
        "_base",
        "_base_time",
        "_delivered",
        "_delivered_since",
        "_floor",
        "_floor_time",
        "_interactive_at",
        "_last_rate",
        "_lowest",
        "_next_probe",
        "_period_bytes",
        "_period_peak",
        "_period_start",
        "_probe_interval",
        "_probe_rate",
        "_queueing",
        "_rate_noise",
        "_recent",
        "_smoothed",
        "_variation",
        "gain",
        "inflight",
        "interactive_in_flight",
        "min_window",
        "probes",
        "productive_probes",
        "rate",
        "slowdowns",
        "target",
        "unproductive_probes",
        "window",
    )

    def __init__(
        self,
        target_delay: float,
        min_window: int = MIN_WINDOW,
        gain: float = 0.25,
        interactive_in_flight: int | None = None,
    ) -> None:
        self.target = target_delay
        self.gain = gain
        self.interactive_in_flight = interactive_in_flight
        self._interactive_at: float | None = None
        self.min_window = min_window
        self.window: float | None = None  # bytes in flight allowed; None: not limiting
        self.inflight = 0
        self.slowdowns = 0
        self._base: float | None = None
        self._lowest: float | None = None
        """The lowest filtered RTT ever seen (``_base`` is re-read every ``BASE_WINDOW``)."""
        self._base_time = 0.0
        self._recent: list[float] = []  # the last CURRENT_FILTER samples
        self._smoothed: float | None = None
        self._variation = 0.0
        self._acked_since_sample = 0
        self._delivered = 0
        self._delivered_since: float | None = None
        self._period_start: float | None = None
        self._period_bytes = 0
        self._period_peak = 0
        self._probe_rate: float | None = None  # the rate before the probe under way
        self._probe_interval = PERIOD
        self._next_probe = 0.0
        self._last_rate = 0.0
        self._rate_noise = 0.0  # smoothed relative change of the rate between periods
        self._floor = 0.0  # queueing delay a productive probe showed is not ours
        self._floor_time = 0.0
        self.probes = 0
        self.productive_probes = 0
        self.unproductive_probes = 0
        self.rate: float | None = None
        """Delivery rate of the last measured period (bytes/s); None before the first."""
        self._queueing: float | None = None

    @property
    def active(self) -> bool:
        return self.window is not None

    def consume(self, nbytes: int) -> None:
        """Shared-class bytes were sent."""
        self.inflight += nbytes
        if self.inflight > self._period_peak:
            self._period_peak = self.inflight

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
        self._period_bytes += nbytes

    def on_interactive(self, now: float) -> None:
        """Interactive DATA was sent or received on the session."""
        self._interactive_at = now

    def _interactive_bound(self, now: float) -> int | None:
        """``interactive_in_flight``, or two bandwidth-delay products where that is more;
        None when there is no bound (none configured, or no interactive data lately)."""
        at = self._interactive_at
        bound = self.interactive_in_flight
        if at is None or bound is None or now - at > INTERACTIVE_WINDOW:
            return None
        # The lowest RTT ever, not the base: a base re-read under a sustained queue (a
        # flood through the session) would count that queue as path and lift the bound.
        bdp = (self.rate or 0.0) * (self._lowest or 0.0)
        return max(bound, int(INTERACTIVE_BDPS * bdp))

    def limiting(self, now: float) -> bool:
        """Whether :meth:`available` is finite now."""
        return self.window is not None or self._interactive_bound(now) is not None

    def available(self, now: float) -> float:
        """Bytes of the shared classes that may leave now (infinite while not limiting)."""
        window = _UNLIMITED if self.window is None else self.window
        bound = self._interactive_bound(now)
        if bound is not None and bound < window:
            window = bound
        return window - self.inflight

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
        return max(self.target, 2 * self._variation, self._floor)

    @property
    def floor_cap(self) -> float:
        """The most queueing delay a productive probe may show, and the floor may reach."""
        base = self._base or 0.0
        return max(FLOOR_MAX, min(FLOOR_LIMIT, FLOOR_BASE_FACTOR * base))

    @property
    def floor(self) -> float:
        """Queueing delay a productive probe showed the window does not cause (seconds)."""
        return self._floor

    @property
    def min_rtt(self) -> float | None:
        """The base: the lowest filtered data-path RTT of the last ``BASE_WINDOW`` (seconds)."""
        return self._base

    def metrics(self) -> PacerMetrics:
        """What the pacer measured and decided, for status and Prometheus."""
        return PacerMetrics(
            limiting=self.window is not None,
            window=self.window,
            in_flight=self.inflight,
            delivery_rate=self.rate,
            min_rtt=self._base,
            queueing_delay=self._queueing,
            floor=self._floor,
            probes=self.probes,
            productive_probes=self.productive_probes,
            unproductive_probes=self.unproductive_probes,
            backoffs=self.slowdowns,
        )

    def on_rtt_sample(self, rtt: float, now: float) -> None:
        """One ACK-timed RTT sample of the data path."""
        recent = self._recent
        recent.append(rtt)
        if len(recent) > CURRENT_FILTER:
            del recent[0]
        current = min(recent)
        if self._lowest is None or current < self._lowest:
            self._lowest = current
        # The base is the lowest *filtered* delay: noise the filter lets through is in
        # both, so it cancels instead of reading as a queue.
        if self._base is None or current < self._base or now - self._base_time > BASE_WINDOW:
            self._base = current
            self._base_time = now
        queueing = self._queueing = current - self._base
        if self._floor and now - self._floor_time > BASE_WINDOW:
            self._floor = 0.0
        target = self.effective_target(rtt)
        if self._period_start is None:
            self._period_start = now
        elif now - self._period_start >= max(PERIOD, 4 * current):
            self._end_period(now, queueing, target)
        if self._probe_rate is not None:
            self._acked_since_sample = 0
            return  # probing: the window holds still for the period
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

    def _end_period(self, now: float, queueing: float, target: float) -> None:
        """Close a delivery-rate period: judge the probe under way, or start one."""
        assert self._period_start is not None
        rate = self.rate = self._period_bytes / (now - self._period_start)
        used = self.window is not None and self._period_peak >= self.window / 2
        self._period_start, self._period_bytes, self._period_peak = now, 0, self.inflight
        if self.window is None:
            self._probe_rate = None
            return
        if self._probe_rate is not None:
            # More than the rate's own period-to-period noise: twice its smoothed change.
            threshold = max(PRODUCTIVE, 1.0 + 2 * self._rate_noise)
            self._last_rate = 0.0  # a probe's change is not noise
            # More in flight, more delivered, and the delay still what loops' turns add:
            # beyond the cap the raised window stands as a queue wherever the CPU frees.
            cap = self.floor_cap
            if rate >= threshold * self._probe_rate and queueing <= cap:
                self.productive_probes += 1
                self._floor = min(cap, max(self._floor, queueing))
                self._floor_time = now
                self._probe_interval = PERIOD
                self.probes += 1  # and at once the next step up
                self._probe_rate = rate
                self.window *= PROBE_GAIN
                return
            # A full pipe: the extra window only queued.
            self.unproductive_probes += 1
            self.window = max(float(self.min_window), self.window / PROBE_GAIN)
            self._probe_interval = min(PROBE_MAX, 2 * self._probe_interval)
            self._probe_rate = None
            self._next_probe = now + self._probe_interval
            return
        if self._last_rate > 0 and rate > 0:
            change = abs(rate - self._last_rate) / max(rate, self._last_rate)
            self._rate_noise = 0.75 * self._rate_noise + 0.25 * change
        self._last_rate = rate
        # Probe from a settled state (not while draining a queue the window let build),
        # or from the smallest window, when sending less cannot lower the delay anyway.
        settled = queueing <= target or self.window <= self.min_window
        if used and now >= self._next_probe and rate > 0 and settled:
            self.probes += 1
            self._probe_rate = rate
            self.window *= PROBE_GAIN
