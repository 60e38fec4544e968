"""Small pure helpers for the workloads' figures: percentiles and a fixed-rate schedule."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile (0-100) of ``values``, nearest rank on the sorted list; no interpolation.

    Raises ValueError for an empty list or a ``pct`` outside 0-100: a figure made
    from nothing must not print as 0.
    """
    if not values:
        raise ValueError("no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile {pct} is not within 0-100")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def send_times(rate: float, count: int, start: float = 0.0) -> list[float]:
    """When each of ``count`` submits is due at ``rate`` per second from ``start`` (the first at ``start``).

    Due times come from the start, not from the previous submit, so a slow
    submit does not lower the rate of the ones after it.
    """
    if rate <= 0:
        raise ValueError(f"rate {rate} is not positive")
    return [start + number / rate for number in range(count)]
