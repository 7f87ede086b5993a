"""DelayLine with injected time: delay, FIFO under jitter, loss, rate, backlog."""

from __future__ import annotations

import pytest

from accessfabric.sim import DelayLine


def drain(line: DelayLine, until: float, step: float = 0.0005) -> list[tuple[float, bytes]]:
    """Pop every packet by stepping time; return (arrival time, packet) pairs."""
    arrivals: list[tuple[float, bytes]] = []
    now = 0.0
    while now <= until:
        arrivals += [(now, p) for p in line.pop_ready(now)]
        now += step
    return arrivals


def test_delay_is_honoured() -> None:
    line = DelayLine(delay_s=0.020)
    line.push(b"a", now=1.0)
    assert line.next_deadline() == pytest.approx(1.020)
    assert line.pop_ready(1.0199) == []
    assert line.pop_ready(1.020) == [b"a"]
    assert line.next_deadline() is None
    assert (line.stats.offered, line.stats.delivered) == (1, 1)


def test_jitter_varies_delay_but_keeps_fifo_order() -> None:
    line = DelayLine(delay_s=0.010, jitter_s=0.008, seed=3)
    sent = {}
    for i in range(2000):
        packet = i.to_bytes(4, "big")
        sent[packet] = i * 0.0001
        line.push(packet, now=sent[packet])
    arrivals = drain(line, until=0.5, step=0.0001)
    packets = [p for _, p in arrivals]
    assert packets == sorted(sent, key=sent.__getitem__)
    delays = [t - sent[p] for t, p in arrivals]
    assert min(delays) >= 0.002 - 1e-9
    assert max(delays) - min(delays) > 0.010  # jitter really varies the delay


def test_zero_jitter_constant_delay() -> None:
    line = DelayLine(delay_s=0.005)
    for i in range(10):
        line.push(bytes([i]), now=i * 0.001)
    for i in range(10):
        assert line.pop_ready(i * 0.001 + 0.005) == [bytes([i])]


def test_loss_fraction_within_bounds_and_deterministic() -> None:
    def survivors(seed: int) -> list[int]:
        line = DelayLine(delay_s=0.0, loss=0.3, seed=seed)
        for i in range(10000):
            line.push(i.to_bytes(2, "big"), now=0.0)
        return [int.from_bytes(p, "big") for p in line.pop_ready(0.0)]

    kept = survivors(7)
    assert 0.28 <= 1 - len(kept) / 10000 <= 0.32
    assert kept == survivors(7)
    assert kept != survivors(8)


def test_loss_extremes() -> None:
    never, always = DelayLine(0.0, loss=0.0), DelayLine(0.0, loss=1.0)
    for line in (never, always):
        for _ in range(100):
            line.push(b"x", now=0.0)
    assert len(never.pop_ready(0.0)) == 100
    assert always.pop_ready(0.0) == [] and always.stats.lost == 100


def test_rate_limit_serialises_packets() -> None:
    line = DelayLine(delay_s=0.010, rate_bps=8000)  # 1000 bytes/s
    for _ in range(5):
        line.push(b"x" * 100, now=0.0)  # 0.1 s each on the wire
    arrivals = [t for t, _ in drain(line, until=1.0, step=0.001)]
    expected = [0.1 * (k + 1) + 0.010 for k in range(5)]
    assert arrivals == pytest.approx(expected, abs=0.0011)


def test_rate_limit_idle_link_does_not_bank_credit() -> None:
    line = DelayLine(delay_s=0.0, rate_bps=8000)
    line.push(b"x" * 100, now=10.0)
    assert line.next_deadline() == pytest.approx(10.1)


def test_backlog_limit_tail_drops() -> None:
    line = DelayLine(delay_s=0.0, rate_bps=8000, max_backlog_s=0.25)
    for _ in range(10):
        line.push(b"x" * 100, now=0.0)  # starts at 0, .1, .2, .3 ... -> 3 accepted
    assert len(line) == 3
    assert line.stats.overflowed == 7


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay_s": -1.0},
        {"delay_s": 0.0, "jitter_s": -0.1},
        {"delay_s": 0.0, "loss": 1.5},
        {"delay_s": 0.0, "rate_bps": 0},
        {"delay_s": 0.0, "max_backlog_s": -1},
    ],
)
def test_invalid_parameters_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DelayLine(**kwargs)
