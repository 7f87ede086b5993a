import logging

import pytest

from accessfabric.observe.log_rate import RateLimitedLog


def test_one_line_per_key_per_interval_with_suppressed_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = RateLimitedLog(logging.getLogger("t.lograte"), interval=10.0)
    with caplog.at_level(logging.WARNING, logger="t.lograte"):
        assert log.log(("p1", "denied"), logging.WARNING, "refused %s", "p1", now=0.0)
        for i in range(100):
            assert not log.log(("p1", "denied"), logging.WARNING, "refused %s", "p1", now=i / 20)
        assert log.log(("p2", "denied"), logging.WARNING, "refused %s", "p2", now=5.0)
        assert log.log(("p1", "denied"), logging.WARNING, "refused %s", "p1", now=10.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused p1", "refused p2", "refused p1 (+100 suppressed)"]
    assert (log.written, log.suppressed) == (3, 100)


def test_distinct_keys_are_bounded() -> None:
    log = RateLimitedLog(logging.getLogger("t.lograte2"), interval=10.0, max_keys=8)
    for i in range(1000):
        log.log(i, logging.DEBUG, "k", now=0.0)
    assert len(log._keys) == 8
    # the oldest keys were forgotten: key 0 writes again at once
    assert log.log(0, logging.DEBUG, "k", now=0.0)
    assert not log.log(999, logging.DEBUG, "k", now=0.0)


def test_admit_tells_structured_callers_how_many_lines_were_suppressed() -> None:
    log = RateLimitedLog(logging.getLogger("t.lograte3"), interval=10.0)
    assert log.admit("k", now=0.0) == 0
    assert [log.admit("k", now=t) for t in (1.0, 2.0, 9.9)] == [None, None, None]
    assert log.admit("k", now=10.0) == 3
    assert (log.written, log.suppressed) == (2, 3)


def test_a_burst_per_key_per_window() -> None:
    log = RateLimitedLog(logging.getLogger("t.lograte3"), interval=10.0, burst=3)
    written = [log.admit("a", now=i / 10) for i in range(20)]
    assert written[:3] == [0, 0, 0] and written[3:] == [None] * 17  # three, then suppressed
    assert log.admit("a", now=10.0) == 17  # a new window reports what was swallowed
    assert log.admit("a", now=10.5) == 0 and log.admit("a", now=11.0) == 0
    assert log.admit("a", now=11.5) is None
