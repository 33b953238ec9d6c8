"""Each customer's best items, ranked when the model is built: shipped, checked, and served
exactly as live ranking would answer for a customer with nothing new since training."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from service import ann, artifact, recommend
from service.customer_table import CUSTOMER_KEPT, build_customer_table
from service.errors import ArtifactError
from service.events import Event
from service.neighbours import NeighboursSpec
from service.ranking import FactorModel
from service.realtime import current_row
from service.state import CustomerState
from tests.builders import save_packed, with_arrays

N_USERS, N_ITEMS, DIM = 60, 3000, 8
# A catalogue the default settings search through the index (AnnConfig().min_items).
INDEXED_ITEMS = ann.AnnConfig().min_items


def random_model(
    folder: Path,
    *,
    with_index: bool,
    with_neighbours: bool,
    table: bool = True,
    ann_config: ann.AnnConfig | None = None,
) -> FactorModel:
    """Customers with 0-20 purchases among clustered items (``INDEXED_ITEMS`` of them with the
    index, else ``N_ITEMS``); optionally an item-item component; with the customer table unless
    ``table`` is False; served with ``ann_config`` (default: the default settings)."""
    n_items = INDEXED_ITEMS if with_index else N_ITEMS
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(30, DIM)).astype(np.float32)
    topic = rng.integers(0, 30, size=n_items)
    items = centres[topic] + 0.5 * rng.normal(size=(n_items, DIM)).astype(np.float32)
    users = centres[rng.integers(0, 30, size=N_USERS)] + rng.normal(size=(N_USERS, DIM))
    counts = rng.integers(0, 21, size=N_USERS)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    per_item = 20
    arrays, channels = artifact.pack(
        user_ids=[f"c{i:03d}" for i in range(N_USERS)],
        user_factors=users.astype(np.float32),
        item_ids=[f"i{j:05d}" for j in range(n_items)],
        item_factors=items,
        item_categories=[f"cat{t % 5}" for t in topic],
        popularity={"all": rng.random(n_items).astype(np.float32)},
        bought_indptr=indptr,
        bought_items=rng.integers(0, n_items, size=int(indptr[-1])).astype(np.int32),
        user_items=(
            indptr,
            rng.integers(0, n_items, size=int(indptr[-1])).astype(np.int32),
            rng.random(int(indptr[-1])).astype(np.float32),
        ),
        neighbours=(
            (
                np.arange(n_items + 1, dtype=np.int64) * per_item,
                rng.integers(0, n_items, size=n_items * per_item).astype(np.int32),
                rng.exponential(0.3, size=n_items * per_item).astype(np.float32),
            )
            if with_neighbours
            else None
        ),
    )
    fields: dict[str, object] = {}
    if with_neighbours:
        fields["neighbours"] = NeighboursSpec()
    if with_index:
        index = ann.build_index(arrays["item_factors"])
        fields["ann"] = ann.calibrate(index, arrays)
        arrays.update(index)
    path = save_packed(folder, (arrays, channels), **fields)
    if table:  # ranked as training ranks it: the default settings
        ranked = build_customer_table(FactorModel(artifact.load(path)))
        path = with_arrays(folder / "with-table", path, ranked)
    loaded = artifact.load(path)
    return FactorModel(loaded, ann=ann_config)


@pytest.mark.parametrize(
    ("with_index", "with_neighbours"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["exact", "index", "component", "component-and-index"],
)
def test_the_table_answers_what_live_ranking_answers(
    tmp_path: Path, with_index: bool, with_neighbours: bool
) -> None:
    model = random_model(tmp_path, with_index=with_index, with_neighbours=with_neighbours)
    assert (model.index is not None) == with_index
    rng = np.random.default_rng(5)
    n_items = model.n_items
    answered = fell_back = 0
    for user in range(N_USERS):
        for k in (1, 10, 20):
            bought = model.bought_rows(user)
            # What a request leaves out besides: bought since, the cart, its own ``exclude``;
            # and sometimes the channel's stock.
            exclude = np.concatenate([bought, rng.integers(0, n_items, size=rng.integers(0, 8))])
            allowed = rng.random(n_items) < 0.8 if rng.random() < 0.5 else None
            kept = model.recommend_unchanged(user, k, exclude=exclude, allowed=allowed)
            history = current_row(model, user, [], []) if with_neighbours else None
            live = model.recommend(
                model.user_vector(user), k, exclude=exclude, allowed=allowed, history=history
            )
            if kept is None:
                fell_back += 1
                continue
            answered += 1
            assert kept[0].tolist() == live[0].tolist()
            np.testing.assert_allclose(kept[1], live[1], rtol=1e-5, atol=1e-6)
    assert answered > 0.9 * (answered + fell_back)


def test_too_few_items_left_or_a_large_k_rank_live(tmp_path: Path) -> None:
    model = random_model(tmp_path, with_index=False, with_neighbours=False)
    table = model.artifact.arrays["customer_top_rows"]
    assert table.shape == (N_USERS, CUSTOMER_KEPT)
    bought = model.bought_rows(0)
    assert model.recommend_unchanged(0, CUSTOMER_KEPT + 1, exclude=bought) is None
    allowed = np.ones(N_ITEMS, dtype=bool)
    allowed[table[0][:-9]] = False  # 9 of its items left
    assert model.recommend_unchanged(0, 10, exclude=bought, allowed=allowed) is None
    rows, _ = model.recommend_unchanged(0, 9, exclude=bought, allowed=allowed)  # type: ignore[misc]
    assert rows.tolist() == table[0][-9:].tolist()
    # Nothing bought in the training data is in the table.
    for user in range(N_USERS):
        assert not set(table[user].tolist()) & set(model.bought_rows(user).tolist())
    without = random_model(tmp_path / "none", with_index=False, with_neighbours=False, table=False)
    assert without.recommend_unchanged(0, 10, exclude=bought) is None


def test_a_small_catalogue_pads_the_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    packed = artifact.pack(
        user_ids=["a", "b"],
        user_factors=rng.normal(size=(2, 4)).astype(np.float32),
        item_ids=[f"i{j}" for j in range(5)],
        item_factors=rng.normal(size=(5, 4)).astype(np.float32),
        item_categories=[None] * 5,
        popularity={"all": np.ones(5, np.float32)},
        bought_indptr=np.array([0, 2, 2]),
        bought_items=np.array([1, 3], np.int32),
    )
    model = FactorModel(artifact.load(save_packed(tmp_path, packed)))
    table = build_customer_table(model)
    assert table["customer_top_rows"].tolist()[0][3:] == [-1, -1]  # 3 items not bought
    assert sorted(table["customer_top_rows"][0][:3].tolist()) == [0, 2, 4]
    assert sorted(table["customer_top_rows"][1].tolist()) == [0, 1, 2, 3, 4]


def test_a_broken_table_is_refused(tmp_path: Path) -> None:
    model = random_model(tmp_path / "m", with_index=False, with_neighbours=False, table=False)
    path = model.artifact.path
    good = build_customer_table(model)
    cases = {
        "go together": {"customer_top_rows": good["customer_top_rows"]},
        "out of range": {**good, "customer_top_rows": good["customer_top_rows"] + N_ITEMS},
        "customers x width": {k: v[:-1] for k, v in good.items()},
        "both be": {**good, "customer_top_scores": good["customer_top_scores"][:, :-1]},
        "must be 2-D": {**good, "customer_top_rows": good["customer_top_rows"][:, 0]},
    }
    for message, table in cases.items():
        with pytest.raises(ArtifactError, match=message):
            with_arrays(tmp_path / message.replace(" ", "-"), path, table)
    served = artifact.load(with_arrays(tmp_path / "good", path, good))
    assert served.arrays["customer_top_rows"].shape == (N_USERS, CUSTOMER_KEPT)


def test_recommendations_use_the_table_only_for_customers_with_nothing_new(
    tmp_path: Path,
) -> None:
    # A table that ranks differently from the factors (each customer's list reversed) shows
    # which path answered.
    model = random_model(tmp_path / "m", with_index=False, with_neighbours=False)
    arrays = model.artifact.arrays
    reversed_table = {
        "customer_top_rows": np.ascontiguousarray(arrays["customer_top_rows"][:, ::-1]),
        "customer_top_scores": np.ascontiguousarray(arrays["customer_top_scores"][:, ::-1]),
    }
    plain = random_model(tmp_path / "p", with_index=False, with_neighbours=False, table=False)
    odd = FactorModel(
        artifact.load(with_arrays(tmp_path / "odd", plain.artifact.path, reversed_table))
    )
    now = datetime(2026, 6, 1, tzinfo=UTC)
    query = recommend.Query(channel="web", k=10)

    def items(m: FactorModel, ctx: recommend.Context, q: recommend.Query = query) -> list[str]:
        return [i.item_id for i in recommend.for_customer(m, "c007", q, ctx).items]

    unchanged = recommend.Context(now=now)
    table_order = odd.item_ids_of(reversed_table["customer_top_rows"][7].astype(np.int64))
    assert items(odd, unchanged) == table_order[:10]
    assert items(odd, unchanged) != items(plain, unchanged)
    assert items(model, unchanged) == items(plain, unchanged)  # the true table: the same answer
    # New events since training, bought items allowed again, a category: ranked live.
    viewed = Event(
        customer_id="c007",
        item_id="i00042",
        event_type="view",
        channel="web",
        timestamp=now - timedelta(minutes=5),
    )
    for ctx, q in [
        (recommend.Context(now=now, state=CustomerState(recent=[viewed])), query),
        (recommend.Context(now=now, exclude_bought=False), query),
        (unchanged, recommend.Query(channel="web", k=10, category="cat1")),
    ]:
        assert items(odd, ctx, q) == items(plain, ctx, q)


def test_a_service_told_to_search_otherwise_ranks_live(tmp_path: Path) -> None:
    # The table was ranked through the index with the calibrated probes: exact scoring, or
    # other probes, answer differently, so such a service does not use it.
    default = random_model(tmp_path / "d", with_index=True, with_neighbours=False)
    bought = default.bought_rows(3)
    assert default.recommend_unchanged(3, 10, exclude=bought) is not None
    for config in (
        ann.AnnConfig(mode="off"),
        ann.AnnConfig(nprobe=2),
        ann.AnnConfig(min_items=10 * INDEXED_ITEMS),
    ):
        model = FactorModel(default.artifact, ann=config)
        assert model.recommend_unchanged(3, 10, exclude=bought) is None
    same = FactorModel(default.artifact, ann=ann.AnnConfig(mode="auto", nprobe_similar=3))
    assert same.recommend_unchanged(3, 10, exclude=bought) is not None
    # A narrow filter is scored exactly by live ranking: not answered from the table.
    narrow = np.zeros(default.n_items, dtype=bool)
    narrow[default.artifact.arrays["customer_top_rows"][3]] = True
    assert default.recommend_unchanged(3, 10, exclude=bought, allowed=narrow) is None
