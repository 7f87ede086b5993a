"""A CPU-bound reader does not grow the session window on its own queue (ADR 0070).

The session's credit bounds the bytes between the sender's session and the
receiver's: what stands in the carrier's socket buffers, the one queue where an
interactive frame cannot overtake bulk.  Here the receiver reads its socket at a
fixed rate (a node whose loop is busy), smoothly or in bursts after stalls (one
read takes all the socket holds), while it sends a trickle of data back (the ACKs of
a tunnelled TCP flow), so the RTT its acknowledgements see includes the bytes
standing in front of it.  Time is injected; nothing here is timed.
"""

from __future__ import annotations

import pytest

from accessfabric.session import SessionConfig
from accessfabric.session.flow import ReceiveWindow, SessionReceiveWindow
from accessfabric.wire import TrafficClass
from tests.session.cpu_bound_reader import READ_RATE, TICK, CpuBoundReader
from tests.session.pair import make_pair


def _run(seconds: float, stall_ticks: int) -> CpuBoundReader:
    config = SessionConfig(
        pacing_target_delay=None,  # the window alone (the pacer has its own tests)
        keepalive_interval=None,
        initial_stream_window=16 << 20,  # stream windows never bind here
        max_stream_window=16 << 20,
    )
    pair = make_pair(config, config, handshake=False)
    run = CpuBoundReader(pair.a, pair.b, stall_ticks)
    for _ in range(200):  # handshake and the RTT probes across the idle path
        run.step(None)
    bulk = pair.a.open_stream("download", TrafficClass.BULK)
    acks = pair.b.open_stream("acks", TrafficClass.RELIABLE)
    interactive = pair.a.open_stream("ping", TrafficClass.INTERACTIVE)
    chunk = b"z" * (256 * 1024)
    sent = 0
    steps = int(seconds / TICK)
    for step in range(steps):
        while pair.a.send_buffer_available(bulk) >= len(chunk):
            pair.a.send_data(bulk, chunk)
        run.bulk_flowing = step >= 10  # the first credit round trips
        if step % 5 == 0:  # 1 ms: the tunnelled flow's ACKs on the way back
            pair.b.send_data(acks, b"a" * 64)
        if step % 100 == 50 and step > steps // 2:  # 20 ms: a ping, once the queue settled
            run.interactive_sent[sent] = run.now
            pair.a.send_data(interactive, b"p" * 64)
            sent += 64
        run.step(interactive)
    return run


@pytest.mark.parametrize("stall_ticks", [0, 150], ids=["smooth", "30ms-stall-per-100ms"])
def test_a_cpu_bound_reader_keeps_its_session_window(stall_ticks: int) -> None:
    run = _run(seconds=1.5, stall_ticks=stall_ticks)
    window = SessionConfig().initial_session_window
    # The bytes standing in the socket stay within the initial session window (on the
    # smoothed RTT the window grew on its own queue to the socket buffers' 10 MiB; on
    # the minimum RTT alone, the backlog a stall leaves, read at once in 256 KiB reads,
    # looked like a fast path: 4 MB) ...
    assert run.most_standing <= window + 64 * 1024, run.most_standing
    # ... an interactive frame waits behind at most that much (and one stall) ...
    stall = stall_ticks * TICK
    assert run.interactive_waits
    assert max(run.interactive_waits) <= 1.2 * window / READ_RATE + stall
    # ... and the reader is never starved: whenever it runs, its read finds enough.
    assert run.starved_ticks <= run.active_ticks // 1000, (run.starved_ticks, run.active_ticks)


def test_the_session_window_grows_on_a_sustained_rate_not_a_burst() -> None:
    rtt = 0.0002

    def bursty(window: ReceiveWindow) -> int:
        window.consume(1, now=0.0, rtt=rtt)  # the epoch is open before the first burst
        for step in range(1, 20):  # a window every 20 ms, four frames of one read at once
            for _ in range(4):
                window.consume(250, now=step * 0.02, rtt=rtt)
        return window.window

    # On how fast half a window went, one read's frames look like a fast path ...
    assert bursty(ReceiveWindow(1000, 64_000)) > 1000
    # ... on the rate over an epoch of at least 10 ms, they are 50 kB/s: no growth.
    assert bursty(SessionReceiveWindow(1000, 64_000)) == 1000
    wan = SessionReceiveWindow(1000, 64_000)
    for step in range(400):  # a window per 50 ms RTT, steadily: window-limited, grows
        wan.consume(50, now=step * 0.0025, rtt=0.05)
    assert wan.window >= 4000
