"""The pacer tells a growing network queue from CPU/loopback-induced delay (issue 18, item 6).

Sans-IO: a :class:`DelayPacer` drives a sender into one of two simulated paths, with
time stepped by the test.

* **CPU pipeline, no bottleneck link** (loopback between two busy event loops): the
  receiver takes everything that arrived in one loop turn, which costs a fixed
  ``turn`` overhead plus the bytes at its processing rate, then ACKs.  More bytes in
  flight mean bigger batches and more delivered; delay rises with them, but holding
  bytes back only makes the two ends take turns.  The pacer must not limit this path:
  bulk at least 85 % of the unpaced rate in the steady state (the pacer before probing
  held it at 41 %, about what the issue measured on a quiet machine: 554 against 1,002 MB/s).
* **Bottleneck link with a bloated buffer**: a FIFO at a fixed rate behind it.  More
  in flight only queues.  The pacer must limit (queueing delay near its target) and
  keep the link full.
"""

from __future__ import annotations

import statistics
from collections import deque

from accessfabric.session.pacing import FLOOR_LIMIT, FLOOR_MAX, DelayPacer

CHUNK = 16 * 1024
SOCKET_BUFFERS = 4 << 20  # what an unpaced sender can have in flight


def _run(
    pacer: DelayPacer | None,
    *,
    rate: float,
    turn: float,
    one_way: float,
    sender_rate: float,
    duration: float,
    dt: float,
    max_batch: int | None = None,
) -> tuple[float, list[float]]:
    """(bytes/s delivered in the second half, RTT samples of the second half)."""
    in_transit: deque[tuple[float, int, float]] = deque()  # (arrives, bytes, sent at)
    arrived: deque[tuple[int, float, float]] = deque()  # (bytes, sent at, arrived)
    acks: deque[tuple[float, int, float]] = deque()  # (ack arrives, bytes, sent at)
    busy_until = 0.0
    inflight = 0
    credit = 0.0
    delivered_half = 0
    rtts: list[float] = []
    steps = int(duration / dt)
    half = steps // 2
    for step in range(steps):
        now = step * dt
        credit = min(credit + sender_rate * dt, 4 * CHUNK)  # the sender's own CPU
        while credit >= CHUNK and inflight + CHUNK <= SOCKET_BUFFERS:
            if pacer is not None and pacer.available(now) < CHUNK:
                break
            credit -= CHUNK
            inflight += CHUNK
            if pacer is not None:
                pacer.consume(CHUNK)
            in_transit.append((now + one_way, CHUNK, now))
        while in_transit and in_transit[0][0] <= now:
            arrives, size, sent = in_transit.popleft()
            arrived.append((size, sent, arrives))
        if turn > 0 and arrived and now >= busy_until:
            # One loop turn takes what arrived (at most one read's worth), then ACKs it at once.
            batch = 0
            while arrived and (max_batch is None or batch + arrived[0][0] <= max_batch):
                size, last_sent, _ = arrived.popleft()
                batch += size
            busy_until = now + turn + batch / rate
            acks.append((busy_until + one_way, batch, last_sent))
        while turn == 0 and arrived and busy_until <= now:  # a link: FIFO at its rate
            size, sent, arrives = arrived.popleft()
            busy_until = max(busy_until, arrives) + size / rate
            acks.append((busy_until + one_way, size, sent))
        while acks and acks[0][0] <= now:
            _, size, sent = acks.popleft()
            inflight -= size
            if step >= half:
                delivered_half += size
                rtts.append(now - sent)
            if pacer is not None:
                pacer.on_delivered(size, now)
                pacer.on_rtt_sample(now - sent, now)
    return delivered_half / (duration - half * dt), rtts


CPU = {
    "rate": 1e9, "turn": 0.00015, "one_way": 0.00002, "sender_rate": 1.5e9,
    "duration": 4.0, "dt": 0.00002,
}  # fmt: skip
LINK = {
    "rate": 1e8, "turn": 0.0, "one_way": 0.0005, "sender_rate": 3e8,
    "duration": 3.0, "dt": 0.0001,
}  # fmt: skip
TARGET = 0.00025


def test_cpu_induced_delay_is_not_a_queue_the_pacer_limits() -> None:
    unpaced, _ = _run(None, **CPU)  # type: ignore[arg-type]
    pacer = DelayPacer(TARGET)
    paced, _ = _run(pacer, **CPU)  # type: ignore[arg-type]
    # The delay looked like a queue at first (the pacer engaged) ...
    assert pacer.probes > 0
    # ... but a bigger window delivered more: the delay is not ours, bulk runs free.
    assert pacer.productive_probes > 0 and pacer.floor > TARGET
    assert pacer.floor <= FLOOR_MAX
    assert paced >= 0.85 * unpaced, (paced / 1e6, unpaced / 1e6)  # the old pacer: 0.41
    # What node metrics export: the probes that paid, the base of the loop's turns.
    seen = pacer.metrics()
    assert seen.productive_probes == pacer.productive_probes > 0
    assert seen.probes >= seen.productive_probes + seen.unproductive_probes
    assert seen.floor == pacer.floor
    assert seen.min_rtt is not None and CPU["turn"] <= seen.min_rtt < 0.001


SLOW_LOOP = {
    "rate": 4e8, "turn": 0.001, "one_way": 0.00002, "sender_rate": 6e8,
    "duration": 2.0, "dt": 0.00002, "max_batch": 256 * 1024,
}  # fmt: skip
"""A receiver whose loop turn costs 1 ms (a busy node) and reads at most 256 KiB a turn."""


def test_a_slow_loop_turn_is_not_a_queue_either() -> None:
    """The base RTT is itself about one turn, and waiting for the other end's turn adds
    about one more: a fixed 1 ms cap let no probe pay and held bulk at 19 % of unpaced."""
    unpaced, _ = _run(None, **SLOW_LOOP)  # type: ignore[arg-type]
    pacer = DelayPacer(TARGET)
    paced, _ = _run(pacer, **SLOW_LOOP)  # type: ignore[arg-type]
    assert pacer.productive_probes > 0
    assert FLOOR_MAX < pacer.floor <= min(FLOOR_LIMIT, pacer.floor_cap), pacer.floor
    assert paced >= 0.85 * unpaced, (paced / 1e6, unpaced / 1e6)


def test_a_growing_network_queue_is_limited() -> None:
    _, unpaced_rtts = _run(None, **LINK)  # type: ignore[arg-type]
    pacer = DelayPacer(TARGET)
    paced, rtts = _run(pacer, **LINK)  # type: ignore[arg-type]
    base = 2 * LINK["one_way"]
    # Unpaced, the socket buffers' worth queues at the link (~40 ms).
    assert statistics.median(unpaced_rtts) > base + 0.02
    # Paced: limiting, the queue near the target, probes found nothing to gain ...
    assert pacer.active and pacer.floor == 0.0
    assert statistics.median(rtts) < base + 0.002, statistics.median(rtts)
    assert statistics.quantiles(rtts, n=100)[98] < base + 0.005
    # ... and the link stays full.
    assert paced >= 0.9 * LINK["rate"], paced / 1e6
    # What node metrics export: limiting at the link's rate above the path's base RTT,
    # every probe found a full pipe, and the delay made it back off.
    seen = pacer.metrics()
    assert seen.limiting and seen.window == pacer.window and seen.in_flight == pacer.inflight
    assert seen.delivery_rate is not None
    assert 0.85 * LINK["rate"] <= seen.delivery_rate <= 1.1 * LINK["rate"], seen.delivery_rate
    assert seen.min_rtt is not None and base <= seen.min_rtt < base + 0.0005, seen.min_rtt
    assert seen.queueing_delay is not None and 0 <= seen.queueing_delay < 0.002
    assert seen.productive_probes == 0 and seen.unproductive_probes >= 1
    assert seen.probes - seen.unproductive_probes <= 1  # at most one under way
    assert seen.backoffs == pacer.slowdowns > 0
