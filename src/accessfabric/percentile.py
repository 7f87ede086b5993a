"""One percentile for every figure the project reports (benchmarks, demo, fleet).

Nearest rank: the ``share`` percentile of ``n`` samples is the smallest sample with at
least ``share x n`` samples at or below it (``sorted[ceil(share x n) - 1]``).  It is always
a measured value, never an interpolation between two; p0 is the smallest, p100 the
largest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(samples: Iterable[float], share: float) -> float:
    """The ``share`` (0..1) percentile of ``samples`` by nearest rank; NaN when empty."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be within 0..1, not {share}")
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    rank = math.ceil(share * len(ordered))
    return ordered[min(len(ordered) - 1, max(0, rank - 1))]
