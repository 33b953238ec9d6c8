"""``largest``: exactly the k best positions, however the scores are ordered or excluded."""

from __future__ import annotations

import numpy as np
import pytest

from service.topk import largest


def best_values(scores: np.ndarray, k: int) -> list[float]:
    return sorted(scores.tolist(), reverse=True)[:k]


@pytest.mark.parametrize("n", [0, 1, 9, 100, 999, 1000, 2000, 4096, 10_000, 100_003])
@pytest.mark.parametrize("k", [0, 1, 10, 15, 16, 64])
def test_largest_finds_the_k_best_of_random_scores(n: int, k: int) -> None:
    scores = np.random.default_rng(n + k).standard_normal(n).astype(np.float32)
    found = largest(scores, k)
    assert len(found) == min(k, n)
    assert len(set(found.tolist())) == len(found)
    assert sorted(scores[found].tolist(), reverse=True) == best_values(scores, k)


def test_largest_is_exact_when_the_sample_misses_the_best_scores() -> None:
    # Every sampled position (multiples of the stride) holds a low score; the best lie between.
    n, k = 50_000, 10
    scores = np.zeros(n, dtype=np.float32)
    scores[::16] = -1.0
    scores[np.arange(7, n, 997)] = np.arange(len(range(7, n, 997)), dtype=np.float32) + 1
    found = largest(scores, k)
    assert sorted(scores[found].tolist(), reverse=True) == best_values(scores, k)


def test_largest_with_most_scores_excluded() -> None:
    n = 20_000
    scores = np.full(n, -np.inf, dtype=np.float32)
    scores[[5, 17_000, 19_999]] = [3.0, 1.0, 2.0]
    found = largest(scores, 10)
    assert len(found) == 10
    assert {5, 17_000, 19_999} <= set(found.tolist())


def test_largest_with_ties_returns_k_positions_of_the_tied_value() -> None:
    scores = np.ones(30_000, dtype=np.float32)
    found = largest(scores, 10)
    assert len(set(found.tolist())) == 10


@pytest.mark.parametrize("n", [500, 2000, 5000, 100_000])
@pytest.mark.parametrize("tied", [-np.inf, 0.0, 1.0])
@pytest.mark.parametrize("share", [0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("k", [1, 10, 128])
def test_largest_with_most_scores_tied(n: int, tied: float, share: float, k: int) -> None:
    """Most scores equal (a filter's -inf, items without factors at 0, or above the others):
    still k positions, each once, holding the k best values."""
    rng = np.random.default_rng(n + k)
    scores = rng.standard_normal(n).astype(np.float32)
    scores[rng.random(n) < share] = tied
    found = largest(scores, k)
    assert len(found) == k and len(set(found.tolist())) == k
    assert sorted(scores[found].tolist(), reverse=True) == best_values(scores, k)


def test_largest_places_nan_as_numpy_does() -> None:
    scores = np.random.default_rng(3).standard_normal(20_000).astype(np.float32)
    scores[::16] = np.nan  # every sampled score
    found = largest(scores, 10)
    assert len(set(found.tolist())) == 10 and np.isnan(scores[found]).all()
