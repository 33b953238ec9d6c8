from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from service import ann, artifact, recommend
from service.errors import InvalidRequest
from service.ranking import FactorModel
from service.state import CustomerState
from service.topk import top_k
from tests.builders import checkerboard_artifact, clustered_artifact, item, save_packed


def ctx(state: CustomerState | None = None) -> recommend.Context:
    return recommend.Context(now=datetime.now(UTC), state=state or CustomerState())


@pytest.fixture
def model(tmp_path: Path) -> FactorModel:
    return FactorModel(artifact.load(checkerboard_artifact(tmp_path)))


def ids(model: FactorModel, rows: np.ndarray) -> list[str]:
    return [model.item_id(int(r)) for r in rows]


def test_ids_are_found_by_binary_search(model: FactorModel) -> None:
    assert model.item_id(model.item_row("i07")) == "i07"  # type: ignore[arg-type]
    assert model.user_row("u3") is not None
    assert model.item_row("i99") is None
    assert model.item_row("") is None
    assert model.user_row("u" * 500) is None  # longer than any stored id
    assert ids(model, model.item_rows(["i03", "nope", "i01"])) == ["i03", "i01"]


def test_many_ids_are_looked_up_in_one_search_with_unknown_ones_marked(
    model: FactorModel,
) -> None:
    wanted = ["i05", "nope", "", "i" * 500, "i01\x00", "i00", "i05"]
    rows = model.lookup_items(wanted)
    assert rows.tolist()[1:5] == [-1, -1, -1, -1]  # unknown, empty, too long, NUL-ended
    assert [model.item_id(int(r)) for r in rows[[0, 5, 6]]] == ["i05", "i00", "i05"]
    assert rows.tolist() == [
        model.item_row(i) if model.item_row(i) is not None else -1 for i in wanted
    ]
    assert model.lookup_items([]).tolist() == []


def test_recommend_ranks_the_customers_side_of_the_checkerboard(model: FactorModel) -> None:
    rows, scores = model.recommend(model.user_vector(model.user_row("u2")), 3)  # type: ignore[arg-type]
    assert ids(model, rows) == ["i00", "i02", "i04"]
    assert list(scores) == sorted(scores, reverse=True)


def test_top_k_never_returns_excluded_or_disallowed_rows() -> None:
    scores = np.array([5, 4, 3, 2, 1], np.float32)
    allowed = np.array([True, True, False, True, True])
    rows, _ = top_k(scores, 3, exclude=np.array([0]), allowed=allowed)
    assert rows.tolist() == [1, 3, 4]


def test_top_k_returns_fewer_when_fewer_are_allowed() -> None:
    rows, _ = top_k(np.ones(4, np.float32), 10, allowed=np.array([False, True, False, False]))
    assert rows.tolist() == [1]


def test_similar_items_are_from_the_same_side_and_exclude_the_item(model: FactorModel) -> None:
    rows, scores = model.similar_items(model.item_row("i04"), 4)  # type: ignore[arg-type]
    assert "i04" not in ids(model, rows)
    assert all(int(i[1:]) % 2 == 0 for i in ids(model, rows))
    assert scores[0] == pytest.approx(1.0)


def test_popular_follows_the_channel_and_falls_back_to_overall(model: FactorModel) -> None:
    assert ids(model, model.popular("web", 2)[0]) == ["i19", "i17"]
    assert ids(model, model.popular("store", 2)[0]) == ["i18", "i16"]
    assert ids(model, model.popular("email", 2)[0]) == ["i00", "i01"]  # no email data: overall


def test_for_customer_excludes_training_and_recent_purchases(model: FactorModel) -> None:
    state = CustomerState(bought=frozenset({"i02"}))
    ranked = recommend.for_customer(model, "u0", recommend.Query(channel="web", k=3), ctx(state))
    assert [i.item_id for i in ranked.items] == ["i04", "i06", "i08"]
    assert not ranked.fallback
    assert ranked.items[0].reason in ("because you bought i00", "because you bought i02")


def test_for_customer_honours_explicit_exclusions_and_category(model: FactorModel) -> None:
    query = recommend.Query(channel="web", k=2, category="odd", exclude=("i01", "i03"))
    ranked = recommend.for_customer(model, "u1", query, ctx(CustomerState()))
    assert [i.item_id for i in ranked.items] == ["i05", "i07"]


def test_unknown_customers_get_popular_items_for_the_channel_flagged_as_fallback(
    model: FactorModel,
) -> None:
    ranked = recommend.for_customer(
        model, "stranger", recommend.Query(channel="store", k=3), ctx(CustomerState())
    )
    assert ranked.fallback and ranked.fallback_reason
    assert [i.item_id for i in ranked.items] == ["i18", "i16", "i14"]
    assert {i.source for i in ranked.items} == {"popular"}


def test_a_list_has_k_items_beyond_the_customers_taste(model: FactorModel) -> None:
    """u0 likes the 10 even items but bought i00: the 9 others first, then odd ones."""
    ranked = recommend.for_customer(
        model, "u0", recommend.Query(channel="web", k=12), ctx(CustomerState())
    )
    assert len({i.item_id for i in ranked.items}) == 12
    assert [i.item_id for i in ranked.items[:9]] == [item(j) for j in range(2, 20, 2)]
    assert all(int(i.item_id[1:]) % 2 == 1 for i in ranked.items[9:])


def test_a_list_is_never_longer_than_the_catalogue_allows(model: FactorModel) -> None:
    query = recommend.Query(channel="web", k=50, category="even")
    ranked = recommend.for_customer(model, "u0", query, ctx(CustomerState()))
    assert sorted(i.item_id for i in ranked.items) == [item(j) for j in range(2, 20, 2)]


def test_an_unknown_category_is_a_clear_error(model: FactorModel) -> None:
    with pytest.raises(InvalidRequest, match="unknown category 'shoes'"):
        recommend.for_customer(
            model, "u0", recommend.Query(channel="web", k=3, category="shoes"), ctx(CustomerState())
        )


def test_similar_to_item_is_topped_up_and_filtered(model: FactorModel) -> None:
    query = recommend.Query(channel="web", k=5, category="odd")
    items = recommend.similar_to_item(model, model.item_row("i01"), query)  # type: ignore[arg-type]
    assert len(items) == 5
    assert "i01" not in {i.item_id for i in items}
    assert {i.category for i in items} == {"odd"}


def _brute_force(scores: np.ndarray, k: int, exclude: np.ndarray, allowed: np.ndarray) -> list[int]:
    ok = allowed.copy()
    ok[exclude] = False
    candidates = np.flatnonzero(ok)
    return candidates[np.argsort(-scores[candidates], kind="stable")][:k].tolist()


@pytest.mark.parametrize("mask_kind", ["category", "stock"])
def test_a_narrow_filter_without_an_index_scores_just_its_items_and_still_finds_the_best(
    tmp_path: Path, mask_kind: str
) -> None:
    model = FactorModel(
        artifact.load(clustered_artifact(tmp_path, 3000, with_index=False)),
        ann=ann.AnnConfig(mode="off"),
    )
    assert model.index is None
    rng = np.random.default_rng(3)
    if mask_kind == "category":
        allowed = model.category_mask("cat3")
    else:  # a store's stock: a plain mask the model has not seen
        allowed = rng.random(model.n_items) < 0.05
    assert allowed is not None and model.allowed_count(allowed) * 3 <= model.n_items
    factors = np.asarray(model.item_factors)
    norms = np.linalg.norm(factors, axis=1)
    for customer in range(5):
        vector = model.user_vector(customer)
        inside = np.flatnonzero(allowed)
        # The best few allowed items excluded (bought): the answer must reach past them.
        exclude = inside[np.argsort(-(factors[inside] @ vector))[:4]].astype(np.int64)
        rows, scores = model.recommend(vector, 10, exclude=exclude, allowed=allowed)
        assert rows.tolist() == _brute_force(factors @ vector, 10, exclude, allowed)
        assert np.allclose(scores, (factors @ vector)[rows], rtol=1e-5)
        item_row = int(inside[customer])
        rows, _ = model.similar_items(item_row, 10, exclude=exclude, allowed=allowed)
        cosine = factors @ factors[item_row] / norms / norms[item_row]
        own = np.append(exclude, item_row)
        assert rows.tolist() == _brute_force(cosine, 10, own, allowed)
    # A filter that leaves fewer items than asked for gives them all.
    few = np.zeros(model.n_items, dtype=bool)
    few[[5, 50, 500]] = True
    rows, _ = model.recommend(model.user_vector(0), 10, exclude=np.array([50]), allowed=few)
    assert sorted(rows.tolist()) == [5, 500]


def _labelled_model(tmp_path: Path) -> FactorModel:
    packed = artifact.pack(
        user_ids=["u0"],
        user_factors=np.ones((1, 2), np.float32),
        item_ids=["a", "b", "c", "d"],
        item_factors=np.ones((4, 2), np.float32),
        item_categories=["shoes", None, "bags", "shoes"],
        popularity={"all": np.ones(4, np.float32)},
        bought_indptr=np.array([0, 0]),
        bought_items=np.array([], np.int32),
        item_prices=[10.5, None, 2.25, 4.0],
        item_brands=["acme", "acme", "zeta", None],
    )
    return FactorModel(artifact.load(save_packed(tmp_path, packed)))


def test_prices_and_categories_of_many_items_at_once(tmp_path: Path) -> None:
    # What a customer's offer facts sum and collect over their purchases.
    model = _labelled_model(tmp_path)
    a, b, c, d = (model.item_row(i) for i in "abcd")
    rows = np.array([a, b, a, d], dtype=np.int64)
    assert model.total_price(rows) == pytest.approx(10.5 + 0 + 10.5 + 4.0)  # b's price unknown
    assert model.total_price(np.empty(0, np.int64)) == 0.0
    assert model.category_set(rows) == frozenset({"shoes"})  # b has none
    assert model.category_set(np.array([b, c], dtype=np.int64)) == frozenset({"bags"})
    assert model.category_set(np.empty(0, np.int64)) == frozenset()


def test_the_heaviest_categories_and_brands_of_many_items(tmp_path: Path) -> None:
    # The tablet's favourites: weights summed per category and per brand, heaviest first.
    model = _labelled_model(tmp_path)
    a, b, c, d = (model.item_row(i) for i in "abcd")
    rows = np.array([a, b, c, c, d], dtype=np.int64)
    weights = np.array([3.0, 5.0, 1.0, 1.0, 0.5])
    categories, brands = model.heaviest_labels(rows, weights, top=3)
    assert categories == ["shoes", "bags"]  # shoes 3 + 0.5, bags 2; b has no category
    assert brands == ["acme", "zeta"]  # acme 3 + 5, zeta 2; d has no brand
    assert model.heaviest_labels(rows, weights, top=1) == (["shoes"], ["acme"])
    empty = np.empty(0, np.int64)
    assert model.heaviest_labels(empty, np.empty(0), top=3) == ([], [])
