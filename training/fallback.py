"""The popular items the service falls back on, decayed with a half-life chosen on validation.

A customer the model cannot place (an anonymous visitor, a new customer with fewer events than
``FoldIn.popular_until_events``, one without consent to personalisation) gets the artifact's
popular lists: per channel, and per category by masking them. Which list serves such customers
best depends on the data: what sells now (a short half-life) where the range turns over, the
all-time best sellers where it does not. So training scores each of ``HALF_LIVES`` (0: no
decay, the all-time list) and the matrix's own half-life on the validation period's new
customers: each ranked by the list alone (nothing of theirs is known), against everything they
bought in it. The decay is measured back from the end of the fitted data (the last event
before the validation period; for the artifact, the last event of the training window), never
from the clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from training import coldstart, evaluate, matrix
from training.config import Weights
from training.matrix import Interactions

# Half-lives tried, in days (0: no decay), beside the matrix's own (``weights.half_life_days``).
HALF_LIVES = (0.0, 1.0, 2.0, 4.0, 7.0, 14.0, 30.0, 60.0, 120.0, 365.0)
# The fewest new customers a choice needs: with fewer, the matrix's half-life stands (as before
# the choice existed; completejourney's validation period holds a handful).
MIN_CASES = 30
# New customers scored at most (a seeded sample): each is one pass over the popular list.
MAX_CASES = 3000
# What an item's all-time popularity adds to a decayed list, relative to the list's top.
TIE_BREAK = 1e-6
# How far, in standard errors of the paired per-customer difference, the best candidate must
# beat the matrix's half-life to replace it. With eleven candidates the best of them beats the
# current one on noise alone often; on uci-online-retail's first 85%, 60 days won by 0.0058 where
# every half-life from 14 to 365 days scored within 0.006, and served the held-out new customers
# worse than 120 days (0.0675 against 0.0688 through HTTP).
MIN_GAIN_SE = 2.0


def lists(
    events: pa.Table,
    interactions: Interactions,
    weights: Weights,
    half_life_days: float,
    end: datetime,
    all_time: dict[str, NDArray[np.float32]] | None = None,
) -> dict[str, NDArray[np.float32]]:
    """The popular lists (``"all"`` and each channel's) with ``half_life_days`` instead of the
    matrix's decay, measured back from ``end``.

    A short half-life leaves what sold long ago with a weight of about 0 (float32: exactly 0),
    so such items are ordered by their all-time popularity (``all_time``, computed when not
    given), added at a millionth of the list's top: a category that sold nothing lately still
    lists its best sellers first, not its items in id order.
    """
    if all_time is None:
        all_time = lists(events, interactions, weights, 0.0, end, {})
    if half_life_days == 0 and all_time:
        return all_time
    decayed = msgspec.structs.replace(weights, half_life_days=float(half_life_days))
    found = matrix.popularity(events, interactions, decayed, end=end)
    if not all_time:
        return found
    return {
        channel: _tie_broken(found.get(channel, np.zeros_like(counts)), counts)
        for channel, counts in all_time.items()
    }


def _tie_broken(decayed: NDArray[np.float32], all_time: NDArray[np.float32]) -> NDArray[np.float32]:
    top = float(decayed.max(initial=0.0)) or 1.0
    share = all_time / max(float(all_time.max(initial=0.0)), 1e-30)
    return (decayed + np.float32(TIE_BREAK * top) * share).astype(np.float32)


def choose(
    events: pa.Table,
    interactions: Interactions,
    future: pa.Table,
    weights: Weights,
    end: datetime,
    k: int,
) -> tuple[float, dict[str, Any]]:
    """The half-life whose overall list ranks ``future``'s new customers best (NDCG@k), and the
    comparison for the report: the customers scored and each candidate's NDCG.

    ``events`` and ``interactions`` are the fitted past, which ends at ``end``. Ties go to the
    matrix's half-life, then to the longer one; the best replaces the matrix's half-life only
    when its mean gain per customer exceeds ``MIN_GAIN_SE`` standard errors; with fewer than
    ``MIN_CASES`` new customers the matrix's half-life stands and no candidate is scored.
    """
    current = float(weights.half_life_days)
    cases = customers_without_events(interactions, future, weights.relevant_rating)
    compared: dict[str, Any] = {
        "customers": len(cases),
        "half_life_days": current,
        "candidates": [],
    }
    if len(cases) < MIN_CASES:
        return current, compared
    # The current setting first, then from no decay down to the shortest: ``max`` keeps the
    # first of equals, so a choice only moves on evidence.
    candidates = [current, *sorted({*HALF_LIVES} - {current}, key=_longest_first)]
    per_case: dict[float, NDArray[np.float64]] = {}
    scored = compare(events, interactions, weights, end, cases, k, candidates, per_case)
    best = max(scored, key=lambda s: s["ndcg"])
    gain = per_case[best["half_life_days"]] - per_case[current]
    error = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else 0.0
    compared["gain"] = float(gain.mean())
    compared["gain_standard_error"] = error
    chosen = best["half_life_days"] if gain.mean() > MIN_GAIN_SE * error else current
    compared["half_life_days"] = chosen
    compared["candidates"] = scored
    return chosen, compared


def compare(
    events: pa.Table,
    interactions: Interactions,
    weights: Weights,
    end: datetime,
    cases: list[coldstart.NewCustomer],
    k: int,
    half_lives: list[float],
    per_case: dict[float, NDArray[np.float64]] | None = None,
) -> list[dict[str, float]]:
    """NDCG@k of the overall list of each of ``half_lives`` for ``cases`` (and, into
    ``per_case`` when given, each case's NDCG@k per half-life)."""
    all_time = lists(events, interactions, weights, 0.0, end)
    results = []
    for h in half_lives:
        popular = lists(events, interactions, weights, h, end, all_time)["all"]
        rankings = coldstart._popular_rankings(popular, cases, k)
        ndcgs = np.array(
            [evaluate.ndcg_at_k(r, c.relevant, k) for r, c in zip(rankings, cases, strict=True)]
        )
        if per_case is not None:
            per_case[h] = ndcgs
        results.append({"half_life_days": h, "ndcg": float(ndcgs.mean()) if len(cases) else 0.0})
    return results


def customers_without_events(
    interactions: Interactions, future: pa.Table, min_rating: float
) -> list[coldstart.NewCustomer]:
    """``future``'s customers that ``interactions`` lacks, as the service first meets them: no
    event of theirs known, every later purchase (or relevant rating) a target."""
    found = coldstart.new_customers(interactions, future, min_rating, context=0)
    return coldstart.sampled(found, MAX_CASES)


def score(popularity: NDArray[np.float32], cases: list[coldstart.NewCustomer], k: int) -> float:
    """NDCG@k of one popular list for ``cases``."""
    return coldstart.score_cold_popularity(popularity, cases, k).ndcg


def _longest_first(half_life: float) -> float:
    return -np.inf if half_life == 0 else -half_life
