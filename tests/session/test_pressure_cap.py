"""The rate cap on bulk toward a peer under cpu/memory pressure (``PressureRateCap``, sans-IO).

The object's AIMD decisions with injected time, then a session pair pumped by hand: while
the peer reports cpu pressure, bulk toward it leaves at the cap's rate and an interactive
stream's data still goes out in the same write; when the pressure ends the cap recovers
and is lifted.
"""

from __future__ import annotations

import itertools

import pytest

from accessfabric.session import SessionConfig
from accessfabric.session import events as ev
from accessfabric.session.core import PRESSURE_HIGH
from accessfabric.session.pressure_cap import (
    GIVE_UP_AFTER,
    HOLD_OFF,
    INTERACTIVE_WINDOW,
    RECOVERY_STEPS,
    PressureRateCap,
)
from accessfabric.wire.registry import TrafficClass
from tests.session.pair import make_pair, received_bytes

MB = 1_000_000


def test_cap_halves_per_step_while_pressured_down_to_the_floor() -> None:
    cap = PressureRateCap(min_rate=100_000, high=50, step=0.25, always=True)
    now = 0.0
    for _ in range(10):  # 40 MB/s sent, no pressure: never capped
        assert cap.available(now) == float("inf")
        cap.consume(1 * MB, now)
        now += 0.025
    cap.on_peer_pressure(cpu=40, memory=49, now=now)
    assert cap.available(now) == float("inf"), "below the high mark: no cap"
    cap.on_peer_pressure(cpu=90, memory=0, now=now)
    assert cap.available(now) == 0.0
    assert cap.rate is not None and 15 * MB <= cap.rate <= 25 * MB, cap.rate  # half of ~40
    first = cap.rate
    assert cap.available(now + 0.2) >= 0  # between steps nothing changes
    assert cap.rate == first
    rates = []
    for step in range(1, 12):
        cap.available(now + 0.25 * step)
        assert cap.rate is not None
        rates.append(cap.rate)
    assert rates[0] == first / 2
    assert rates[-1] == 100_000, "the floor"
    assert all(b <= a for a, b in itertools.pairwise(rates))


def test_cap_recovers_additively_and_is_lifted_at_the_ceiling() -> None:
    cap = PressureRateCap(min_rate=100_000, high=50, step=0.25, always=True)
    cap.consume(2 * MB, 0.0)
    cap.on_peer_pressure(cpu=0, memory=80, now=0.25)  # memory counts as well
    cap.available(0.25)
    ceiling = cap.ceiling
    assert 7 * MB <= ceiling <= 9 * MB, ceiling
    for step in range(2, 12):  # at the floor from 2.0 s (less than GIVE_UP_AFTER)
        cap.available(0.25 * step)
    assert cap.rate == 100_000
    now = 3.0
    cap.on_peer_pressure(cpu=20, memory=20, now=now)
    assert cap.rate == 100_000, "recovery waits a step"
    seen = []
    for step in range(1, RECOVERY_STEPS + 2):
        cap.available(now + 0.25 * step)
        seen.append(cap.rate)
    assert seen[0] == 100_000 + ceiling / RECOVERY_STEPS
    assert seen[-1] is None and None not in seen[: RECOVERY_STEPS - 2]
    assert cap.available(now + 5) == float("inf")


def test_cap_gives_way_when_the_floor_does_not_relieve_the_peer() -> None:
    """A peer that stays pressured while we send at the floor is starved by something else
    (a shared host: every busy loop waits, ADR 0045): the cap gives way for HOLD_OFF, then
    starts again from the rate sent meanwhile.  Before, it held bulk at the floor for as
    long as the peer said so (the transition test's 64 MiB echo at 512 KiB/s for 30 s)."""
    cap = PressureRateCap(min_rate=100_000, high=50, step=0.25, always=True)
    sent_per_step = 2 * MB  # 8 MB/s offered whenever the cap lets it
    cap.on_peer_pressure(cpu=80, memory=0, now=0.0)
    now, rates = 0.0, []
    while now < 30.0:
        allowed = cap.available(now)
        cap.consume(int(min(allowed, sent_per_step)), now)
        rates.append((now, cap.rate))
        now += 0.25
    floor = [t for t, rate in rates if rate == 100_000]
    lifted = [t for t, rate in rates if rate is None]
    assert floor and lifted, rates
    assert cap.give_ups >= 2, "once per floor hold, then again after each hold-off"
    first_floor, first_lift = floor[0], lifted[0]
    assert GIVE_UP_AFTER <= first_lift - first_floor <= GIVE_UP_AFTER + 0.5, rates
    back = min(t for t, rate in rates if t > first_lift and rate is not None)
    assert HOLD_OFF <= back - first_lift <= HOLD_OFF + 0.5, rates
    assert dict(rates)[back] is not None and dict(rates)[back] > 100_000, "from the rate sent"
    # over the 30 s the cap was lifted most of the time: bulk is not pinned to the floor
    assert len(lifted) > len(rates) / 2, rates


def test_only_time_spent_sending_at_the_floor_counts_toward_giving_way() -> None:
    """Our bulk pauses while the cap is at its floor and the peer stays pressured (by other
    work, or by our other streams' peers): the pause is no evidence that the floor fails to
    relieve it.  Before, the cap gave way at the first send after a pause longer than
    GIVE_UP_AFTER, so the next burst went uncapped for HOLD_OFF while the peer still
    reported pressure (what an uncapped phase costs interactive under a CPU hog:
    docs/benchmarks.md, "pressure after the cap gives way")."""
    for polled in (False, True):  # the session idle, or asking with nothing to send
        cap = PressureRateCap(min_rate=100_000, high=50, step=0.25, always=True)
        cap.consume(2 * MB, 0.0)
        cap.on_peer_pressure(cpu=90, memory=0, now=0.25)
        now = 0.25
        while cap.rate != 100_000:  # down to the floor while sending
            now += 0.25
            cap.consume(int(min(cap.available(now), 2 * MB)), now)
        paused_until = now + 2 * GIVE_UP_AFTER
        while polled and now < paused_until:
            now += 0.25
            cap.available(now)
        now = paused_until
        sending: list[tuple[float, float | None]] = []
        while now < paused_until + GIVE_UP_AFTER + 1.0:
            now += 0.05
            sending.append((now - paused_until, cap.rate))
            cap.consume(int(min(cap.available(now), 2 * MB)), now)
        still_capped = [t for t, rate in sending if rate == 100_000]
        assert still_capped and still_capped[0] < 0.1, (polled, sending[:3])
        gave_way = min(t for t, rate in sending if rate is None)
        assert GIVE_UP_AFTER <= gave_way <= GIVE_UP_AFTER + 0.6, (polled, gave_way)
        assert cap.give_ups == 1


def test_cap_holds_the_floor_while_the_peer_recovers_below_high() -> None:
    """A peer whose level drops below ``high`` is relieved: recovery, no giving way."""
    cap = PressureRateCap(min_rate=100_000, high=50, step=0.25, always=True)
    cap.consume(2 * MB, 0.0)
    cap.on_peer_pressure(cpu=90, memory=0, now=0.25)
    now = 0.25
    while cap.rate != 100_000:
        now += 0.25
        cap.available(now)
    cap.on_peer_pressure(cpu=40, memory=0, now=now + 1.0)  # relieved at the floor
    for step in range(1, 4 * int(GIVE_UP_AFTER) + 4):
        cap.available(now + 1.0 + 0.25 * step)
        if cap.rate is None:
            break
    assert cap.give_ups == 0, "lifted by recovery, not by giving way"


def test_token_bucket_spreads_what_the_cap_allows() -> None:
    cap = PressureRateCap(min_rate=1 * MB, high=50, step=0.25, always=True)
    cap.on_peer_pressure(cpu=100, memory=0, now=0.0)
    assert cap.available(0.0) == 0.0 and cap.rate == 1 * MB
    assert cap.wait(10_000) == 0.01
    assert cap.available(0.01) == 10_000
    cap.consume(10_000, 0.01)
    assert cap.available(0.01) == 0
    assert cap.available(1.0) == 20_000, "at most BURST seconds (20 ms) are saved up"


def test_bulk_toward_a_pressured_peer_is_capped_and_interactive_still_flows() -> None:
    config = SessionConfig(
        pressure_min_rate=200_000,
        pacing_target_delay=None,
        initial_stream_window=16 << 20,
        initial_session_window=64 << 20,
        max_stream_send_buffer=16 << 20,
    )
    pair = make_pair(config, config)
    bulk = pair.a.open_stream("sync", TrafficClass.BULK)
    chat = pair.a.open_stream("chat", TrafficClass.INTERACTIVE)
    pair.a.send_data(bulk, b"x" * (8 << 20))
    pair.now = 0.01
    pair.pump()
    before = len(received_bytes(pair.take("b"), bulk))
    assert before == 8 << 20, "unpressured: everything goes at once"

    pair.b.send_pressure(0, cpu=95)
    pair.pump()  # b's NODE_PRESSURE reaches a; a's cap starts
    assert any(isinstance(e, ev.PeerPressure) for e in pair.take("a"))
    pair.a.send_data(bulk, b"y" * (8 << 20))
    bulk_seen = 0
    for tick in range(1, 201):  # 2 s in 10 ms steps, a 16-byte interactive write each
        pair.now = 0.01 + tick * 0.01
        pair.a.send_data(chat, b"i" * 16)
        pair.pump()
        events = pair.take("b")
        assert received_bytes(events, chat) == b"i" * 16, f"interactive held at tick {tick}"
        bulk_seen += len(received_bytes(events, bulk))
    assert pair.a.metrics().pressure_rate_cap == 200_000
    # The cap starts at half the rate just sent and halves every 0.25 s down to 200 kB/s:
    # far below the 8 MiB the session sent in one write before.
    assert 0 < bulk_seen < 3 << 20, bulk_seen
    late = 0
    for tick in range(201, 301):  # the third second: at the floor (< GIVE_UP_AFTER there)
        pair.now = 0.01 + tick * 0.01
        pair.pump()
        late += len(received_bytes(pair.take("b"), bulk))
    assert 100_000 <= late <= 260_000, late

    pair.b.send_pressure(0, cpu=10)
    for tick in range(301, 1001):
        pair.now = 0.01 + tick * 0.01
        pair.pump()
        bulk_seen += len(received_bytes(pair.take("b"), bulk)) + late
        late = 0
        if pair.a.metrics().pressure_rate_cap is None:
            break
    assert pair.a.metrics().pressure_rate_cap is None, "the cap is lifted once pressure ends"
    pair.pump()
    assert bulk_seen + len(received_bytes(pair.take("b"), bulk)) == 8 << 20


def test_queue_and_socket_pressure_lower_bulks_share_but_do_not_cap_its_rate() -> None:
    """Queue and descriptor pressure (ADR 0040): a lower rate toward the peer frees neither
    its send queues (per-stream credit already bounds what it buffers for us) nor its
    descriptors, so bulk keeps its rate; its DRR weight drops, as for any pressure."""
    config = SessionConfig(
        pressure_min_rate=200_000,
        pacing_target_delay=None,
        initial_stream_window=16 << 20,
        initial_session_window=64 << 20,
        max_stream_send_buffer=16 << 20,
    )
    pair = make_pair(config, config)
    bulk = pair.a.open_stream("sync", TrafficClass.BULK)
    normal = pair.a.metrics().bulk_weight
    pair.b.send_pressure(100, cpu=0, memory=0, network=100)
    pair.pump()
    assert any(isinstance(e, ev.PeerPressure) for e in pair.take("a"))
    assert pair.a.metrics().bulk_weight < normal
    seen = 0
    for tick in range(1, 101):  # 1 s: the cap would have stepped four times
        pair.now = tick * 0.01
        pair.a.send_data(bulk, b"z" * (128 << 10))
        pair.pump()
        seen += len(received_bytes(pair.take("b"), bulk))
    assert pair.a.metrics().pressure_rate_cap is None
    assert seen == 100 * (128 << 10), "bulk was held back"  # capped: ~0.6 MB at most


def test_the_cap_engages_only_while_the_session_carries_interactive() -> None:
    """On by default, for interactive (ADR 0045 amended): a bulk-only session toward a
    pressured peer keeps its rate (the cap would protect nothing and, on a shared host where
    every busy node reads as pressured, only cost bulk); interactive data in either
    direction engages it at once; INTERACTIVE_WINDOW seconds of quiet lift it at once."""
    cap = PressureRateCap(min_rate=100_000, high=50, step=0.25)
    cap.on_peer_pressure(cpu=90, memory=0, now=0.0)
    now = 0.0
    for _ in range(40):  # 10 s of bulk only: never capped
        assert cap.available(now) == float("inf")
        cap.consume(2 * MB, now)
        now += 0.25
    cap.on_interactive(now)
    assert cap.available(now) == 0.0, "interactive arrived: the cap starts at once"
    assert cap.rate is not None
    while now < 10.0 + INTERACTIVE_WINDOW - 0.25:  # interactive quiet, within the window
        now += 0.25  # (nothing sent: at the floor, the cap does not give way)
        assert cap.available(now) < float("inf") and cap.rate is not None, now
    now += 0.5  # past the window
    assert cap.available(now) == float("inf") and cap.rate is None, "quiet: lifted"


def test_give_ups_are_in_the_session_metrics() -> None:
    """``SessionMetrics.pressure_cap_give_ups`` counts the cap's give-ways (None: cap off)."""
    config = SessionConfig(
        pressure_min_rate=200_000,
        pacing_target_delay=None,
        initial_stream_window=64 << 20,
        initial_session_window=64 << 20,
        max_stream_send_buffer=16 << 20,
    )
    pair = make_pair(config, config)
    assert pair.a.metrics().pressure_cap_give_ups == 0
    off = make_pair(SessionConfig(pressure_min_rate=None), SessionConfig())
    assert off.a.metrics().pressure_cap_give_ups is None
    bulk = pair.a.open_stream("sync", TrafficClass.BULK)
    chat = pair.a.open_stream("chat", TrafficClass.INTERACTIVE)
    pair.b.send_pressure(0, cpu=95)
    pair.pump()
    for tick in range(1, 801):  # 8 s, bulk always queued, a ping every 50 ms
        pair.now = tick * 0.01
        if pair.a.metrics().queued_bytes < 1 << 20:
            pair.a.send_data(bulk, b"z" * (1 << 20))
        if tick % 5 == 0:
            pair.a.send_data(chat, b"i" * 16)
        pair.pump()
        pair.take("b")
        if tick % 50 == 0:  # the peer keeps saying so (its resend interval)
            pair.b.send_pressure(0, cpu=95)
    metrics = pair.a.metrics()
    assert metrics.pressure_cap_give_ups is not None and metrics.pressure_cap_give_ups >= 1


def test_assumed_pressure_acts_like_a_report_until_the_peer_speaks() -> None:
    """Sans-IO: ``assume_peer_pressure`` sets the levels, bulk's weight and the cap's level;
    it never overrides what the peer itself said on this session."""
    config = SessionConfig(pacing_target_delay=None)
    pair = make_pair(config, config)
    normal = pair.a.metrics().bulk_weight
    pair.a.assume_peer_pressure(0, 95, 0, 0, lapse_after=30.0)
    assert pair.a.peer_pressure == (0, 95, 0, 0)
    assert pair.a.metrics().bulk_weight < normal
    bulk = pair.a.open_stream("sync", TrafficClass.BULK)
    chat = pair.a.open_stream("chat", TrafficClass.INTERACTIVE)
    pair.a.send_data(chat, b"i" * 16)
    pair.a.send_data(bulk, b"z" * (1 << 20))
    pair.now = 0.3
    pair.pump()
    assert pair.a.metrics().pressure_rate_cap is not None, "the default cap engaged"
    pair.b.send_pressure(0, cpu=5)
    pair.pump()
    pair.a.assume_peer_pressure(0, 99, 0, 0, lapse_after=30.0)  # the peer has spoken since: ignored
    assert pair.a.peer_pressure is not None and pair.a.peer_pressure[1] < PRESSURE_HIGH
    assert pair.a.last_receive == pair.now, "when the peer's bytes last arrived"


def test_assumed_pressure_lapses_when_the_peer_never_reports_on_the_new_session() -> None:
    """A peer whose pressure ended while no session was up told no one: levels assumed
    from its last report hold only ``lapse_after`` seconds without a report on this
    session, then bulk gets its weight back and the session wakes for it (a timer)."""
    config = SessionConfig(pacing_target_delay=None, keepalive_interval=None)
    pair = make_pair(config, config)
    normal = pair.a.metrics().bulk_weight
    pair.a.assume_peer_pressure(0, 95, 0, 0, lapse_after=12.0)
    assert pair.a.metrics().bulk_weight < normal
    assert pair.a.get_timer() == pytest.approx(pair.now + 12.0)
    pair.a.handle_timer(pair.now + 11.9)
    assert pair.a.peer_pressure == (0, 95, 0, 0), "not before its time"
    pair.a.handle_timer(pair.now + 12.0)
    assert pair.a.peer_pressure is None
    assert pair.a.metrics().bulk_weight == normal
    assert pair.a.get_timer() is None


def test_a_report_on_the_new_session_ends_the_assumption_and_its_lapse() -> None:
    config = SessionConfig(pacing_target_delay=None, keepalive_interval=None)
    pair = make_pair(config, config)
    pair.a.assume_peer_pressure(0, 95, 0, 0, lapse_after=12.0)
    pair.b.send_pressure(0, cpu=90)
    pair.pump()
    pair.a.handle_timer(pair.now + 20.0)
    assert pair.a.peer_pressure == (0, 90, 0, 0), "the peer's own word stays"
