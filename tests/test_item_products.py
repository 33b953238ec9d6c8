"""Items' scores from split factors: the same as the plain product, for the models that split."""

from __future__ import annotations

import numpy as np
import pytest

from service.item_products import SEARCHED_FROM_DIM, ItemProducts


def exact_blend_factors(n_items: int, dense: int, cold: int, seed: int = 0) -> np.ndarray:
    """As training writes an exactly exported blend: dense factors, then two item-item parts with
    one column per item (permuted, as the artifact orders items by id), and ``cold`` new items
    whose rows fill those columns with small values (their attributes' similarities)."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=(n_items, dense))]
    for _ in range(2):
        parts.append(np.eye(n_items)[rng.permutation(n_items)])
    y = np.hstack(parts)
    y[:cold, dense:] = rng.uniform(0.0, 0.05, size=(cold, y.shape[1] - dense))
    return y.astype(np.float32)


@pytest.mark.parametrize("cold", [0, 1, 3])
def test_an_exactly_exported_blend_is_scored_from_its_split_columns(cold: int) -> None:
    y = exact_blend_factors(300, 20, cold)
    products = ItemProducts(y)
    assert products.split
    rng = np.random.default_rng(1)
    vector = rng.normal(size=y.shape[1]).astype(np.float32)
    np.testing.assert_allclose(products.scores(vector), y @ vector, rtol=1e-5, atol=1e-5)
    rows = np.array([0, 7, 299, 7], dtype=np.int64)
    np.testing.assert_allclose(products.scores_of(rows, vector), y[rows] @ vector, atol=1e-5)
    vectors = rng.normal(size=(5, y.shape[1])).astype(np.float32)
    np.testing.assert_allclose(products.scores_many(vectors), vectors @ y.T, atol=1e-5)


def test_items_without_any_sparse_entry_get_their_dense_scores_alone() -> None:
    """An item with no non-zero in the sparse columns (a row of zeros there) is not given
    another item's sum (``reduceat`` segments start only at items that have entries)."""
    y = exact_blend_factors(300, 20, 0)
    y[5, 20:] = 0.0
    products = ItemProducts(y)
    assert products.split
    vector = np.random.default_rng(2).normal(size=y.shape[1]).astype(np.float32)
    np.testing.assert_allclose(products.scores(vector), y @ vector, atol=1e-5)


def test_dense_models_and_small_ones_multiply_as_before() -> None:
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(500, SEARCHED_FROM_DIM + 10)).astype(np.float32)
    small = np.eye(100, dtype=np.float32)  # sparse, but fewer factors than searched for
    for y in (dense, small):
        products = ItemProducts(y)
        assert not products.split
        vector = rng.normal(size=y.shape[1]).astype(np.float32)
        assert np.array_equal(products.scores(vector), y @ vector)
