"""Delay-based pacing keeps the bottleneck queue short and the link full."""

from __future__ import annotations

import statistics

import pytest

from accessfabric.session import SessionConfig
from accessfabric.session import events as ev
from accessfabric.wire import TrafficClass
from tests.session.bottleneck import BottleneckRun
from tests.session.pair import make_pair, received_bytes

RATE = 12_500_000.0  # 100 Mbit/s
DELAY = 0.005  # one way
BUFFER = 1 << 20  # a bloated socket buffer: 84 ms at this rate


def _run(
    pacing: float | None,
    duration: float = 3.0,
    *,
    rate: float = RATE,
    buffer: int = BUFFER,
    reply_jitter: float = 0.0,
) -> tuple[BottleneckRun, float]:
    config = SessionConfig(
        pacing_target_delay=pacing,
        initial_stream_window=8 << 20,
        initial_session_window=16 << 20,
        keepalive_interval=None,
    )
    # The handshake crosses the simulated link too, so every RTT sample sees its delay.
    pair = make_pair(config, config, handshake=False)
    sim = BottleneckRun(rate=rate, delay=DELAY, buffer=buffer, reply_jitter=reply_jitter)
    sim.run(pair.a, pair.b, 0.1, ping_every=1.0)
    bulk = pair.a.open_stream("download", TrafficClass.BULK)
    chunk = b"x" * (1 << 20)
    t = 0.0
    delivered_at_half = 0
    while t < duration:
        while pair.a.send_buffer_available(bulk) >= len(chunk):
            pair.a.send_data(bulk, chunk)
        sim.run(pair.a, pair.b, 0.1, ping_every=0.02)
        t += 0.1
        if delivered_at_half == 0 and t >= duration / 2:
            delivered_at_half = sim.delivered
    # Judge the steady state: the second half of the run.
    return sim, (sim.delivered - delivered_at_half) / (rate * (duration - duration / 2))


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


@pytest.mark.slow
def test_pacing_keeps_rtt_low_and_link_full() -> None:
    paced, utilisation = _run(pacing=0.002)
    unpaced, unpaced_utilisation = _run(pacing=None)
    base = 2 * DELAY
    steady = paced.ping_rtts[len(paced.ping_rtts) // 2 :]
    steady_unpaced = unpaced.ping_rtts[len(unpaced.ping_rtts) // 2 :]
    # Without pacing the pings queue behind the whole bloated buffer.
    assert statistics.median(steady_unpaced) > base + 0.05
    # With pacing they see about the target of queueing.
    assert statistics.median(steady) < base + 0.005, statistics.median(steady)
    assert _p99(steady) < base + 0.012, _p99(steady)
    # ...and bulk still fills the link.
    assert unpaced_utilisation > 0.9
    assert utilisation >= 0.9, utilisation


@pytest.mark.slow
def test_noise_that_pacing_cannot_remove_does_not_throttle_bulk() -> None:
    """Spiky reply delay (a busy CPU, ACK batching) is not a queue: bulk keeps its rate."""
    fast = 40_000_000.0  # the link is not the bottleneck; a small socket buffer
    _, paced_utilisation = _run(0.002, rate=fast, buffer=256 * 1024, reply_jitter=0.002)
    _, unpaced_utilisation = _run(None, rate=fast, buffer=256 * 1024, reply_jitter=0.002)
    assert unpaced_utilisation > 0.5
    # Noise the pacer cannot tell from a queue costs at most a sixth of the throughput.
    assert paced_utilisation >= 0.83 * unpaced_utilisation, (paced_utilisation, unpaced_utilisation)


def test_bytes_a_stopped_reader_holds_beyond_a_relay_stop_counting_as_in_flight() -> None:
    """Issue 13: ACKs of a relayed stream are end to end.  Bytes the next hop keeps for a
    reader that stopped never get one, and must not hold the pacer's window (and with it
    every shared-class stream of the session) for good."""
    config = SessionConfig(pacing_target_delay=0.001, keepalive_interval=None)
    pair = make_pair(config, config)
    a, b = pair.a, pair.b
    stuck = a.open_stream("download", TrafficClass.BULK)
    pair.pump()
    b.relay_stream(stuck)  # b passes on the far end's ACKs: none come, that reader stopped
    assert a.pacer is not None
    a.pacer.window = 64 * 1024  # the pacer saw a queue: it limits bytes in flight
    a.send_data(stuck, b"s" * 200_000)
    pair.pump()
    assert 63 * 1024 < len(received_bytes(pair.events_b, stuck)) <= 64 * 1024
    other = a.open_stream("other", TrafficClass.BULK)
    a.send_data(other, b"o" * 10_000)
    pair.pump()
    assert received_bytes(pair.events_b, other) == b""  # the window is full of stuck bytes
    # The session looks again by itself; once stuck bytes stop counting, both streams
    # get their turns (the stuck one only until its own credit runs out).
    for _ in range(10):
        wake = a.get_timer()
        assert wake is not None and wake <= pair.now + 0.06
        pair.now = wake
        pair.events_a += a.handle_timer(pair.now)
        pair.pump()
        if received_bytes(pair.events_b, other):
            break
    assert received_bytes(pair.events_b, other) == b"o" * 10_000
    assert a.pacer_parked_bytes > 63 * 1024
    assert not [e for e in pair.events_a if isinstance(e, ev.StreamReset)]
