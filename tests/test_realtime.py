"""Request-time vectors: known customers keep their fitted vector and move with new events."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import pytest

from service import artifact, foldin, ranking
from service.events import Event
from service.foldin import confidences, gramian, recalculate_user
from service.ranking import FactorModel
from service.realtime import customer_vector
from tests.builders import checkerboard_artifact

NOW = datetime(2026, 11, 1, tzinfo=UTC)  # after the checkerboard's data window


@pytest.fixture
def model(tmp_path: Path) -> FactorModel:
    return FactorModel(artifact.load(checkerboard_artifact(tmp_path)))


def view(item: str, kind: str = "view") -> Event:
    return Event(customer_id="u0", item_id=item, event_type=kind, channel="app", timestamp=NOW)  # type: ignore[arg-type]


def test_without_new_events_the_fitted_vector_is_served(model: FactorModel) -> None:
    found = customer_vector(model, "u0", [view("i03", "impression")], NOW)  # weight 0
    assert found.new_events == 0
    assert np.array_equal(found.vector, model.user_vector(model.user_row("u0")))  # type: ignore[arg-type]


@pytest.mark.parametrize("update_share", [foldin._UPDATE_SHARE, 0.0])
def test_new_events_move_the_fitted_vector_by_their_least_squares_effect(
    model: FactorModel, update_share: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short rows take the rank-n update, long ones (every row, with no update share) the direct
    solve of both rows at once; either way the vector moves by the exact difference."""
    monkeypatch.setattr(foldin, "_UPDATE_SHARE", update_share)
    row = model.user_row("u0")
    assert row is not None
    found = customer_vector(model, "u0", [view("i03"), view("i05")], NOW)
    base_rows, base_weights = model.training_row(row)
    new_rows = np.array([model.item_row("i03"), model.item_row("i05")], dtype=np.int64)
    new_weights = np.array([1.0, 1.0])

    def solve(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        r, v = confidences(model.fold_in, rows, weights)
        return recalculate_user(
            model.item_factors, gramian(model.item_factors), r, v, model.fold_in
        )

    delta = solve(
        np.concatenate([base_rows, new_rows]), np.concatenate([base_weights, new_weights])
    ) - solve(base_rows, base_weights)
    assert found.new_events == 2
    assert np.allclose(found.vector, model.user_vector(row) + delta, atol=1e-6)
    assert found.vector[1] > 0  # towards the odd items viewed


def training_solution(model: FactorModel, row: int) -> np.ndarray:
    """The customer's training-row solution, as ``FactorModel.solutions`` keeps it."""
    return model.solutions(row, confidences(model.fold_in, *model.training_row(row)))[0]


def test_the_training_row_solution_is_kept_per_model_and_bounded(
    model: FactorModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = model.user_row("u0")
    assert row is not None
    r, v = confidences(model.fold_in, *model.training_row(row))
    expected = recalculate_user(
        model.item_factors, gramian(model.item_factors), r, v, model.fold_in
    )
    first = training_solution(model, row)
    assert np.array_equal(first, expected)
    assert training_solution(model, row) is first  # kept, not solved again
    monkeypatch.setattr(model, "_solutions_kept", 2)
    for other in ("u1", "u2", "u3"):
        training_solution(model, model.user_row(other))  # type: ignore[arg-type]
    assert len(model._solutions) == 2 and row not in model._solutions  # first in, first out


def test_fewer_solutions_are_kept_the_more_factors_a_model_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kept solutions are bounded in bytes: an exactly exported blend has thousands of
    factors, and 20,000 of its solutions would take hundreds of MiB per worker."""
    loaded = artifact.load(checkerboard_artifact(tmp_path))
    dim = loaded.arrays["item_factors"].shape[1]
    monkeypatch.setattr(ranking, "_SOLUTIONS_MAX_BYTES", 3 * 4 * dim)
    model = FactorModel(loaded)
    for user in ("u0", "u1", "u2", "u3"):
        training_solution(model, model.user_row(user))  # type: ignore[arg-type]
    assert len(model._solutions) == 3


def test_an_unknown_customer_is_folded_in_from_new_events_alone(model: FactorModel) -> None:
    assert customer_vector(model, "stranger", [], NOW).vector is None
    found = customer_vector(model, "stranger", [view("i03")], NOW)
    assert found.vector is not None
    assert found.vector[1] > abs(found.vector[0])


def test_no_request_computes_the_gram_matrix(
    model: FactorModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``YᵀY`` is computed when the model is loaded (off the event loop): folding events in at
    request time only reads it (at a million items it took seconds on a loaded worker's loop)."""

    def refuse(*_: object) -> None:
        raise AssertionError("the Gram matrix was computed during a request")

    monkeypatch.setattr("service.foldin.gramian", refuse)
    assert customer_vector(model, "u0", [view("i03")], NOW).new_events == 1
    assert customer_vector(model, "stranger", [view("i03")], NOW).vector is not None


def test_a_live_low_rating_does_not_move_the_customer_towards_the_item(
    model: FactorModel,
) -> None:
    """As training weighed it (its manifest's ``FoldIn``): a 1-star rating is no evidence the
    customer wants the item; a 5-star one is."""
    model.fold_in = msgspec.structs.replace(
        model.fold_in,
        event_weights={**model.fold_in.event_weights, "rating": 1.0},
        rating_scale=5.0,
        min_relevant_rating=3.5,
    )

    def rated(stars: float) -> Event:
        return Event(
            customer_id="u0", item_id="i03", event_type="rating", channel="web", timestamp=NOW,
            rating=stars,
        )  # fmt: skip

    fitted = model.user_vector(model.user_row("u0"))  # type: ignore[arg-type]
    low = customer_vector(model, "u0", [rated(1.0)], NOW)
    assert low.new_events == 0
    assert np.array_equal(low.vector, fitted)  # type: ignore[arg-type]
    high = customer_vector(model, "u0", [rated(5.0)], NOW)
    assert high.new_events == 1
    assert high.vector[1] > fitted[1]  # type: ignore[index]
