"""While a session carries interactive data, bulk in flight is bounded (ADR 0072).

Bulk toward a CPU-bound receiver fills the whole session window, and every byte of it
stands in the carrier's FIFO ahead of the next interactive frame.  With interactive
data on the session (either direction, within the last second) the sender keeps at
most ``interactive_in_flight`` bytes of the shared classes unacknowledged, so a ping
waits behind at most that much; the reader still finds enough to read, and a session
without interactive data keeps its whole window.  Time is injected; nothing is timed.
"""

from __future__ import annotations

from dataclasses import dataclass

from accessfabric.session import SessionConfig
from accessfabric.session.pacing import INTERACTIVE_WINDOW, DelayPacer
from accessfabric.wire import TrafficClass
from tests.session.cpu_bound_reader import READ_RATE, TICK, CpuBoundReader
from tests.session.pair import make_pair

BOUND = 256 * 1024
PING_EVERY = 100
"""Ticks between pings (20 ms)."""
SETTLE = 250
"""Ticks after the first ping before measuring: the window's worth that stood ahead of it
(the bound engages on interactive data) drains at the reader's rate in about 20 ms."""


@dataclass
class Phases:
    bulk_only: int
    """Most bytes standing in the socket while only bulk flowed."""
    with_pings: int
    """... once pings flowed (after the first one)."""
    after_pings: int
    """... a second and more after the last ping."""
    waits: list[float]
    starved_with_pings: int
    active_with_pings: int


def _run(bound: int | None, pings_from: str = "sender") -> Phases:
    config = SessionConfig(
        pacing_target_delay=1.0,  # the delay controller never engages: the bound alone
        interactive_in_flight=bound,
        keepalive_interval=None,
        initial_stream_window=16 << 20,  # stream windows never bind here
        max_stream_window=16 << 20,
    )
    pair = make_pair(config, config, handshake=False)
    run = CpuBoundReader(pair.a, pair.b)
    for _ in range(200):  # handshake and the RTT probes across the idle path
        run.step(None)
    bulk = pair.a.open_stream("download", TrafficClass.BULK)
    acks = pair.b.open_stream("acks", TrafficClass.RELIABLE)
    pinger = pair.a if pings_from == "sender" else pair.b
    interactive = pinger.open_stream("ping", TrafficClass.INTERACTIVE)
    chunk = b"z" * (256 * 1024)
    sent = 0

    def steps(seconds: float, pings: bool) -> None:
        nonlocal sent
        for step in range(int(seconds / TICK)):
            while pair.a.send_buffer_available(bulk) >= len(chunk):
                pair.a.send_data(bulk, chunk)
            run.bulk_flowing = True
            if step % 5 == 0:  # 1 ms: the tunnelled flow's ACKs on the way back
                pair.b.send_data(acks, b"a" * 64)
            if pings and step % PING_EVERY == 0:
                run.interactive_sent[sent] = run.now
                pinger.send_data(interactive, b"p" * 64)
                sent += 64
            run.step(interactive if pinger is pair.a else None)
            if pings and step == SETTLE:
                run.most_standing = 0  # once what stood before the first ping drained
                run.interactive_waits.clear()

    steps(0.3, pings=False)
    bulk_only, run.most_standing = run.most_standing, 0
    run.starved_ticks = run.active_ticks = 0
    steps(0.6, pings=True)
    with_pings = run.most_standing
    starved, active = run.starved_ticks, run.active_ticks
    steps(INTERACTIVE_WINDOW + 0.05, pings=False)
    run.most_standing = 0
    steps(0.2, pings=False)
    return Phases(bulk_only, with_pings, run.most_standing, run.interactive_waits, starved, active)


def test_interactive_data_bounds_the_bulk_standing_ahead_of_it() -> None:
    bounded, unbounded = _run(BOUND), _run(None)
    window = SessionConfig().initial_session_window
    frame = 64 * 1024
    # Bulk alone fills the session window either way ...
    assert bounded.bulk_only > window - 2 * frame, bounded
    # ... with pings, at most the bound (and one frame) stands ahead of the next one ...
    assert bounded.with_pings <= BOUND + frame, bounded
    assert unbounded.with_pings > window - 2 * frame, unbounded
    assert max(bounded.waits) <= 1.2 * (BOUND + frame) / READ_RATE, bounded.waits
    assert max(unbounded.waits) > 2 * max(bounded.waits), unbounded.waits
    # ... the reader is not starved by the bound ...
    assert bounded.starved_with_pings <= bounded.active_with_pings // 1000, bounded
    # ... and a second after the last ping bulk has the whole window again.
    assert bounded.after_pings > window - 2 * frame, bounded


def test_interactive_data_received_bounds_the_bulk_sent() -> None:
    """The exit's case: pings arrive from the peer the bulk goes to."""
    bounded = _run(BOUND, pings_from="receiver")
    assert bounded.with_pings <= BOUND + 64 * 1024, bounded
    assert bounded.after_pings > SessionConfig().initial_session_window // 2, bounded


def test_the_bound_lasts_a_second_after_the_last_interactive_data() -> None:
    pacer = DelayPacer(0.001, interactive_in_flight=BOUND)
    pacer.consume(100_000)
    assert not pacer.limiting(0.0) and pacer.available(0.0) == float("inf")
    pacer.on_interactive(1.0)  # what the session calls for DATA either way
    assert pacer.limiting(1.0) and pacer.available(1.5) == BOUND - 100_000
    assert pacer.available(1.0 + INTERACTIVE_WINDOW) == BOUND - 100_000
    assert not pacer.limiting(1.01 + INTERACTIVE_WINDOW)
    # On a path whose bandwidth-delay product is larger, two of them.
    pacer.on_rtt_sample(0.004, 1.2)  # the base RTT ...
    pacer.rate = 100e6  # ... and the delivery rate: 400 kB per round trip
    assert pacer.available(1.5) == 800_000 - 100_000
    # Then a standing queue (10 ms samples) long enough for the base to be re-read from
    # them: the bound keeps the lowest RTT seen, so the queue does not lift it.
    for at in (13.0, 13.1, 13.2, 13.3, 13.4, 24.0):
        pacer.on_rtt_sample(0.010, at)
    pacer.on_interactive(24.0)
    pacer.rate = 100e6
    assert pacer.min_rtt == 0.010 and not pacer.active
    assert pacer.available(24.5) == 800_000 - 100_000
    unbounded = DelayPacer(0.001, interactive_in_flight=None)
    unbounded.on_interactive(1.0)
    assert not unbounded.limiting(1.0)
