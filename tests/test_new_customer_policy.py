"""New customers: popular items or the folded-in model, whichever training found ranks them better.

Two controlled worlds over one hand-made model: taste items ``a*`` point one way, ``b*`` the
other, and the three best sellers ``p*`` barely score through the factors. New customers view
``a`` items first, then buy a best seller (the best sellers world) or another ``a`` item (the
taste world).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from service.artifact import FoldIn
from service.settings import Settings
from tests.builders import checkerboard_artifact
from tests.conftest import ADMIN_KEY, client_for, replace
from tests.test_training import END, events_table
from training.coldstart import POLICY_MIN_CASES, new_customer_policy
from training.matrix import Interactions
from training.models.base import Fitted

A = [f"a{j:02d}" for j in range(20)]
B = [f"b{j:02d}" for j in range(20)]
P = ["p0", "p1", "p2"]
ITEMS = A + B + P
# Best sellers first, then the b items, the a items last: the popular list holds no a item.
POPULARITY = np.array([1.0] * 20 + [2.0] * 20 + [9.0, 8.0, 7.0], dtype=np.float32)
# The a items the taste world's new customers buy (a10-a19) lead their direction.
FACTORS = np.array(
    [[1.0, 0.0]] * 10 + [[1.2, 0.0]] * 10 + [[0.0, 1.0]] * 20 + [[0.05, 0.05]] * 3,
    dtype=np.float32,
)
PARAMS = FoldIn(event_weights={"view": 1.0, "purchase": 5.0}, regularization=0.1, alpha=10.0)


def model() -> tuple[Fitted, Interactions]:
    known = np.array(["k0", "k1"], dtype=object)
    fitted = Fitted("als", np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), FACTORS)
    matrix = Interactions(
        matrix=sp.csr_matrix((2, len(ITEMS))),
        customer_ids=known,
        item_ids=np.array(ITEMS, dtype=object),
    )
    return fitted, matrix


def new_customers(n: int, bought: str, views: int = 3) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for c in range(n):
        for v in range(views):
            item = A[(c + v) % 10]
            rows.append(
                {"customer_id": f"n{c}", "item_id": item, "timestamp": END + timedelta(hours=v)}
            )
        target = P[c % 3] if bought == "p" else A[10 + c % 10]
        rows.append(
            {"customer_id": f"n{c}", "item_id": target, "event_type": "purchase",
             "timestamp": END + timedelta(hours=views + 1)}
        )  # fmt: skip
    return rows


def test_where_new_customers_take_the_best_sellers_they_get_popular_items() -> None:
    fitted, interactions = model()
    future = events_table(new_customers(POLICY_MIN_CASES + 10, "p", views=8))
    policy, compared = new_customer_policy(
        fitted, POPULARITY, interactions, future, PARAMS, 3.5, 10
    )
    assert policy.popular_until_events == 8  # popularity won at every size measured
    assert [c["events"] for c in compared] == [1, 2, 3, 5, 8]
    assert all(c["popular"] > c["fold_in"] for c in compared)
    assert policy.regularization == PARAMS.regularization  # the rest of the fold-in stands


def test_where_new_customers_follow_their_taste_the_fold_in_stays() -> None:
    fitted, interactions = model()
    future = events_table(new_customers(POLICY_MIN_CASES + 10, "a"))
    policy, compared = new_customer_policy(
        fitted, POPULARITY, interactions, future, PARAMS, 3.5, 10
    )
    assert policy.popular_until_events == 0
    assert len(compared) == 1 and compared[0]["fold_in"] > compared[0]["popular"]


def test_too_few_new_customers_decide_nothing() -> None:
    fitted, interactions = model()
    future = events_table(new_customers(POLICY_MIN_CASES - 1, "p"))
    policy, compared = new_customer_policy(
        fitted, POPULARITY, interactions, future, PARAMS, 3.5, 10
    )
    assert (policy.popular_until_events, compared) == (0, [])


def test_the_service_serves_popular_items_to_new_customers_up_to_the_models_limit(
    tmp_path: Path, settings: Settings
) -> None:
    """Through the API: a new customer with at most ``popular_until_events`` events gets the
    channel's popular items; one event more, the folded-in model."""
    models = tmp_path / "policy-models"
    checkerboard_artifact(models, fold_in=FoldIn(popular_until_events=2))
    with client_for(replace(settings, model_dir=str(models))) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"

        def answer() -> dict[str, Any]:
            got = client.get("/v1/customers/newbie/recommendations", params={"k": 3})
            assert got.status_code == 200, got.text
            return got.json()  # type: ignore[no-any-return]

        def view(item: str) -> None:
            event = {"customer_id": "newbie", "item_id": item, "event_type": "view"}
            assert client.post("/v1/events", json={**event, "channel": "web"}).status_code == 202

        view("i03")
        view("i05")
        two = answer()
        assert two["fallback"] is True and "new customer" in two["fallback_reason"]
        assert [i["source"] for i in two["items"]] == ["popular"] * 3
        view("i07")
        three = answer()
        assert three["fallback"] is False
        assert [i["source"] for i in three["items"]] == ["model"] * 3
        # A customer of the model is never affected, whatever their events.
        known = client.get("/v1/customers/u1/recommendations", params={"k": 3}).json()
        assert known["fallback"] is False
