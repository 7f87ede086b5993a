from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accessfabric.identity import KeyedRateLimiter, TokenBucket


def test_bucket_starts_full_then_denies() -> None:
    bucket = TokenBucket(rate=1.0, burst=3.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.tokens(100.0) == pytest.approx(0.0)


def test_bucket_refills_at_rate_up_to_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=4.0)
    for _ in range(4):
        assert bucket.take(0.0)
    assert not bucket.take(0.1)  # 0.2 tokens
    assert bucket.take(0.5)  # 1.0 token
    assert not bucket.take(0.5)
    assert bucket.tokens(1000.0) == 4.0
    assert bucket.is_full(1000.0)


def test_bucket_ignores_time_going_backwards() -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.5)  # half a token since t=10, not since t=5
    assert bucket.take(11.0)


def test_bucket_cost() -> None:
    bucket = TokenBucket(rate=1.0, burst=5.0)
    assert not bucket.take(0.0, cost=6.0)  # more than burst: never
    assert bucket.take(0.0, cost=5.0)
    assert bucket.take(0.0, cost=0.0)
    assert not bucket.take(2.0, cost=3.0)
    assert bucket.take(3.0, cost=3.0)


def test_zero_rate_never_refills() -> None:
    bucket = TokenBucket(rate=0.0, burst=1.0)
    assert bucket.take(0.0)
    assert not bucket.take(1e9)


@pytest.mark.parametrize(("rate", "burst"), [(-1.0, 1.0), (1.0, 0.0), (float("nan"), 1.0)])
def test_bucket_validates(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)
    with pytest.raises(ValueError):
        KeyedRateLimiter(rate, burst)


def test_bucket_rejects_negative_cost() -> None:
    with pytest.raises(ValueError):
        TokenBucket(1.0, 1.0).take(0.0, cost=-1.0)


def test_keyed_buckets_are_independent_and_counted() -> None:
    limiter = KeyedRateLimiter(rate=1.0, burst=2.0)
    assert limiter.take("10.0.0.1", 0.0)
    assert limiter.take("10.0.0.1", 0.0)
    assert not limiter.take("10.0.0.1", 0.0)
    assert limiter.take("10.0.0.2", 0.0)
    assert limiter.take("10.0.0.1", 1.0)
    assert (limiter.allowed, limiter.denied) == (4, 1)
    assert len(limiter) == 2
    assert "10.0.0.1" in limiter
    assert "10.0.0.3" not in limiter


def test_keyed_limiter_is_bounded() -> None:
    limiter = KeyedRateLimiter(rate=0.1, burst=1.0, max_keys=100)
    for index in range(10_000):
        limiter.take(f"198.51.100.{index}", 0.0)
        assert len(limiter) <= 100
    assert len(limiter) == 100
    assert limiter.evicted == 9_900  # every evicted bucket was still draining


def test_keyed_limiter_evicts_least_recently_used() -> None:
    limiter = KeyedRateLimiter(rate=0.0, burst=1.0, max_keys=3)
    limiter.take("a", 0.0)
    limiter.take("b", 0.0)
    limiter.take("c", 0.0)
    assert not limiter.take("a", 1.0)  # "a" is now the most recently used
    limiter.take("d", 2.0)  # evicts "b"
    assert "b" not in limiter
    assert all(key in limiter for key in "acd")
    assert not limiter.take("a", 3.0)  # "a" kept its empty bucket


def test_evicting_a_refilled_bucket_is_not_counted() -> None:
    limiter = KeyedRateLimiter(rate=1.0, burst=1.0, max_keys=1)
    limiter.take("a", 0.0)
    limiter.take("b", 10.0)  # "a" refilled long ago: dropping it forgives nothing
    assert limiter.evicted == 0
    limiter.take("c", 10.0)  # "b" is still empty
    assert limiter.evicted == 1


def test_prune_drops_only_full_buckets() -> None:
    limiter = KeyedRateLimiter(rate=1.0, burst=2.0)
    limiter.take("old", 0.0)
    limiter.take("fresh", 9.5)
    assert limiter.prune(10.0) == 1
    assert "old" not in limiter
    assert "fresh" in limiter


def test_long_keys_are_stored_bounded() -> None:
    limiter = KeyedRateLimiter(rate=0.0, burst=1.0)
    long_key = "x" * 100_000
    assert limiter.take(long_key, 0.0)
    assert not limiter.take(long_key, 0.0)
    assert long_key in limiter
    assert limiter.take("x" * 99_999 + "y", 0.0)


def test_max_keys_validated() -> None:
    with pytest.raises(ValueError):
        KeyedRateLimiter(1.0, 1.0, max_keys=0)


@given(
    max_keys=st.integers(min_value=1, max_value=20),
    events=st.lists(
        st.tuples(st.integers(min_value=0, max_value=50), st.floats(0, 1000, allow_nan=False)),
        max_size=200,
    ),
)
def test_property_bounded_and_counted(max_keys: int, events: list[tuple[int, float]]) -> None:
    limiter = KeyedRateLimiter(rate=1.0, burst=3.0, max_keys=max_keys)
    for key, now in events:
        limiter.take(str(key), now)
        assert len(limiter) <= max_keys
    assert limiter.allowed + limiter.denied == len(events)


def test_allows_peeks_without_spending() -> None:
    limiter = KeyedRateLimiter(rate=1.0, burst=2.0)
    assert limiter.allows("10.0.0.1", 0.0)
    assert limiter.take("10.0.0.1", 0.0) and limiter.take("10.0.0.1", 0.0)
    assert not limiter.allows("10.0.0.1", 0.0)
    assert limiter.allowed == 2 and limiter.denied == 0
    assert limiter.allows("10.0.0.1", 1.0)
