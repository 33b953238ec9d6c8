"""Experiment statistics against numbers worked out by hand."""

from __future__ import annotations

import pytest

from service import stats


def test_z_value_is_the_usual_196() -> None:
    assert stats.z_value() == pytest.approx(1.959964, abs=1e-6)


def test_wilson_interval_of_10_in_100() -> None:
    # p = 0.1, z^2 = 3.841459: centre = (0.1 + z^2/200) / (1 + z^2/100) = 0.114797,
    # half = z * sqrt(0.0009 + z^2/40000) / 1.0384146 = 0.059568.
    interval = stats.wilson(10, 100)
    assert interval.value == pytest.approx(0.1)
    assert interval.low == pytest.approx(0.055229, abs=1e-5)
    assert interval.high == pytest.approx(0.174365, abs=1e-5)


@pytest.mark.parametrize(("x", "n"), [(0, 50), (50, 50), (0, 0), (3, 2), (7, 1)])
def test_wilson_stays_within_zero_and_one(x: int, n: int) -> None:
    interval = stats.wilson(x, n)
    assert 0.0 <= interval.low <= interval.value <= interval.high <= 1.0


def test_a_small_difference_of_proportions_is_not_yet_significant() -> None:
    # 50/1000 vs 70/1000: pooled 0.06, se = sqrt(0.06 * 0.94 * 0.002) = 0.0106207,
    # z = 0.02 / 0.0106207 = 1.8831, p = 0.0597 > 0.05.
    comparison = stats.compare_proportions(50, 1000, 70, 1000)
    assert comparison.difference == pytest.approx(0.02)
    assert comparison.p_value == pytest.approx(0.0597, abs=5e-4)
    assert not comparison.significant
    assert comparison.statement.startswith("not yet significant")
    # Wald half-width: 1.959964 * sqrt(0.0475/1000 + 0.0651/1000) = 1.959964 * 0.0106113.
    assert comparison.high - comparison.difference == pytest.approx(0.020798, abs=1e-5)


def test_a_large_difference_of_proportions_is_significant() -> None:
    # 50/1000 vs 100/1000: pooled 0.075, se = sqrt(0.075 * 0.925 * 0.002) = 0.0117792,
    # z = 4.2448, p = 2.19e-5.
    comparison = stats.compare_proportions(50, 1000, 100, 1000)
    assert comparison.p_value == pytest.approx(2.19e-5, rel=0.02)
    assert comparison.significant
    assert comparison.statement.startswith("significant")


def test_more_successes_than_trials_compare_as_a_share_of_one() -> None:
    # Clicks whose impressions never came: 3 in 2 is 1, and 1 against 5/10 a difference of -0.5.
    comparison = stats.compare_proportions(3, 2, 5, 10)
    assert comparison.difference == pytest.approx(-0.5)
    assert comparison.low <= comparison.difference <= comparison.high


def test_no_data_is_never_significant() -> None:
    assert not stats.compare_proportions(0, 0, 5, 10).significant


def test_mean_from_sums() -> None:
    # Revenue per impression over [0, 0, 10, 20]: mean 7.5, variance (500 - 900/4) / 3 = 91.667,
    # half-width 1.959964 * sqrt(91.667 / 4) = 9.3826.
    interval = stats.mean(30, 500, 4)
    assert interval.value == pytest.approx(7.5)
    assert interval.low == pytest.approx(7.5 - 9.3826, abs=1e-3)
    assert interval.high == pytest.approx(7.5 + 9.3826, abs=1e-3)


def test_compare_means_welch() -> None:
    # A = [1, 3] (mean 2, var 2), B = [4, 6] (mean 5, var 2): se = sqrt(2/2 + 2/2) = 1.4142,
    # z = 2.1213, p = 0.0339.
    comparison = stats.compare_means((4, 10, 2), (10, 52, 2))
    assert comparison.difference == pytest.approx(3.0)
    assert comparison.p_value == pytest.approx(0.0339, abs=5e-4)
    assert comparison.significant
