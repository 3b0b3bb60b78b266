"""Small statistics over repeated timings: medians and percentiles, no third-party code."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    """The median of `values`; raises ValueError when there are none."""
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 to 100) by linear interpolation between closest ranks.

    This is numpy's default method, so p50 equals the median.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0 to 100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    lower = math.floor(position)
    upper = math.ceil(position)
    weight = position - lower
    return ordered[lower] * (1.0 - weight) + ordered[upper] * weight


def rate(count: float, seconds: float) -> float | None:
    """`count` per second, or None when the interval is not positive (nothing measurable)."""
    if seconds <= 0.0:
        return None
    return count / seconds
