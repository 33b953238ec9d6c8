"""Items' scores from split factors: the same as the plain product, for the models that split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service import artifact
from service.item_products import SEARCHED_FROM_DIM, ItemProducts, gathered_products
from service.ranking import FactorModel
from tests.builders import save_packed


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


def test_a_model_with_split_factors_recommends_what_brute_force_ranks(tmp_path: Path) -> None:
    """The service's exact scoring (recommendations, a category filter, offers' item scores) on
    an exactly exported blend gives the ranking of the plain product."""
    y = exact_blend_factors(300, 20, 2, seed=7)
    rng = np.random.default_rng(8)
    users = rng.normal(size=(5, y.shape[1])).astype(np.float32)
    packed = artifact.pack(
        user_ids=[f"u{i}" for i in range(5)],
        user_factors=users,
        item_ids=[f"i{j:03d}" for j in range(300)],
        item_factors=y,
        item_categories=["even" if j % 2 == 0 else "odd" for j in range(300)],
        popularity={"all": rng.random(300).astype(np.float32)},
        bought_indptr=np.zeros(6, np.int64),
        bought_items=np.zeros(0, np.int32),
    )
    model = FactorModel(
        artifact.load(save_packed(tmp_path, packed, model_version="split", algorithm="blend"))
    )
    assert model.products.split
    factors = np.asarray(model.item_factors)
    for u in users:
        plain = factors @ u
        rows, scores = model.recommend(u, 10)
        assert rows.tolist() == np.argsort(-plain, kind="stable")[:10].tolist()
        np.testing.assert_allclose(scores, plain[rows], atol=1e-4)
        odd = model.category_mask("odd", None)
        rows, _ = model.recommend(u, 5, allowed=odd)
        best_odd = np.flatnonzero(odd)[np.argsort(-plain[odd], kind="stable")[:5]]
        assert rows.tolist() == best_odd.tolist()


@pytest.mark.parametrize(("n_rows", "chunk_rows"), [(0, 4), (3, 4), (4, 4), (29, 4), (500, 64)])
def test_products_of_gathered_rows_are_the_plain_products(
    n_rows: int, chunk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows gathered a chunk at a time (any order, repeats included) score as one gather does."""
    rng = np.random.default_rng(n_rows)
    factors = rng.normal(size=(1000, 16)).astype(np.float32)
    monkeypatch.setattr("service.item_products.GATHER_CHUNK_BYTES", chunk_rows * 16 * 4)
    rows = rng.integers(0, 1000, n_rows)
    vector = rng.normal(size=16).astype(np.float32)
    got = gathered_products(factors, rows, vector)
    assert got.dtype == np.float32 and got.shape == (n_rows,)
    np.testing.assert_allclose(got, factors[rows] @ vector, rtol=1e-6, atol=1e-6)
