"""Small statistics helpers shared by the benchmarks (no numpy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Distribution:
    """p50/p95/p99/max of a sample, in the sample's unit."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        """Summarise ``values`` (an empty sample gives NaNs)."""
        return cls(
            count=len(values),
            p50=percentile(values, 50),
            p95=percentile(values, 95),
            p99=percentile(values, 99),
            max=max(values) if values else math.nan,
        )

    def scaled(self, factor: float) -> Distribution:
        """The same distribution in another unit (e.g. ``1000`` for s -> ms)."""
        return Distribution(
            self.count, self.p50 * factor, self.p95 * factor, self.p99 * factor, self.max * factor
        )


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for a table cell; ``-`` for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"
