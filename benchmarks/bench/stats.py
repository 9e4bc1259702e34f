"""Statistics and numbers: percentiles, medians and spreads, ratios, three-digit formatting.

Every figure is kept as one sample per repetition; the report shows the median with the
min - max. A ratio is taken within a repetition (from measurements side by side) and then
summarised the same way, never as a ratio of medians.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    """The median of the per-repetition samples of one figure."""
    return statistics.median(values)


def spread(values: Sequence[float]) -> tuple[float, float]:
    """The (min, max) of the per-repetition samples of one figure."""
    return min(values), max(values)


def fmt(value: float) -> str:
    """A number with about three significant digits."""
    if math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"
