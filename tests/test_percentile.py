"""The one percentile every reported figure uses: nearest rank."""

from __future__ import annotations

import math

import pytest

from accessfabric.percentile import percentile


def test_nearest_rank() -> None:
    samples = [float(x) for x in range(100, 0, -1)]  # 1..100, unordered
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile(samples, 1.0) == 100.0
    assert percentile(samples, 0.0) == 1.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([1.0, 2.0], 0.5) == 1.0  # a measured value, not 1.5
    assert percentile(iter([7.0]), 0.99) == 7.0


def test_empty_and_out_of_range() -> None:
    assert math.isnan(percentile([], 0.99))
    with pytest.raises(ValueError, match=r"0\.\.1"):
        percentile([1.0], 99)
