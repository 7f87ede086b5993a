"""``ReplicaSet``: which control replica a node talks to, and which ones failed.

A node lists every control replica (``[control] urls``).  It sticks to the replica that
answered last; when that one fails (connection error, timeout, 5xx such as a replica's
``503 store_unavailable``) the request goes to the next replica at once, and the failed
replica is skipped for a jittered, exponentially growing pause (uniform in [½, 1] of
``min(cap, base · 2ⁿ)``) unless every replica is in its pause.  Pure bookkeeping: no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

REPLICA_BACKOFF_BASE = 1.0
REPLICA_BACKOFF_CAP = 30.0


@dataclass(slots=True)
class ReplicaHealth:
    url: str
    last_ok_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    failures: int = 0
    skip_until: float = 0.0

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "url": self.url,
            "state": "failed" if self.failures else ("ok" if self.last_ok_at else "not tried"),
            "last_ok_s_ago": None if self.last_ok_at is None else round(now - self.last_ok_at, 1),
            "last_error": self.last_error,
            "failures": self.failures,
            "retry_in_s": round(max(0.0, self.skip_until - now), 1) if self.failures else None,
        }


class ReplicaSet:
    """The control replicas of one node, in the order to try them."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        clock: Callable[[], float],
        rng: random.Random | None = None,
        backoff_base: float = REPLICA_BACKOFF_BASE,
        backoff_cap: float = REPLICA_BACKOFF_CAP,
    ) -> None:
        cleaned = [url.rstrip("/") for url in urls]
        if not cleaned:
            raise ValueError("at least one control plane URL is needed")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("control plane URLs must not repeat")
        self._clock = clock
        self._rng = rng or random.Random()
        self._base = backoff_base
        self._cap = backoff_cap
        self.replicas = [ReplicaHealth(url) for url in cleaned]
        self.current = self.replicas[self._rng.randrange(len(self.replicas))]
        """The sticky replica: a random one first, so a fleet spreads over the replicas."""

    def order(self) -> list[ReplicaHealth]:
        """The current replica first, then the others not pausing, then the pausing ones
        (soonest back first), so a request always has somewhere to go."""
        now = self._clock()
        others = [replica for replica in self.replicas if replica is not self.current]
        self._rng.shuffle(others)
        ready = [r for r in others if r.skip_until <= now]
        pausing = sorted((r for r in others if r.skip_until > now), key=lambda r: r.skip_until)
        if self.current.skip_until <= now:
            return [self.current, *ready, *pausing]
        return [*ready, self.current, *pausing] if ready else [self.current, *pausing]

    def succeeded(self, replica: ReplicaHealth) -> None:
        replica.last_ok_at = self._clock()
        replica.failures = 0
        replica.skip_until = 0.0
        self.current = replica

    def failed(self, replica: ReplicaHealth, message: str) -> None:
        now = self._clock()
        replica.failures += 1
        replica.last_error, replica.last_error_at = message, now
        ceiling = min(self._cap, self._base * 2 ** min(replica.failures - 1, 30))
        replica.skip_until = now + self._rng.uniform(ceiling / 2, ceiling)

    def to_json(self) -> list[dict[str, object]]:
        now = self._clock()
        return [
            {**replica.to_json(now), "current": replica is self.current}
            for replica in self.replicas
        ]


def replica_summary(replicas: Sequence[dict[str, object]]) -> str:
    """One status line: each replica, which one answers, which failed and why."""
    parts = []
    for replica in replicas:
        state = str(replica["state"])
        text = f"{replica['url']} {state}"
        if replica.get("current") and state == "ok":
            text += " (answering)"
        if state == "failed" and replica.get("last_error"):
            text += f" ({replica['last_error']})"
        parts.append(text)
    return " | ".join(parts) or "-"
