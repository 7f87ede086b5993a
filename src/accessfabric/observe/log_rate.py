"""Log lines an outsider can cause, a few per interval per key, with a suppressed count.

A peer that misbehaves on purpose (a refused-stream flood, failed AUTHs, a header
flood against the control API, a connection flood) must not be able to grow the log.
Each caller names a key — usually ``(peer, reason)`` — and :meth:`RateLimitedLog.log`
writes the line only if that key has written fewer than ``burst`` (default 1) in the
window of ``interval`` seconds that its first line opened; the lines it swallowed are
counted and reported on the next line written for that key (``(+N suppressed)``).
The table of keys is bounded: the oldest key is forgotten first, so a flood of
distinct keys costs memory ``max_keys`` entries, no more.

The clock is passed in (``now``) so the limiter is testable without sleeping.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

DEFAULT_INTERVAL = 10.0
DEFAULT_MAX_KEYS = 4096


@dataclass(slots=True)
class _KeyState:
    window_start: float
    written: int
    suppressed: int


class RateLimitedLog:
    """``burst`` log lines per key per ``interval`` seconds; the rest are counted, not written."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = DEFAULT_INTERVAL,
        max_keys: int = DEFAULT_MAX_KEYS,
        burst: int = 1,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._logger = logger
        self._interval = interval
        self._max_keys = max_keys
        self._burst = burst
        self._keys: OrderedDict[Hashable, _KeyState] = OrderedDict()
        self.written = 0
        self.suppressed = 0

    def admit(self, key: Hashable, now: float) -> int | None:
        """Whether ``key`` may write a line now: how many of its lines were suppressed since
        its last one (0 for none), or None when it wrote its ``burst`` lines within the
        interval (this line is then counted as suppressed).  For callers that write
        structured lines themselves."""
        state = self._keys.get(key)
        if state is not None and now - state.window_start < self._interval:
            if state.written >= self._burst:
                state.suppressed += 1
                self.suppressed += 1
                return None
            state.written += 1
            suppressed, state.suppressed = state.suppressed, 0
            self._keys.move_to_end(key)
            self.written += 1
            return suppressed
        suppressed = state.suppressed if state is not None else 0
        if state is None:
            if len(self._keys) >= self._max_keys:
                self._keys.popitem(last=False)
            self._keys[key] = _KeyState(window_start=now, written=1, suppressed=0)
        else:
            state.window_start, state.written, state.suppressed = now, 1, 0
            self._keys.move_to_end(key)
        self.written += 1
        return suppressed

    def log(self, key: Hashable, level: int, message: str, *args: object, now: float) -> bool:
        """Write ``message % args`` at ``level`` unless ``key`` used up its burst in the interval.

        Returns whether the line was written.
        """
        suppressed = self.admit(key, now)
        if suppressed is None:
            return False
        if suppressed:
            self._logger.log(level, message + " (+%d suppressed)", *args, suppressed)
        else:
            self._logger.log(level, message, *args)
        return True
