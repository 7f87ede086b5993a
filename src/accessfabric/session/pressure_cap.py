"""A rate cap on reliable, bulk and droppable toward a peer that reports CPU or memory pressure.

NODE_PRESSURE (ADR 0026) tells a session its peer is short of CPU or memory.  Lowering
bulk's scheduling weight helps only while interactive is backed up here; a pressured peer
is slowed by the work each byte costs it (decrypting, relaying, echoing), so only a lower
*rate* gives its CPU back to interactive.  This cap is AIMD on bytes per second:

* while the peer's cpu or memory level is at or above ``high`` the cap is multiplied by
  ``decrease`` every ``step`` seconds, down to ``min_rate`` (the first step starts from
  what the shared classes sent in the last ``step``, not from a guess);
* once the level is below ``high`` it grows by ``ceiling / RECOVERY_STEPS`` every
  ``step``, and is lifted when it reaches the ceiling (the rate sent when the cap began);
* held at ``min_rate`` for ``give_up_after`` seconds while the level stays at or above
  ``high``, the cap gives way: our bulk is not what starves the peer (a shared host whose
  other work keeps every loop waiting, ADR 0045), so holding it at the floor only costs
  bulk.  It is lifted for ``hold_off`` seconds; if the peer is still pressured then, it
  starts again from the rate sent meanwhile.  Only time spent *sending* at the floor
  counts (at least half of it): a pause in our bulk says nothing about whether the floor
  relieves the peer, and giving way across one let the next burst go uncapped.
* whether it gives way for good depends on whether the floor was *buying* interactive
  latency (ADR 0045, "give way only when it does not help"): the session passes in the
  RTT of each acknowledged interactive DATA mark (``on_interactive_rtt``).  The cap keeps
  the last ``RTT_SAMPLES`` of those sent at the floor and, once it gives way, of those
  sent while lifted.  If the lifted median exceeds ``WORSE_FACTOR`` x the capped median
  + ``WORSE_MARGIN`` (at least ``MIN_RTT_SAMPLES`` of each), lifting it cost interactive
  its latency: it re-engages at once, straight at the floor, and the floor time before
  the next give-way doubles (``give_up_after`` x 2 ** n, n at most ``MAX_BACKOFF``).  A
  hold-off that ends with enough lifted samples and no such verdict (capping bought
  nothing) resets n; without samples (no interactive sent from this side) it gives way
  as before.

* the cap engages only while the session has carried interactive data lately (either
  direction, within ``interactive_window`` seconds; ``always`` drops the condition): the
  cap exists to give a pressured peer's CPU back to interactive, and a session with no
  interactive traffic gains nothing from it and would only lose bulk throughput (on a
  shared host every busy node reads as pressured, ADR 0045).  When interactive goes quiet
  the cap is lifted at once (ADR 0045, "on by default, for interactive").

The urgent classes (control, dns, interactive) are never capped.  A token bucket holding
at most ``BURST`` seconds of the cap spreads what it allows.  Sans-IO: time is passed in.
"""

from __future__ import annotations

from statistics import median_high

BURST = 0.02
"""Seconds of the cap a token bucket may hold (at least ``MIN_BURST`` bytes)."""
MIN_BURST = 16 * 1024
RECOVERY_STEPS = 8
"""Steps of additive increase from nothing back to the ceiling (a ``step`` each)."""
GIVE_UP_AFTER = 3.0
"""Seconds at the floor with the peer still pressured before the cap gives way."""
HOLD_OFF = 10.0
"""Seconds the cap stays lifted after giving way."""
INTERACTIVE_WINDOW = 5.0
"""Seconds after the session's last interactive DATA during which the cap may engage."""
RTT_SAMPLES = 8
"""Interactive RTT samples kept for each of the capped and lifted phases (the latest)."""
MIN_RTT_SAMPLES = 4
"""Samples each phase needs before the lifted RTT is compared with the capped one."""
WORSE_FACTOR = 2.0
WORSE_MARGIN = 0.005
"""Lifted median RTT above ``WORSE_FACTOR`` x capped + this (seconds): the cap was helping."""
MAX_BACKOFF = 1
"""Doublings of ``give_up_after`` after re-engagements (3 s -> at most 6 s at the floor:
more would let a download beside an interactive loop crawl for long at the floor)."""
_INFINITE = float("inf")


def _push(samples: list[float], rtt: float) -> None:
    """Keep the latest ``RTT_SAMPLES`` (a list: an idle session's cap must stay small)."""
    samples.append(rtt)
    if len(samples) > RTT_SAMPLES:
        del samples[0]


class PressureRateCap:
    """AIMD cap (bytes/s) on the shared classes while the peer reports cpu/memory pressure."""

    __slots__ = (
        "_backoff",
        "_bucket",
        "_bucket_at",
        "_capped_rtts",
        "_floor_at",
        "_floor_sent",
        "_floor_since",
        "_hold_until",
        "_interactive_at",
        "_last_rate",
        "_lifted_at",
        "_lifted_rtts",
        "_next_step",
        "_sent",
        "_sent_since",
        "always",
        "capped_rtt",
        "ceiling",
        "decrease",
        "decreases",
        "give_up_after",
        "give_ups",
        "high",
        "hold_off",
        "interactive_window",
        "level",
        "min_rate",
        "rate",
        "reengages",
        "step",
    )

    def __init__(
        self,
        min_rate: int = 512 * 1024,
        high: int = 50,
        step: float = 0.25,
        decrease: float = 0.5,
        give_up_after: float = GIVE_UP_AFTER,
        hold_off: float = HOLD_OFF,
        *,
        always: bool = False,
        interactive_window: float = INTERACTIVE_WINDOW,
    ) -> None:
        self.min_rate = min_rate
        self.high = high
        self.step = step
        self.decrease = decrease
        self.give_up_after = give_up_after
        self.hold_off = hold_off
        self.always = always
        """Engage whatever the session carries (else only while interactive is recent)."""
        self.interactive_window = interactive_window
        self._interactive_at: float | None = None
        self.give_ups = 0
        """Times the cap gave way (at the floor for ``give_up_after``, peer still pressured)."""
        self._floor_since: float | None = None
        self._floor_sent = 0
        """Shared-class bytes sent since ``_floor_since``."""
        self._hold_until = 0.0
        self.reengages = 0
        """Times lifting the cap cost interactive its latency, so it re-engaged at once."""
        self.capped_rtt: float | None = None
        """Median interactive RTT at the floor before the last give-way (None: too few)."""
        self._backoff = 0
        """Doublings of ``give_up_after`` now in force (re-engagements in a row)."""
        self._floor_at: float | None = None
        """When the cap last reached its floor (RTT samples of data sent since count)."""
        self._capped_rtts: list[float] = []
        self._lifted_at: float | None = None
        """When the cap last gave way, while its hold-off is being judged."""
        self._lifted_rtts: list[float] = []
        self.level = 0
        """The peer's last cpu / memory level (the higher of the two, percent)."""
        self.rate: float | None = None
        """Bytes per second allowed now; None: not capping."""
        self.ceiling = 0.0
        self.decreases = 0
        self._bucket = 0.0
        self._bucket_at = 0.0
        self._sent = 0
        self._sent_since: float | None = None
        self._last_rate = 0.0
        self._next_step = 0.0

    @property
    def pressured(self) -> bool:
        return self.level >= self.high

    def on_peer_pressure(self, cpu: int, memory: int, now: float) -> None:
        """The peer's NODE_PRESSURE levels arrived."""
        was = self.pressured
        self.level = max(cpu, memory)
        if self.pressured and not was and self.rate is None:
            self._next_step = now  # act at once
        elif self.pressured != was:
            self._next_step = now + self.step

    def on_interactive(self, now: float) -> None:
        """Interactive DATA was sent or received on the session."""
        if not self._engaged(now) and self.pressured:
            self._next_step = min(self._next_step, now)  # act at once
        self._interactive_at = now

    def on_interactive_rtt(self, rtt: float, now: float) -> None:
        """An ACK of interactive DATA sent ``rtt`` seconds ago arrived."""
        sent = now - rtt
        if self.rate is not None:
            at = self._floor_at
            if at is not None and sent >= at:
                _push(self._capped_rtts, rtt)
            return
        at, capped = self._lifted_at, self.capped_rtt
        if at is None or capped is None or sent < at:
            return
        lifted = self._lifted_rtts
        _push(lifted, rtt)
        if (
            now < self._hold_until
            and len(lifted) >= MIN_RTT_SAMPLES
            and median_high(lifted) > WORSE_FACTOR * capped + WORSE_MARGIN
        ):
            # Lifting it cost interactive its latency: the floor was buying it.
            self.reengages += 1
            self._backoff = min(self._backoff + 1, MAX_BACKOFF)
            self._hold_until, self._lifted_at = now, None
            if self.pressured and self._engaged(now):
                self._engage(now, at_floor=True)

    def _engaged(self, now: float) -> bool:
        """Whether the cap may act: always, or interactive data within the window."""
        at = self._interactive_at
        return self.always or (at is not None and now - at <= self.interactive_window)

    def consume(self, nbytes: int, now: float) -> None:
        """Shared-class bytes were sent."""
        if self._sent_since is None:
            self._sent_since = now
        self._sent += nbytes
        if self._floor_since is not None:
            self._floor_sent += nbytes
        if self.rate is not None:
            self._bucket -= nbytes

    def _measure(self, now: float) -> None:
        """Close the send-rate window once it is ``step`` long."""
        since = self._sent_since
        if since is None:
            self._sent_since = now
        elif now - since >= self.step:
            self._last_rate = self._sent / (now - since)
            self._sent, self._sent_since = 0, now

    def _engage(self, now: float, *, at_floor: bool = False) -> None:
        """Start capping from what was sent lately (or at the floor at once)."""
        since = self._sent_since if self._sent_since is not None else now
        current = self._sent / (now - since) if now - since >= self.step / 4 else 0.0
        self.ceiling = max(float(self.min_rate), self._last_rate, current)
        self.rate = float(self.min_rate) if at_floor else self.ceiling
        self._bucket, self._bucket_at = 0.0, now
        self._floor_since = None
        self._floor_at = now if at_floor else None
        self._capped_rtts.clear()
        if at_floor:
            self._next_step = now + self.step

    def _lift(self) -> None:
        self.rate, self._floor_since, self._floor_at = None, None, None

    def _update(self, now: float) -> None:
        if self.rate is None and self._lifted_at is not None and now >= self._hold_until:
            # the hold-off ended without a verdict against lifting: capping bought nothing
            if len(self._lifted_rtts) >= MIN_RTT_SAMPLES:
                self._backoff = 0
            self._lifted_at = None
        if self.rate is not None and not self._engaged(now):
            # interactive went quiet: nothing left to protect, bulk goes at full speed
            self._lift()
            return
        if now < self._next_step or (self.rate is None and not self.pressured):
            return
        if self.pressured:
            if not self._engaged(now):
                return
            if self.rate is None:  # onset: start from what was sent lately
                if now < self._hold_until:
                    return  # gave way lately: not before the hold-off ends
                self._engage(now)
            elif self.rate <= self.min_rate:
                held = now - self._floor_since if self._floor_since is not None else 0.0
                if self._floor_since is None or self._floor_sent < self.min_rate * held / 2:
                    # (again) from now: not at the floor before, or not sending at it
                    self._floor_since, self._floor_sent = now, 0
                elif held >= self.give_up_after * 2**self._backoff:
                    # the floor did not bring the peer below ``high``: give way, and see
                    # whether interactive's RTT says the floor was worth it after all
                    capped = self._capped_rtts
                    self.capped_rtt = (
                        median_high(capped) if len(capped) >= MIN_RTT_SAMPLES else None
                    )
                    self._lift()
                    self._hold_until = now + self.hold_off
                    self._lifted_at = now
                    self._lifted_rtts.clear()
                    self.give_ups += 1
                    self._next_step = now + self.step
                    return
            assert self.rate is not None  # (set by ``_engage`` at the onset)
            self.rate = max(float(self.min_rate), self.rate * self.decrease)
            self.decreases += 1
            if self.rate <= self.min_rate and self._floor_at is None:
                self._floor_at = now
                self._capped_rtts.clear()
        else:
            assert self.rate is not None
            self._floor_since = self._floor_at = None
            steps = 1 + int((now - self._next_step) / self.step)
            self.rate += steps * max(float(self.min_rate), self.ceiling / RECOVERY_STEPS)
            if self.rate >= self.ceiling:
                self.rate = None
        self._next_step = now + self.step

    def available(self, now: float) -> float:
        """Bytes of the shared classes that may leave now (infinite while not capping)."""
        if self.rate is None and self._lifted_at is None and self.level < self.high:
            # Not capping, no give-way being judged, the peer not pressured: ``_update``
            # would change nothing.  Asked before every frame cut, so only the rate is kept.
            self._measure(now)
            return _INFINITE
        self._measure(now)
        self._update(now)
        if self.rate is None:
            return _INFINITE
        burst = max(MIN_BURST, self.rate * BURST)
        self._bucket = min(burst, self._bucket + (now - self._bucket_at) * self.rate)
        self._bucket_at = now
        return self._bucket

    def wait(self, nbytes: int) -> float:
        """Seconds until ``nbytes`` more would be allowed (after ``available``)."""
        if self.rate is None:
            return 0.0
        return max(0.0, nbytes - self._bucket) / self.rate
