"""Does a node's own ``[control] heartbeat_interval`` fit the control plane's policy?

The control plane counts a node ``late`` after ``late_after_s`` and ``unreachable``
after ``unreachable_after_s`` of silence (2.5 and 4.5 of its policy's interval,
``control/server/heartbeats.py``; the policy document carries both).  A node configured
to heartbeat less often than the policy asks is late or unreachable between two of its
heartbeats: it flaps — its directory entry comes and goes, its leases are refused
(``source_not_live``), devices placed on it move (issue 17: the fleet tool's nodes at 5 s
under a 1 s policy did exactly that, silently).  :func:`heartbeat_mismatch` says so;
the control link logs it (``heartbeat interval exceeds the policy``) and shows it in
``status``, and ``accessfabric config check`` warns from the cached policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JITTER = 1.1
"""A heartbeat may come up to 10 % late (the control link's jitter)."""
LATE_FACTOR = 2.5
UNREACHABLE_FACTOR = 4.5
"""The control plane's thresholds in policy intervals, for a policy without them."""


@dataclass(frozen=True, slots=True)
class HeartbeatMismatch:
    configured_s: float
    policy_s: float
    late_after_s: float
    unreachable_after_s: float
    effect: str
    """``unreachable``, ``late`` or ``slower`` (slower than asked, still in time)."""

    def describe(self) -> str:
        what = {
            "unreachable": "the control plane counts this node unreachable between two of "
            "its heartbeats (it flaps: directory entry, leases and placed devices come and "
            "go)",
            "late": "the control plane counts this node late (degraded) between two of its "
            "heartbeats",
            "slower": "it heartbeats less often than the control plane asks",
        }[self.effect]
        return (
            f"[control] heartbeat_interval = {self.configured_s:g} s exceeds the control "
            f"plane's policy ({self.policy_s:g} s; late after {self.late_after_s:g} s, "
            f"unreachable after {self.unreachable_after_s:g} s): {what}; remove the key "
            "(the policy's interval is used) or lower it"
        )


def _seconds(policy: dict[str, Any], key: str) -> float | None:
    value = policy.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def heartbeat_mismatch(
    configured: float | None, policy: dict[str, Any] | None
) -> HeartbeatMismatch | None:
    """The mismatch of a configured interval with a policy document (None: fits, or
    nothing to compare: no configured interval, no policy cached yet)."""
    if configured is None or not policy:
        return None
    interval = _seconds(policy, "heartbeat_interval_s")
    if interval is None or configured <= interval:
        return None
    late = _seconds(policy, "late_after_s") or LATE_FACTOR * interval
    unreachable = _seconds(policy, "unreachable_after_s") or UNREACHABLE_FACTOR * interval
    gap = configured * JITTER
    effect = "unreachable" if gap >= unreachable else "late" if gap >= late else "slower"
    return HeartbeatMismatch(configured, interval, late, unreachable, effect)
