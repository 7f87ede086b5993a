"""Session placement: which entries of its pool a device should hold a session with.

The control plane orders a device's candidate entries (the ``mobile`` directory's) and
sends the order as the directory's ``placement``: the first is where the device holds
its session, the rest are alternates in order.

* **Least loaded first.** Load is the entry's own count of accepted sessions
  (``pressure.sessions`` in its heartbeat).  Entries within ``LOAD_BAND`` of the least
  loaded one count as equally loaded, so one heartbeat's stale count does not send
  every device that asks in that interval to the same entry.
* **Then locality**: an entry of the device's region before one of another region,
  then the lower RTT the device measured.
* **Then rendezvous hashing** of (device, entry): among equals each device gets a
  stable, different order, so a pool of equal entries fills evenly and a dead entry's
  devices spread over all the others instead of all moving to the same one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

LOAD_BAND_SESSIONS = 32
"""Entries this many sessions above the least loaded still count as equally loaded."""
LOAD_BAND_FRACTION = 0.10
"""... or this fraction of the least loaded entry's sessions, whichever is larger."""
RTT_STEP_MS = 10.0
"""RTTs in the same step of this many milliseconds count as equally near."""
UNMEASURED = 1 << 30
"""An entry the device has not measured sorts after every measured one."""


@dataclass(frozen=True, slots=True)
class EntryCandidate:
    node_id: str
    sessions: int
    same_region: bool
    rtt_ms: float | None


def _rendezvous(device: str, entry: str) -> bytes:
    return hashlib.blake2b(f"{device}|{entry}".encode(), digest_size=8).digest()


def place(device: str, candidates: Sequence[EntryCandidate]) -> tuple[str, ...]:
    """``candidates``' node ids, the device's primary first, then its alternates."""
    if not candidates:
        return ()
    least = min(c.sessions for c in candidates)
    band = max(LOAD_BAND_SESSIONS, int(least * LOAD_BAND_FRACTION))

    def key(c: EntryCandidate) -> tuple[int, bool, int, bytes]:
        level = (c.sessions - least) // band
        rtt_step = int(c.rtt_ms // RTT_STEP_MS) if c.rtt_ms is not None else UNMEASURED
        return (level, not c.same_region, rtt_step, _rendezvous(device, c.node_id))

    return tuple(c.node_id for c in sorted(candidates, key=key))
