"""The demo's interactive figures apart from the failover: which echoes count as the
failover's, the percentile of the rest, and the list of slow echoes."""

from __future__ import annotations

from accessfabric.demo.traffic import FAILOVER_WINDOW, SLOW_ECHO, Traffic


def _traffic(echoes: list[tuple[float, float]], killed_at: float | None) -> Traffic:
    """``echoes``: (sent at, round trip) in seconds; the run started at 100."""
    traffic = Traffic(started=100.0, killed_at=killed_at)
    for sent, rtt in echoes:
        traffic.sent_at.append(sent)
        traffic.rtts.append(rtt)
        traffic.answered_at.append(sent + rtt)
    return traffic


def test_echoes_in_flight_at_the_kill_or_sent_in_the_window_are_the_failovers() -> None:
    kill = 105.0
    traffic = _traffic(
        [
            (104.90, 0.002),  # answered before the kill: steady
            (104.99, 0.050),  # in flight at the kill
            (105.50, 0.030),  # sent in the window
            (kill + FAILOVER_WINDOW - 0.001, 0.004),  # the window's last moment
            (kill + FAILOVER_WINDOW, 0.003),  # just after it: steady
        ],
        kill,
    )
    assert [traffic.in_failover(i) for i in range(5)] == [False, True, True, True, False]
    assert traffic.failover_echoes == 3


def test_the_steady_percentile_leaves_the_failovers_echoes_out() -> None:
    steady = [(100.0 + i * 0.02, 0.002 + (i % 7) * 0.0005) for i in range(200)]
    failover = [(105.0 + i * 0.02, 0.040) for i in range(10)]
    traffic = _traffic(sorted(steady + failover), 105.0)
    assert traffic.pct(0.99) == 0.040  # the failover's echoes are the slowest percent
    assert traffic.pct_steady(0.99) == max(rtt for _, rtt in steady)
    assert _traffic(steady, None).pct_steady(0.99) == _traffic(steady, None).pct(0.99)


def test_slow_echoes_are_listed_with_their_time_into_the_run() -> None:
    traffic = _traffic([(101.0, SLOW_ECHO / 2), (102.5, 0.012), (105.2, 0.031)], 105.0)
    assert traffic.slow_echoes() == [(2.5, 0.012, False), (105.2 - 100.0, 0.031, True)]
