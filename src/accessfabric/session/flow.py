"""Flow control: the receiving side's credit window, with batched grants and auto-tuning.

Credit is an absolute byte offset (QUIC's MAX_STREAM_DATA), so a grant is
idempotent.  A grant is worth sending only when the peer's remaining credit
has fallen below half the window (h2's ``WindowManager`` makes the same
call).  The window doubles, up to a cap, when half a window is released in
less than about two round trips — it grows toward bandwidth x RTT instead of
capping throughput at window / RTT.  A stream's window is released when the
application consumes bytes; the session's (stream 0) when bytes arrive
(ADR 0014).  ``room`` lets the session cap how far a stream window may grow,
so the streams' windows together stay within the session's memory budget.

"About two round trips" is the caller's round trip: a stream's window covers the
application's reading too, so it is timed by the smoothed RTT; the session's window
only covers the carrier (credit comes back as bytes arrive), so it is timed by the
path's *minimum* RTT, and on a rate measured over at least ``SESSION_EPOCH``
rather than the time half a window took (:class:`SessionReceiveWindow`, ADR 0070).  A receiver
whose loop is CPU-bound grew its session window on its own queue: the bytes
standing in its socket raised the RTT its acknowledgements saw, and arrived in
bursts (one read takes all the socket holds) that released half a window "at
once"; the larger window let more bytes stand there, and an interactive frame
waited behind them (issue 18: p99 1.3-1.85 MB ahead of a ping through the VPN, in
the one queue no scheduler orders).  With both, the session window grows while
the arrival rate fills more than a quarter of it per minimum RTT: toward 4 x
rate x min RTT, never below its initial size.
"""

from __future__ import annotations

from collections.abc import Callable

from accessfabric.errors import FlowControlError

SESSION_EPOCH = 0.01
"""Seconds the session window's arrival rate is measured over, at least (ADR 0070)."""

RTT_FLOOR = 0.0001
"""The least round trip the rate rule assumes: one sample of ~0 (a delivery in the same
loop turn) would otherwise keep the session window from ever growing."""


class ReceiveWindow:
    """Tracks what the peer may send (``limit``) against what has arrived and been consumed.

    A stream's window: it doubles when half of it is released within two round trips
    (the smoothed RTT its caller passes)."""

    __slots__ = (
        "_epoch_start",
        "_epoch_start_consumed",
        "consumed",
        "limit",
        "max_window",
        "received",
        "window",
    )

    def __init__(self, window: int, max_window: int, start: int = 0) -> None:
        self.window = window
        self.max_window = max(max_window, window)
        self.received = start
        self.consumed = start
        self.limit = start + window
        self._epoch_start: float | None = None
        self._epoch_start_consumed = start

    def on_data(self, end_offset: int) -> None:
        """Account bytes up to ``end_offset``; raise if beyond the credit granted."""
        if end_offset > self.limit:
            raise FlowControlError(
                f"peer sent up to byte {end_offset}, beyond its credit of {self.limit}"
            )
        if end_offset > self.received:
            self.received = end_offset

    def consume(
        self,
        nbytes: int,
        now: float,
        rtt: float | None,
        room: Callable[[], int] | None = None,
    ) -> int | None:
        """``nbytes`` were released; return a new limit to grant, or None.

        ``rtt``: the round trip the window must cover (None: no sample yet, no growth).
        ``room()``, asked only when the window is about to grow, caps the growth.
        """
        self.consumed += nbytes
        if self._epoch_start is None:
            self._epoch_start = now
            self._epoch_start_consumed = self.consumed - nbytes
        if self.limit - self.consumed >= self.window // 2:
            return None
        self._maybe_grow(now, rtt, room)
        self.limit = self.consumed + self.window
        return self.limit

    def _maybe_grow(self, now: float, rtt: float | None, room: Callable[[], int] | None) -> None:
        if self._epoch_start is None:
            return
        used = self.consumed - self._epoch_start_consumed
        fast = rtt is not None and now - self._epoch_start < 2 * rtt
        if used >= self.window // 2 and fast and self.window < self.max_window:
            grown = min(self.max_window, self.window * 2)
            if room is not None:
                grown = min(grown, self.window + max(0, room()))
            self.window = grown
        if used >= self.window // 2:
            self._epoch_start = now
            self._epoch_start_consumed = self.consumed


class SessionReceiveWindow(ReceiveWindow):
    """The session's window (stream 0): grows on the arrival rate over an epoch of at
    least ``SESSION_EPOCH`` and two round trips (the minimum RTT its caller passes), not
    on how fast half a window went (ADR 0070)."""

    __slots__ = ()

    def _maybe_grow(self, now: float, rtt: float | None, room: Callable[[], int] | None) -> None:
        """Double when the rate released over the epoch fills half the window in two
        round trips, so a burst of bytes that stood in a socket is not a fast path.
        The session's growth is not capped by ``room`` (only stream windows share a
        budget)."""
        if self._epoch_start is None or rtt is None:
            return
        rtt = max(rtt, RTT_FLOOR)
        elapsed = now - self._epoch_start
        if elapsed < max(SESSION_EPOCH, 2 * rtt):
            return
        used = self.consumed - self._epoch_start_consumed
        if used * 2 * rtt >= elapsed * (self.window // 2) and self.window < self.max_window:
            self.window = min(self.max_window, self.window * 2)
        self._epoch_start = now
        self._epoch_start_consumed = self.consumed
