"""Token buckets with injected time, one per key, in bounded memory.

Used to slow down failed authentications per source address and per claimed node id.
Nothing here reads a clock: every call takes ``now`` (seconds, any monotonic origin).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

MAX_KEY_LENGTH = 128


class TokenBucket:
    """``burst`` tokens that refill at ``rate`` tokens per second; an action costs ``cost``.

    A new bucket is full.  Time that runs backwards adds nothing (and is not remembered),
    so a clock step cannot mint tokens.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        if not rate >= 0.0:
            raise ValueError(f"rate must be >= 0, got {rate!r}")
        if not burst > 0.0:
            raise ValueError(f"burst must be > 0, got {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = self.burst
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        if self._last is None:
            self._last = now
        elif now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def tokens(self, now: float) -> float:
        """Tokens available at ``now``."""
        self._refill(now)
        return self._tokens

    def is_full(self, now: float) -> bool:
        """True when the bucket holds ``burst`` tokens: it then remembers nothing useful."""
        return self.tokens(now) >= self.burst

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if available and return True; otherwise spend none."""
        if not cost >= 0.0:
            raise ValueError(f"cost must be >= 0, got {cost!r}")
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False


class KeyedRateLimiter:
    """One :class:`TokenBucket` per key (a source address, a claimed node id), at most
    ``max_keys`` of them.

    When a new key arrives and the table is full, the least recently used bucket goes
    (``evicted`` counts those that were still draining, i.e. evictions that forgave a key);
    :meth:`prune` drops every bucket that has refilled completely, which loses nothing.
    Keys longer than ``MAX_KEY_LENGTH`` characters are stored as their SHA-256, so memory
    stays bounded even for keys a peer chooses.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 10000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        TokenBucket(rate, burst)  # validate the parameters once, up front
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.allowed = 0
        self.denied = 0
        self.evicted = 0
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and _storage_key(key) in self._buckets

    def take(self, key: str, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` from ``key``'s bucket; count and return whether it was allowed."""
        stored = _storage_key(key)
        bucket = self._buckets.get(stored)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                _, oldest = self._buckets.popitem(last=False)
                if not oldest.is_full(now):
                    self.evicted += 1
            bucket = TokenBucket(self.rate, self.burst)
            self._buckets[stored] = bucket
        else:
            self._buckets.move_to_end(stored)
        if bucket.take(now, cost):
            self.allowed += 1
            return True
        self.denied += 1
        return False

    def allows(self, key: str, now: float, cost: float = 1.0) -> bool:
        """Whether ``key`` could spend ``cost`` now, without spending or counting anything."""
        bucket = self._buckets.get(_storage_key(key))
        return bucket is None or bucket.tokens(now) >= cost

    def prune(self, now: float) -> int:
        """Drop every bucket that is full at ``now``; return how many were dropped."""
        full = [key for key, bucket in self._buckets.items() if bucket.is_full(now)]
        for key in full:
            del self._buckets[key]
        return len(full)


def _storage_key(key: str) -> str:
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
