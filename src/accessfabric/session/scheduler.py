"""Which stream sends next: strict priority for the urgent classes, fair shares for the rest.

control > dns > interactive are served by strict priority (round-robin among
the streams of one class).  reliable, bulk and droppable share what is left by
deficit round-robin with weights, so bulk always keeps a guaranteed minimum
share and nothing starves.  Paced classes can be held back by the session's
pacer without holding back the urgent ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from accessfabric.wire.registry import TrafficClass

URGENT_CLASSES = (TrafficClass.CONTROL, TrafficClass.DNS, TrafficClass.INTERACTIVE)
SHARED_CLASSES = (TrafficClass.RELIABLE, TrafficClass.BULK, TrafficClass.DROPPABLE)
DEFAULT_WEIGHTS = {TrafficClass.RELIABLE: 4, TrafficClass.BULK: 2, TrafficClass.DROPPABLE: 1}
_NO_STREAMS: OrderedDict[int | str, OrderedDict[int, None] | None] = OrderedDict()
"""A class no stream was ever marked in; never written (``mark_ready`` replaces it)."""


_NO_GROUPS: dict[int, str] = {}
"""No stream was ever put in a group; never written (``set_group`` replaces it)."""

Slot = OrderedDict[int, None] | None
"""A class's ready entry: ``None`` for a stream of its own (keyed by its id), or the ready
streams of one group (keyed by the group's name), in round-robin order."""


class ClassScheduler:
    """Keeps the streams that have something to send, by class, and picks the next one.

    Within a class, turns go round the ready *entries*: a stream of its own, or a group
    of streams (:meth:`set_group`) that takes one turn where a lone stream takes one and
    passes it round its own streams.  A tenant's ten bulk streams on a session then get
    the same share of their class as another tenant's one (issue 17).
    """

    __slots__ = ("_deficit", "_groups", "_ready", "_rr", "quantum", "weights")

    def __init__(self, quantum: int, weights: dict[TrafficClass, int] | None = None) -> None:
        self.quantum = quantum
        # DEFAULT_WEIGHTS itself until ``set_weight`` (copied then): an idle session's
        # scheduler makes no dict of its own for them (issue 17).
        self.weights = DEFAULT_WEIGHTS if weights is None else dict(weights)
        # Per class: ready entries in round-robin order (see ``Slot``).  A class holds the
        # shared empty ``_NO_STREAMS`` until its first stream is marked.
        self._ready: dict[TrafficClass, OrderedDict[int | str, Slot]] = dict.fromkeys(
            TrafficClass, _NO_STREAMS
        )
        self._groups = _NO_GROUPS
        self._deficit = dict.fromkeys(SHARED_CLASSES, 0)
        self._rr = 0  # position in SHARED_CLASSES for DRR

    def set_weight(self, traffic_class: TrafficClass, weight: int) -> None:
        if self.weights is DEFAULT_WEIGHTS:
            self.weights = dict(DEFAULT_WEIGHTS)
        self.weights[traffic_class] = max(1, weight)

    def set_group(self, stream_id: int, traffic_class: TrafficClass, group: str) -> None:
        """Put ``stream_id`` in ``group``: the group's streams share one turn of their class."""
        ready = stream_id in self.ready_ids((traffic_class,))
        if ready:
            self.discard(stream_id, traffic_class)
        if self._groups is _NO_GROUPS:
            self._groups = {}
        self._groups[stream_id] = group
        if ready:
            self.mark_ready(stream_id, traffic_class)

    def forget(self, stream_id: int, traffic_class: TrafficClass) -> None:
        """The stream is gone from the session: drop it from its class and its group."""
        self.discard(stream_id, traffic_class)
        if self._groups:
            self._groups.pop(stream_id, None)

    def _group_of(self, stream_id: int) -> str | None:
        return self._groups.get(stream_id) if self._groups else None

    def mark_ready(self, stream_id: int, traffic_class: TrafficClass) -> None:
        ready = self._ready[traffic_class]
        if ready is _NO_STREAMS:
            ready = self._ready[traffic_class] = OrderedDict()
        group = self._group_of(stream_id)
        if group is None:
            if stream_id not in ready:
                ready[stream_id] = None
            return
        slot = ready.get(group)
        if slot is None:
            slot = ready[group] = OrderedDict()
        if stream_id not in slot:
            slot[stream_id] = None

    def discard(self, stream_id: int, traffic_class: TrafficClass) -> None:
        ready = self._ready[traffic_class]
        group = self._group_of(stream_id)
        if group is None:
            ready.pop(stream_id, None)
            return
        slot = ready.get(group)
        if slot is not None:
            slot.pop(stream_id, None)
            if not slot:
                del ready[group]

    def ready_ids(self, classes: Iterable[TrafficClass]) -> list[int]:
        """The streams of ``classes`` that have something to send."""
        ids: list[int] = []
        for cls in classes:
            for key, slot in self._ready[cls].items():
                if slot is None:
                    ids.append(key)  # type: ignore[arg-type]
                else:
                    ids.extend(slot)
        return ids

    def _first(self, ready: OrderedDict[int | str, Slot]) -> int:
        key, slot = next(iter(ready.items()))
        return key if slot is None else next(iter(slot))  # type: ignore[return-value]

    def has_urgent(self) -> bool:
        ready = self._ready
        return bool(
            ready[TrafficClass.CONTROL]
            or ready[TrafficClass.DNS]
            or ready[TrafficClass.INTERACTIVE]
        )

    def has_shared(self) -> bool:
        ready = self._ready
        return bool(
            ready[TrafficClass.RELIABLE]
            or ready[TrafficClass.BULK]
            or ready[TrafficClass.DROPPABLE]
        )

    def next_urgent(self) -> tuple[int, TrafficClass] | None:
        for traffic_class in URGENT_CLASSES:
            ready = self._ready[traffic_class]
            if ready:
                return self._first(ready), traffic_class
        return None

    def next_shared(self) -> tuple[int, TrafficClass] | None:
        """Deficit round-robin over the shared classes."""
        ready = self._ready
        if not self.has_shared():
            return None
        while True:
            traffic_class = SHARED_CLASSES[self._rr]
            queue = ready[traffic_class]
            if not queue:
                self._deficit[traffic_class] = 0
                self._rr = (self._rr + 1) % len(SHARED_CLASSES)
                continue
            if self._deficit[traffic_class] > 0:
                return self._first(queue), traffic_class
            self._deficit[traffic_class] += self.quantum * self.weights[traffic_class]
            if self._deficit[traffic_class] > 0:
                return self._first(queue), traffic_class
            self._rr = (self._rr + 1) % len(SHARED_CLASSES)

    def allowance(self, traffic_class: TrafficClass) -> int:
        """Bytes the picked stream may send before the scheduler must choose again.

        An urgent stream gets one frame when others of its class wait (round-robin),
        else as much as it has; a shared class gets what is left of its deficit.
        """
        if traffic_class in self._deficit:
            return max(1, self._deficit[traffic_class])
        ready = self._ready[traffic_class]
        several = len(ready) > 1 or any(s is not None and len(s) > 1 for s in ready.values())
        return 1 if several else 1 << 62

    def charge(self, stream_id: int, traffic_class: TrafficClass, nbytes: int, ready: bool) -> None:
        """Account ``nbytes`` sent by a stream; rotate it (and its group) to the back."""
        self.discard(stream_id, traffic_class)
        if ready:
            self.mark_ready(stream_id, traffic_class)  # never writes the shared empty class
        group = self._group_of(stream_id)
        if group is not None and group in self._ready[traffic_class]:
            self._ready[traffic_class].move_to_end(group)
        if traffic_class in self._deficit:
            self._deficit[traffic_class] -= nbytes
            if self._deficit[traffic_class] <= 0:
                self._rr = (self._rr + 1) % len(SHARED_CLASSES)

    def charge_in_place(self, traffic_class: TrafficClass, nbytes: int) -> None:
        """Account ``nbytes`` sent by a stream whose turn was cut short (the session ran
        out of credit): it stays first in its class for when credit returns."""
        if traffic_class in self._deficit:
            self._deficit[traffic_class] -= nbytes
