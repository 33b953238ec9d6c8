"""Offer affinities: a category offer is scored against the category's best sellers."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from service import artifact
from service.offer_scoring import Plan
from service.offers import Offer
from service.ranking import FactorModel
from tests.builders import clustered_artifact


def category_offer(category: str) -> Offer:
    body = {
        "offer_id": "o1",
        "title": "10% off",
        "kind": "percent_off",
        "amount": 10,
        "target": {"categories": [category]},
        "channels": ["email"],
        "value": 10.0,
        "cost": 1.0,
    }
    return msgspec.convert(body, Offer)


@pytest.mark.parametrize("cap", [20, 10_000])
def test_a_category_offer_is_scored_against_at_most_its_best_sellers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cap: int
) -> None:
    """A large category's offer takes the customer's best score among the category's ``cap``
    most popular items (a small one, among all its items): a request never scores a whole
    category of a large catalogue."""
    monkeypatch.setattr("service.offer_scoring._MAX_CATEGORY_TARGET", cap)
    model = FactorModel(artifact.load(clustered_artifact(tmp_path, 2000, with_index=False)))
    mask = model.category_mask("cat3")
    assert mask is not None and model.allowed_count(mask) > 20
    plan = Plan(model, [category_offer("cat3")])
    expected = model.popular("all", cap, allowed=mask)[0] if cap == 20 else model.allowed_rows(mask)
    assert plan.factors.shape[1] == min(cap, model.allowed_count(mask))
    # Scaled into the 0..1 the affinity is clipped to, where the best seller's score and the
    # whole category's best differ (0.06 against 0.10 for one of these customers).
    vectors = [np.asarray(model.user_factors[i]) * np.float32(0.01) for i in range(5)]
    scores = np.stack(vectors) @ np.asarray(model.item_factors)[np.sort(expected)].T
    np.testing.assert_allclose(
        plan.affinities(vectors, 0.1)[:, 0], np.clip(scores.max(axis=1), 0, 1), rtol=1e-5
    )
