"""The benchmark harness's pure helpers (``benchmarks/stats.py``): the figures it writes rest on them."""

from __future__ import annotations

import pytest

from benchmarks.stats import percentile, send_times


def test_percentile_is_the_nearest_rank_of_the_sorted_values() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 51.0  # rank round(0.5 * 99) = 50 (0-based) of 1..100
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([3.5], 99) == 3.5


def test_percentile_keeps_negative_values() -> None:
    # W8's latencies can be negative (the attempt started before the submit returned).
    assert percentile([-2.0, -1.0, 4.0], 50) == -1.0


@pytest.mark.parametrize(("values", "pct"), [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_refuses_what_would_print_a_made_up_figure(values: list[float], pct: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, pct)


def test_send_times_are_due_from_the_start_at_the_rate() -> None:
    assert send_times(4.0, 5, start=10.0) == [10.0, 10.25, 10.5, 10.75, 11.0]


def test_send_times_refuse_a_rate_that_is_not_positive() -> None:
    with pytest.raises(ValueError):
        send_times(0.0, 3)
