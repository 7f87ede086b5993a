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
"""

from __future__ import annotations

from collections.abc import Callable

from accessfabric.errors import FlowControlError


class ReceiveWindow:
    """Tracks what the peer may send (``limit``) against what has arrived and been consumed."""

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
        srtt: float | None,
        room: Callable[[], int] | None = None,
    ) -> int | None:
        """``nbytes`` were released; return a new limit to grant, or None.

        ``room()``, asked only when the window is about to grow, caps the growth.
        """
        self.consumed += nbytes
        if self._epoch_start is None:
            self._epoch_start = now
            self._epoch_start_consumed = self.consumed - nbytes
        if self.limit - self.consumed >= self.window // 2:
            return None
        self._maybe_grow(now, srtt, room)
        self.limit = self.consumed + self.window
        return self.limit

    def _maybe_grow(self, now: float, srtt: float | None, room: Callable[[], int] | None) -> None:
        if self._epoch_start is None:
            return
        used = self.consumed - self._epoch_start_consumed
        fast = srtt is not None and now - self._epoch_start < 2 * srtt
        if used >= self.window // 2 and fast and self.window < self.max_window:
            grown = min(self.max_window, self.window * 2)
            if room is not None:
                grown = min(grown, self.window + max(0, room()))
            self.window = grown
        if used >= self.window // 2:
            self._epoch_start = now
            self._epoch_start_consumed = self.consumed
