"""Fold-in: the service computes the same customer vector implicit's ALS would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from service.artifact import FoldIn
from service.foldin import (
    LeastSquares,
    age_in_days,
    confidences,
    event_weight,
    gramian,
    recalculate_user,
)

PARAMS = FoldIn(
    regularization=0.1,
    alpha=2.0,
    event_weights={"view": 1.0, "purchase": 5.0},
    channel_weights={"store": 2.0},
    half_life_days=10.0,
    transform="log1p",
)


@pytest.mark.parametrize(
    ("event_type", "channel", "age", "expected"),
    [
        ("view", "web", 0, 1.0),
        ("purchase", "store", 0, 10.0),
        ("view", "web", 10, 0.5),
        ("email_open", "web", 0, 0.0),
    ],
)
def test_event_weight_matches_training(
    event_type: str, channel: str, age: float, expected: float
) -> None:
    assert event_weight(PARAMS, event_type, channel, age) == pytest.approx(expected)


RATED = msgspec.structs.replace(
    PARAMS, event_weights={"rating": 1.0}, rating_scale=5.0, min_relevant_rating=3.5
)


@pytest.mark.parametrize(
    ("params", "rating", "expected"),
    [
        (RATED, 5.0, 1.0),
        (RATED, 4.0, 0.8),  # training's rating / rating_scale
        (RATED, 3.5, 0.7),
        (RATED, 3.0, 0.0),  # below the relevant rating: no evidence the customer wants it
        (RATED, 1.0, 0.0),
        (RATED, None, 1.0),  # a rating event without its value: its type's weight
        # A manifest from before ratings were weighted: a rating changes nothing.
        (msgspec.structs.replace(RATED, rating_scale=None), 1.0, 1.0),
    ],
)
def test_a_live_rating_weighs_as_training_weighed_it(
    params: FoldIn, rating: float | None, expected: float
) -> None:
    assert event_weight(params, "rating", "web", 0, rating) == pytest.approx(expected)


def test_confidences_sum_per_item_and_transform() -> None:
    rows, values = confidences(PARAMS, [3, 1, 3, 2], [1.0, 2.0, 3.0, 0.0])
    assert rows.tolist() == [1, 3]
    assert values.tolist() == pytest.approx([np.log1p(2.0), np.log1p(4.0)])


@pytest.mark.parametrize("n_rows", [5, 64, 65, 400])
def test_confidences_are_the_same_summed_in_python_or_numpy(n_rows: int) -> None:
    """Short rows are summed in a dict, long ones with numpy: the same rows and values."""
    rng = np.random.default_rng(n_rows)
    rows = rng.integers(0, max(n_rows // 3, 2), size=n_rows)
    weights = rng.uniform(0.0, 2.0, size=n_rows)
    weights[::7] = 0.0
    unique, inverse = np.unique(rows, return_inverse=True)
    summed = np.bincount(inverse, weights=weights)
    got_rows, got_values = confidences(PARAMS, rows, weights)
    assert got_rows.dtype == np.int64
    assert got_rows.tolist() == unique[summed > 0].tolist()
    np.testing.assert_allclose(got_values, np.log1p(summed[summed > 0]), rtol=1e-12)


def test_recalculate_user_equals_implicits_own_recalculation() -> None:
    from implicit.als import AlternatingLeastSquares

    matrix = sp.random(30, 40, density=0.2, random_state=1, format="csr", dtype=np.float32) * 3
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=6, regularization=0.1, alpha=2.0, iterations=3, random_state=0, use_gpu=False
        )
        model.fit(matrix, show_progress=False)
    user_row = matrix[5]
    expected = model.recalculate_user(0, user_row)
    params = FoldIn(regularization=0.1, alpha=2.0)
    got = recalculate_user(
        model.item_factors,
        gramian(model.item_factors),
        user_row.indices.astype(np.int64),
        user_row.data,
        params,
    )
    # implicit solves with a few conjugate-gradient steps; the exact solve is close to it.
    cos = float(got @ expected / (np.linalg.norm(got) * np.linalg.norm(expected)))
    assert cos > 0.999


def test_a_customer_without_events_gets_the_zero_vector() -> None:
    y = np.ones((4, 3), np.float32)
    assert not recalculate_user(y, gramian(y), np.empty(0, np.int64), np.empty(0), PARAMS).any()


@pytest.mark.parametrize("n_rows", [1, 3, 16, 17, 40, 200])
def test_least_squares_solves_what_recalculate_user_solves(n_rows: int) -> None:
    """Short rows go through the rank-n update, long ones are solved directly: both give
    ``recalculate_user``'s vector, confidences under 1 (a negative update) included."""
    rng = np.random.default_rng(n_rows)
    y = rng.normal(size=(500, 32)).astype(np.float32)
    params = FoldIn(regularization=0.05, alpha=3.0)
    solver = LeastSquares(y, params)
    rows = rng.choice(500, size=n_rows, replace=False).astype(np.int64)
    values = rng.uniform(0.05, 4.0, size=n_rows)  # alpha * 0.05 < 1
    expected = recalculate_user(y, gramian(y), rows, values, params)
    np.testing.assert_allclose(solver.solve(rows, values), expected, rtol=1e-4, atol=1e-6)
    assert not solver.solve(np.empty(0, np.int64), np.empty(0)).any()


@pytest.mark.parametrize(("n_before", "n_new"), [(40, 3), (200, 11), (3, 2), (12, 30), (40, 0)])
def test_a_row_and_its_successor_solve_as_each_alone(
    n_before: int, n_new: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``solve_pair`` of a customer's training row and that row with new events (items added,
    some values raised) gives what ``solve`` gives each: long rows through one Gram product and
    one factorisation (``_solve`` never runs), short ones as ``solve`` takes them."""
    rng = np.random.default_rng(n_before + n_new)
    y = rng.normal(size=(500, 32)).astype(np.float32)
    solver = LeastSquares(y, FoldIn(regularization=0.05, alpha=3.0))
    picked = rng.choice(500, size=n_before + n_new, replace=False)
    rows = np.sort(picked[:n_before]).astype(np.int64)
    values = rng.uniform(0.05, 4.0, size=n_before)  # alpha * 0.05 < 1: negative terms too
    after_rows = np.sort(picked).astype(np.int64)
    after_values = rng.uniform(0.05, 4.0, size=len(after_rows))
    kept = np.searchsorted(after_rows, rows)
    raised = rng.random(n_before) < 0.3
    after_values[kept] = np.where(raised, values + 1.0, values)
    expected = solver.solve(rows, values), solver.solve(after_rows, after_values)
    if solver._solved_directly(n_before) and solver._solved_directly(len(after_rows)):

        def refuse(*args: object) -> None:
            raise AssertionError("the pair's Gram product was computed twice")

        monkeypatch.setattr("service.foldin._solve", refuse)
    before, after = solver.solve_pair((rows, values), (after_rows, after_values))
    np.testing.assert_allclose(before, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after, expected[1], rtol=1e-5, atol=1e-6)


def test_a_row_without_new_events_solves_once_to_the_same_vector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(size=(300, 16)).astype(np.float32)
    solver = LeastSquares(y, FoldIn(regularization=0.05, alpha=2.0))
    rows = np.arange(0, 120, 2, dtype=np.int64)
    values = rng.uniform(0.5, 3.0, size=len(rows))
    expected = solver.solve(rows, values)
    monkeypatch.setattr("service.foldin._solve", None)  # the pair never solves one by one
    before, after = solver.solve_pair((rows, values), (rows, values.copy()))
    np.testing.assert_allclose(before, expected, rtol=1e-6)
    np.testing.assert_array_equal(after, before)


def test_a_pair_whose_second_row_lost_an_item_is_solved_one_by_one() -> None:
    """Rows that are not a row and its successor (an item gone) are each solved alone."""
    rng = np.random.default_rng(3)
    y = rng.normal(size=(300, 16)).astype(np.float32)
    solver = LeastSquares(y, FoldIn(regularization=0.05, alpha=2.0))
    rows = np.arange(0, 120, 2, dtype=np.int64)
    values = rng.uniform(0.5, 3.0, size=len(rows))
    before, after = solver.solve_pair((rows, values), (rows[1:], values[1:]))
    np.testing.assert_allclose(before, solver.solve(rows, values), rtol=1e-6)
    np.testing.assert_allclose(after, solver.solve(rows[1:], values[1:]), rtol=1e-6)


@pytest.mark.parametrize("n_rows", [1, 5, 60, 300])
def test_an_exactly_exported_blend_folds_in_through_each_items_projection(n_rows: int) -> None:
    """A blend with one factor column per item (identity blocks beside a few dense factors) has
    more dimensions than items: each item's row of Y (YᵀY + λI)⁻¹ is kept instead of the inverse
    and the base, every row (all 300 items included) takes the update, and the answer is still
    ``recalculate_user``'s."""
    rng = np.random.default_rng(n_rows)
    n_items = 300
    dense = rng.normal(scale=0.3, size=(n_items, 16))
    y = np.hstack([dense, np.eye(n_items)]).astype(np.float32)
    params = FoldIn(regularization=0.05, alpha=2.0)
    solver = LeastSquares(y, params)
    assert solver._projected is not None and solver._kernel is not None
    assert solver._base is None and solver._inverse is None
    rows = rng.choice(n_items, size=n_rows, replace=False).astype(np.int64)
    values = rng.uniform(0.05, 4.0, size=n_rows)
    expected = recalculate_user(y, gramian(y), rows, values, params)
    np.testing.assert_allclose(solver.solve(rows, values), expected, rtol=1e-4, atol=1e-6)


def test_shipped_products_answer_without_computing_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``shippable`` gives an artifact, ``LeastSquares`` takes back (memory-mapped in the
    service) without the Gram matrix or an inverse, and solves the same."""
    rng = np.random.default_rng(5)
    y = np.hstack([rng.normal(scale=0.3, size=(300, 16)), np.eye(300)]).astype(np.float32)
    params = FoldIn(regularization=0.05, alpha=2.0)
    shipped = LeastSquares(y, params).shippable()
    assert set(shipped) == {"foldin_projected", "foldin_kernel"}

    def refuse(*_: object) -> None:
        raise AssertionError("computed what the artifact shipped")

    monkeypatch.setattr("service.foldin.gramian", refuse)
    monkeypatch.setattr("service.foldin.np.linalg.inv", refuse)
    solver = LeastSquares(y, params, shipped=shipped)
    rows = rng.choice(300, size=12, replace=False).astype(np.int64)
    values = rng.uniform(0.05, 4.0, size=12)
    monkeypatch.undo()
    expected = recalculate_user(y, gramian(y), rows, values, params)
    np.testing.assert_allclose(solver.solve(rows, values), expected, rtol=1e-4, atol=1e-6)


def test_models_that_take_another_path_ship_nothing() -> None:
    y = np.random.default_rng(6).normal(size=(500, 32)).astype(np.float32)
    assert LeastSquares(y, FoldIn(regularization=0.05, alpha=2.0)).shippable() == {}


@pytest.mark.parametrize("n_rows", [7, 290])
def test_many_factors_and_more_items_keep_the_base_for_rows_longer_than_the_dimension(
    n_rows: int,
) -> None:
    """280 dense factors, 400 items: projections for rows up to 280 items, the direct solve for
    longer ones; both ``recalculate_user``'s answer."""
    rng = np.random.default_rng(n_rows)
    y = rng.normal(scale=0.2, size=(400, 280)).astype(np.float32)
    params = FoldIn(regularization=0.1, alpha=3.0)
    solver = LeastSquares(y, params)
    assert solver._projected is not None and solver._base is not None and solver._kernel is None
    rows = rng.choice(400, size=n_rows, replace=False).astype(np.int64)
    values = rng.uniform(0.05, 4.0, size=n_rows)
    expected = recalculate_user(y, gramian(y), rows, values, params)
    np.testing.assert_allclose(solver.solve(rows, values), expected, rtol=1e-4, atol=1e-6)


def test_a_tiny_regularization_on_well_spread_factors_still_builds_on_the_inverse() -> None:
    """The trace bound cannot vouch for λ = 1e-9, the eigenvalues can: orthogonal factor columns
    make YᵀY well conditioned on its own."""
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(200, 8)))
    y = (q * 5.0).astype(np.float32)
    params = FoldIn(regularization=1e-9, alpha=2.0)
    solver = LeastSquares(y, params)
    assert solver._inverse is not None
    rows, values = np.array([3, 8], dtype=np.int64), np.array([1.0, 2.0])
    expected = recalculate_user(y, gramian(y), rows, values, params)
    np.testing.assert_allclose(solver.solve(rows, values), expected, rtol=1e-5)


def test_least_squares_solves_an_ill_conditioned_model_directly() -> None:
    """Zero and repeated factor columns with a tiny regularization: no inverse is built on, and
    the answer is still ``recalculate_user``'s."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=(300, 8)).astype(np.float32)
    y[:, 5] = 0.0
    y[:, 6] = y[:, 7]
    params = FoldIn(regularization=1e-9, alpha=2.0)
    solver = LeastSquares(y, params)
    assert solver._inverse is None
    rows, values = np.array([3, 8], dtype=np.int64), np.array([1.0, 2.0])
    expected = recalculate_user(y, gramian(y), rows, values, params)
    np.testing.assert_allclose(solver.solve(rows, values), expected, rtol=1e-5)


def test_age_in_days_is_never_negative() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    assert age_in_days(now - timedelta(days=1), now) == pytest.approx(1.0)
    assert age_in_days(now + timedelta(days=1), now) == 0.0


def test_the_gramian_is_summed_over_blocks_exactly() -> None:
    y = np.random.default_rng(1).standard_normal((1001, 5)).astype(np.float32)
    exact = y.astype(np.float64).T @ y.astype(np.float64)
    for block in (1, 7, 1000, 1001, 5000):
        assert np.allclose(gramian(y, block=block), exact, rtol=1e-12, atol=1e-9)
