"""A session pair whose receiver reads its socket at a fixed rate (a node whose loop is
busy), smoothly or in bursts after stalls, and sends a trickle of data back; time is
injected (ADR 0070, 0072)."""

from __future__ import annotations

from dataclasses import dataclass, field

from accessfabric.session import Session
from accessfabric.session import events as ev

TICK = 0.0002
READ_RATE = 50e6
"""Bytes/s the receiver takes out of its socket."""
SOCKET_BUFFERS = 10 << 20
"""What the kernel lets stand between the two sessions (send + receive buffers)."""
DELAY = 0.00005
STALL_EVERY = 500
BACKLOG_READ = 256 * 1024
"""What one read takes of a backlog (a carrier's read size), one read per tick ..."""
BACKLOG_TICKS = 8
"""... for this many ticks after a stall."""


@dataclass
class CpuBoundReader:
    """a -> b through a socket FIFO that b empties at ``READ_RATE``; b -> a after ``DELAY``."""

    a: Session
    b: Session
    stall_ticks: int = 0
    """Every ``STALL_EVERY`` ticks the reader stops for this many (a loop turn that ran
    long), then drains the backlog as a socket gives it: ``BACKLOG_READ`` per tick."""
    now: float = 0.0
    ticks: int = 0
    active_ticks: int = 0
    starved_ticks: int = 0
    """Ticks, once bulk flows, in which the reader ran at its rate and found less."""
    bulk_flowing: bool = False
    socket: bytearray = field(default_factory=bytearray)
    to_a: list[tuple[float, bytes]] = field(default_factory=list)
    most_standing: int = 0
    delivered: int = 0
    interactive_sent: dict[int, float] = field(default_factory=dict)
    interactive_waits: list[float] = field(default_factory=list)
    _interactive_seen: int = 0

    def step(self, interactive_stream: int | None) -> None:
        now = self.now
        room = SOCKET_BUFFERS - len(self.socket)
        if room > 0:
            self.socket += self.a.data_to_send(max_bytes=room, now=now)
        self.most_standing = max(self.most_standing, len(self.socket))
        self.ticks += 1
        phase = self.ticks % STALL_EVERY
        take = 0
        if phase >= self.stall_ticks:
            self.active_ticks += 1
            backlog = self.stall_ticks and phase < self.stall_ticks + BACKLOG_TICKS
            take = BACKLOG_READ if backlog else int(READ_RATE * TICK)
            if self.bulk_flowing and not backlog and len(self.socket) < take:
                self.starved_ticks += 1
        chunk, self.socket = bytes(self.socket[:take]), self.socket[take:]
        for event in self.b.receive_data(chunk, now) if chunk else ():
            if isinstance(event, ev.DataReceived):
                self.b.acknowledge_received(event.stream_id, len(event.data))
                if event.stream_id == interactive_stream:
                    self._interactive_seen += len(event.data)
                    for offset, sent in list(self.interactive_sent.items()):
                        if offset < self._interactive_seen:
                            self.interactive_waits.append(now - sent)
                            del self.interactive_sent[offset]
                else:
                    self.delivered += len(event.data)
        reply = self.b.data_to_send(now=now)
        if reply:
            self.to_a.append((now + DELAY, reply))
        while self.to_a and self.to_a[0][0] <= now:
            _, data = self.to_a.pop(0)
            for event in self.a.receive_data(data, now):
                if isinstance(event, ev.DataReceived):
                    self.a.acknowledge_received(event.stream_id, len(event.data))
        self.now = round(now + TICK, 9)
