"""A simulated bottleneck link between two paired sessions (time is injected).

a -> b crosses a FIFO serialised at ``rate`` bytes/s behind a send buffer of
``buffer`` bytes (the kernel socket buffer plus the bottleneck queue), then a
one-way ``delay``.  b -> a only has the delay.  Everything is deterministic.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from accessfabric.session import Session, SessionState
from accessfabric.session import events as ev

SEGMENT = 16 * 1024


@dataclass
class BottleneckRun:
    rate: float
    delay: float
    buffer: int
    tick: float = 0.0005
    reply_jitter: float = 0.0
    """Mean of an exponential extra delay on b -> a (CPU and event-loop noise), FIFO kept."""
    seed: int = 1
    now: float = 0.0
    ping_rtts: list[float] = field(default_factory=list)
    delivered: int = 0
    _busy_until: float = 0.0
    _queued: list[tuple[float, int]] = field(default_factory=list)  # (departure, size)
    _to_b: list[tuple[float, int, bytes]] = field(default_factory=list)
    _to_a: list[tuple[float, int, bytes]] = field(default_factory=list)
    _seq: int = 0
    _last_reply: float = 0.0
    _rng: random.Random = field(default_factory=random.Random)

    def _in_buffer(self) -> int:
        while self._queued and self._queued[0][0] <= self.now:
            heapq.heappop(self._queued)
        return sum(size for _, size in self._queued)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def run(self, a: Session, b: Session, duration: float, ping_every: float) -> None:
        end = self.now + duration
        next_ping = self.now
        while self.now < end:
            now = self.now
            if now >= next_ping and a.state is SessionState.READY:
                a.ping(now)
                next_ping += ping_every
            timer = a.get_timer()
            if timer is not None and timer <= now:
                a.handle_timer(now)
            space = self.buffer - self._in_buffer()
            if space > 0:
                out = a.data_to_send(max_bytes=space, now=now)
                # The link delivers segment by segment, as TCP would, not write by write.
                for start_at in range(0, len(out), SEGMENT):
                    segment = out[start_at : start_at + SEGMENT]
                    start = max(now, self._busy_until)
                    self._busy_until = start + len(segment) / self.rate
                    heapq.heappush(self._queued, (self._busy_until, len(segment)))
                    self._seq += 1
                    arrival = self._busy_until + self.delay
                    heapq.heappush(self._to_b, (arrival, self._seq, segment))
            while self._to_b and self._to_b[0][0] <= now:
                _, _, data = heapq.heappop(self._to_b)
                for event in b.receive_data(data, now):
                    if isinstance(event, ev.DataReceived):
                        self.delivered += len(event.data)
                        b.acknowledge_received(event.stream_id, len(event.data))
            reply = b.data_to_send(now=now)
            if reply:
                self._seq += 1
                arrival = now + self.delay
                if self.reply_jitter:
                    arrival += self._rng.expovariate(1 / self.reply_jitter)
                self._last_reply = arrival = max(arrival, self._last_reply)
                heapq.heappush(self._to_a, (arrival, self._seq, reply))
            while self._to_a and self._to_a[0][0] <= now:
                _, _, data = heapq.heappop(self._to_a)
                for event in a.receive_data(data, now):
                    if isinstance(event, ev.PingAcknowledged):
                        self.ping_rtts.append(event.rtt)
            self.now = round(now + self.tick, 9)
