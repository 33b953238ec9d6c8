"""Experiment statistics: proportions, differences of proportions and means, with intervals.

Pure functions over counts and sums (what Redis keeps), so every figure can be checked by hand.
Intervals are two-sided at ``1 - alpha`` (95% by default); the normal quantile is computed with
the standard library, so no scipy is needed at serving time.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import msgspec

ALPHA = 0.05


class Interval(msgspec.Struct, frozen=True, kw_only=True):
    """An estimate with its confidence interval (all zero when there is no data)."""

    value: float
    low: float
    high: float


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    """A variant against the control: the difference, its interval and whether it is significant."""

    difference: float
    low: float
    high: float
    p_value: float
    significant: bool
    statement: str


def z_value(alpha: float = ALPHA) -> float:
    """The two-sided normal quantile: 1.959964 for ``alpha`` 0.05."""
    return NormalDist().inv_cdf(1 - alpha / 2)


def wilson(successes: float, trials: float, alpha: float = ALPHA) -> Interval:
    """The share ``successes / trials`` with its Wilson score interval.

    Wilson rather than the plain normal interval because CTRs and conversion rates are small
    proportions, where the normal interval goes below zero. More successes than trials (clicks
    whose impressions the client never sent) count as a share of 1.
    """
    if trials <= 0:
        return Interval(value=0.0, low=0.0, high=0.0)
    z = z_value(alpha)
    p = _share(successes, trials)
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return Interval(value=p, low=max(0.0, centre - half), high=min(1.0, centre + half))


def compare_proportions(
    x_a: float, n_a: float, x_b: float, n_b: float, alpha: float = ALPHA
) -> Comparison:
    """Variant B against control A: ``p_b - p_a``, a two-sided pooled z-test and a Wald interval.

    Returns:
        The difference with its interval, the p-value, and a sentence saying whether the
        difference is significant yet.
    """
    if n_a <= 0 or n_b <= 0:
        return _not_enough("no data in one of the groups yet")
    p_a, p_b = _share(x_a, n_a), _share(x_b, n_b)
    pooled = (p_a * n_a + p_b * n_b) / (n_a + n_b)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    diff = p_b - p_a
    p_value = 1.0 if se_pooled == 0 else 2 * (1 - NormalDist().cdf(abs(diff) / se_pooled))
    return _comparison(diff, z_value(alpha) * se, p_value, alpha)


def _share(successes: float, trials: float) -> float:
    """``successes / trials`` within 0..1: counters come from what clients send, and a click or
    a purchase may arrive without the impression it followed (the square root of a negative
    variance was a 500 on the dashboard and the experiment's results)."""
    return min(1.0, max(0.0, successes / trials))


def mean(total: float, total_sq: float, n: float, alpha: float = ALPHA) -> Interval:
    """A mean from its sum, its sum of squares and its count, with a normal interval.

    Used for revenue per impression (most impressions bring 0) and average order value.
    """
    if n <= 0:
        return Interval(value=0.0, low=0.0, high=0.0)
    m = total / n
    half = z_value(alpha) * math.sqrt(_variance(total, total_sq, n) / n)
    return Interval(value=m, low=m - half, high=m + half)


def compare_means(
    a: tuple[float, float, float], b: tuple[float, float, float], alpha: float = ALPHA
) -> Comparison:
    """Variant B against control A for means given as ``(sum, sum of squares, n)`` (Welch z)."""
    (s_a, q_a, n_a), (s_b, q_b, n_b) = a, b
    if n_a < 2 or n_b < 2:
        return _not_enough("fewer than two observations in one of the groups")
    se = math.sqrt(_variance(s_a, q_a, n_a) / n_a + _variance(s_b, q_b, n_b) / n_b)
    diff = s_b / n_b - s_a / n_a
    p_value = 1.0 if se == 0 else 2 * (1 - NormalDist().cdf(abs(diff) / se))
    return _comparison(diff, z_value(alpha) * se, p_value, alpha)


def _variance(total: float, total_sq: float, n: float) -> float:
    """The sample variance (n - 1 in the denominator); 0 for a single observation."""
    if n < 2:
        return 0.0
    return max(0.0, (total_sq - total * total / n) / (n - 1))


def _comparison(diff: float, half: float, p_value: float, alpha: float) -> Comparison:
    significant = p_value < alpha
    level = f"{100 * (1 - alpha):g}%"
    statement = (
        f"significant at {level} (p = {p_value:.3g})"
        if significant
        else f"not yet significant at {level} (p = {p_value:.3g}): keep the test running"
    )
    return Comparison(
        difference=diff,
        low=diff - half,
        high=diff + half,
        p_value=p_value,
        significant=significant,
        statement=statement,
    )


def _not_enough(why: str) -> Comparison:
    return Comparison(
        difference=0.0,
        low=0.0,
        high=0.0,
        p_value=1.0,
        significant=False,
        statement=f"not yet significant: {why}",
    )
