"""The sparse item-item component: artifact contract, round trip, parity with training."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from service import artifact
from service.ann import AnnConfig
from service.errors import ArtifactError
from service.events import Event
from service.history import customer_history
from service.neighbours import Neighbours, NeighboursSpec, check_neighbours, dense_block
from service.ranking import FactorModel
from service.recommend import Context, Query, for_customer
from tests.builders import checkerboard_artifact, save_packed
from tests.test_quality import complements_file  # noqa: F401 (fixture)
from training.config import TrainConfig, Weights
from training.experiment import SideInfo, make_data
from training.loaders import load_events
from training.matrix import Interactions
from training.models.base import Data
from training.models.neighbours import AUTO_L2_PER_MEAN_COUNT, fit_ease, fit_itemknn
from training.pipeline import Inputs, run
from training.selection import fit_named


def _parts(neighbours: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> dict[str, object]:
    return {
        "user_ids": ["u0", "u1"],
        "user_factors": np.zeros((2, 1), np.float32),
        # Out of id order, so pack has to re-index the component.
        "item_ids": ["c", "a", "b"],
        "item_factors": np.zeros((3, 1), np.float32),
        "item_categories": [None, None, None],
        "popularity": {"all": np.ones(3, np.float32)},
        "bought_indptr": np.array([0, 0, 0]),
        "bought_items": np.array([], np.int32),
        "neighbours": neighbours,
    }


def _save(tmp_path: Path, neighbours, spec: NeighboursSpec | None) -> Path:  # type: ignore[no-untyped-def]
    packed = artifact.pack(**_parts(neighbours))  # type: ignore[arg-type]
    return save_packed(tmp_path, packed, neighbours=spec)


# In pack's input order (c, a, b): c lends 2.0 to a; b lends 0.5 to c and 1.5 to a.
COMPONENT = (np.array([0, 1, 1, 3]), np.array([1, 0, 1]), np.array([2.0, 0.5, 1.5], np.float32))


def test_the_component_round_trips_and_follows_the_item_order(tmp_path: Path) -> None:
    path = _save(tmp_path, COMPONENT, NeighboursSpec(weight=2.0, part="ease"))
    loaded = artifact.load(path)
    assert loaded.manifest.neighbours == NeighboursSpec(weight=2.0, part="ease")
    assert set(loaded.manifest.files) >= {"neighbours_indptr", "neighbours_weights"}
    model = FactorModel(loaded)
    assert model.neighbours is not None
    a, b, c = (model.item_row(i) for i in "abc")
    # A history of c (value 1) and b (value 2): a gets 2*1 + 1.5*2, c gets 0.5*2, times weight 2.
    rows, scores = model.neighbours.scores(np.array([c, b]), np.array([1.0, 2.0]))
    assert dict(zip(rows.tolist(), scores.tolist(), strict=True)) == {a: 10.0, c: 2.0}


def test_artifacts_without_the_component_still_load(tmp_path: Path) -> None:
    model = FactorModel(artifact.load(checkerboard_artifact(tmp_path)))
    assert model.neighbours is None
    assert artifact.load(_save(tmp_path / "plain", None, None)).manifest.neighbours is None


@pytest.mark.parametrize(
    ("component", "spec", "message"),
    [
        (COMPONENT, None, "go together"),
        (None, NeighboursSpec(), "go together"),
        ((np.array([0, 1, 1, 3]), np.array([1, 0, 7]), COMPONENT[2]), NeighboursSpec(), "range"),
    ],
)
def test_a_broken_component_is_refused(
    tmp_path: Path, component: object, spec: NeighboursSpec | None, message: str
) -> None:
    with pytest.raises(ArtifactError, match=message):
        _save(tmp_path, component, spec)


def test_a_normalised_component_scales_each_customer_to_unit_deviation(tmp_path: Path) -> None:
    model = FactorModel(artifact.load(_save(tmp_path, COMPONENT, NeighboursSpec(normalise=True))))
    assert model.neighbours is not None
    dense = model.neighbours.dense(np.array([model.item_row("c")]), np.array([3.0]))
    assert float(np.std(dense)) == pytest.approx(1.0)


# EASE served through the component (forced on this small catalogue), blended with popularity.
BLEND = TrainConfig(
    algorithm="blend",
    models={"ease": {"exact_items": 0, "rank": 4, "l2": 5.0}},
    selection=msgspec.structs.replace(
        TrainConfig().selection,
        blend_parts=["ease", "popularity"],
        blend_weights={"ease": 1.0, "popularity": 0.3},
    ),
)


@pytest.fixture(scope="module")
def trained(complements_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    model_dir = tmp_path_factory.mktemp("neighbours-model")
    return run(Inputs(events=[str(complements_file)]), model_dir, BLEND)


def test_a_long_history_keeps_the_exact_top_items_on_the_index_path(tmp_path: Path) -> None:
    # 3,000 items lending score to 300 items each: five history items reach over a thousand
    # items, more than the index path rescores; its answers must still be the exact ones.
    rng = np.random.default_rng(7)
    n_items, n_users, per_item = 3000, 30, 300
    indptr = np.arange(n_items + 1) * per_item
    indices = rng.integers(0, n_items, size=n_items * per_item).astype(np.int32)
    weights = rng.exponential(0.1, size=n_items * per_item).astype(np.float32)
    bought = rng.integers(0, n_items, size=n_users * 5).astype(np.int32)
    packed = artifact.pack(
        user_ids=[f"u{i:03d}" for i in range(n_users)],
        user_factors=rng.normal(size=(n_users, 8)).astype(np.float32),
        item_ids=[f"i{j:05d}" for j in range(n_items)],
        item_factors=rng.normal(size=(n_items, 8)).astype(np.float32),
        item_categories=[None] * n_items,
        popularity={"all": np.ones(n_items, np.float32)},
        bought_indptr=np.arange(n_users + 1) * 5,
        bought_items=bought,
        neighbours=(indptr, indices, weights),
    )
    path = save_packed(tmp_path, packed, neighbours=NeighboursSpec(weight=1.0, normalise=True))
    exact = FactorModel(artifact.load(path), ann=AnnConfig(mode="off"))
    # Every cluster probed: the index itself is exact, so only the candidate cut is tested.
    every = AnnConfig(mode="on", exact_below=0, nprobe=10_000)
    indexed = FactorModel(artifact.load(path), ann=every)
    assert indexed.index is not None
    now = datetime(2027, 1, 1, tzinfo=UTC)
    for customer in (f"u{i:03d}" for i in range(n_users)):
        row = exact.user_row(customer)
        assert row is not None
        history = customer_history(exact, customer, [], now)
        assert (
            history is not None
            and len(indices[np.isin(np.repeat(np.arange(n_items), per_item), history[0])]) > 1000
        )
        bought_rows = exact.bought_rows(row)
        want = exact.recommend(exact.user_vector(row), 10, exclude=bought_rows, history=history)
        got = indexed.recommend(indexed.user_vector(row), 10, exclude=bought_rows, history=history)
        assert got[0].tolist() == want[0].tolist()


@pytest.mark.slow
def test_the_service_scores_as_training_evaluated(trained: Path, complements_file: Path) -> None:  # noqa: F811
    """Score parity: the service's ranking of known customers equals training's scorer."""
    loaded = artifact.load(trained)
    assert loaded.manifest.neighbours is not None and loaded.manifest.neighbours.normalise
    # Training ships the component's dense block too; the service sums through it.
    assert "neighbours_dense" in loaded.arrays
    model = FactorModel(loaded)
    events, _ = load_events(complements_file)
    data = make_data(events, BLEND, SideInfo())
    fitted = fit_named("blend", data, BLEND, BLEND.selection.blend_weights)
    assert fitted.neighbours is not None
    customers = data.interactions.customer_ids.tolist()
    item_ids = data.interactions.item_ids.tolist()
    served_order = [model.item_row(i) for i in item_ids]
    now = datetime(2027, 1, 1, tzinfo=UTC)
    for row in (0, 7, 42, customers.index("probe")):
        expected = fitted.scores(np.array([row]))[0]
        user_row = model.user_row(customers[row])
        assert user_row is not None
        history = customer_history(model, customers[row], [], now)
        items, scores = model.recommend(model.user_vector(user_row), model.n_items, history=history)
        got = np.empty(model.n_items, np.float32)
        got[items] = scores
        assert np.allclose(got[served_order], expected, atol=1e-4)


@pytest.mark.slow
def test_the_index_path_keeps_the_components_items(trained: Path) -> None:
    exact = FactorModel(artifact.load(trained), ann=AnnConfig(mode="off"))
    indexed = FactorModel(artifact.load(trained), ann=AnnConfig(mode="on", exact_below=0))
    assert indexed.index is not None
    now = datetime(2027, 1, 1, tzinfo=UTC)
    for customer in ("c3", "c11", "probe"):
        row = exact.user_row(customer)
        assert row is not None
        history = customer_history(exact, customer, [], now)
        want = exact.recommend(exact.user_vector(row), 5, history=history)
        got = indexed.recommend(indexed.user_vector(row), 5, history=history)
        assert got[0].tolist() == want[0].tolist()
    # A filter that leaves fewer than k items: every allowed item, scored exactly.
    allowed = np.zeros(indexed.n_items, dtype=bool)
    allowed[:3] = True
    row = indexed.user_row("c3")
    assert row is not None
    history = customer_history(indexed, "c3", [], now)
    rows, _ = indexed.recommend(indexed.user_vector(row), 5, allowed=allowed, history=history)
    assert sorted(rows.tolist()) == [0, 1, 2]


@pytest.mark.slow
def test_new_events_reach_the_component_at_request_time(trained: Path) -> None:
    """A visitor unknown to the model who just bought s3 in store is shown w3 online."""
    model = FactorModel(artifact.load(trained))
    now = model.trained_until + timedelta(days=1)
    bought = Event(
        customer_id="visitor",
        item_id="s3",
        event_type="purchase",
        channel="store",
        timestamp=now - timedelta(minutes=5),
    )
    ranked = for_customer(
        model, None, Query(channel="web", k=3), Context(now=now, session=[bought])
    )
    assert not ranked.fallback
    assert "w3" in [i.item_id for i in ranked.items]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["lightfm", "als"])
def test_catalogue_items_without_events_are_exported_from_their_features(
    algorithm: str,
    complements_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """New items with features get vectors from them (LightFM's feature embeddings, ALS a map
    from the attributes to its factors); items without features are not exported."""
    lines = ["item_id,category,brand,price"]
    for prefix, category, n in (
        ("s", "store-things", 12),
        ("w", "web-things", 12),
        ("p", "staples", 10),
    ):
        lines += [f"{prefix}{j},{category},b{j % 3},{1 + j}" for j in range(n)]
    lines += ["new-w,web-things,b1,3", "bare,,,"]
    items = tmp_path / "items.csv"
    items.write_text("\n".join(lines) + "\n")
    config = TrainConfig(
        algorithm=algorithm,  # type: ignore[arg-type]
        models={"lightfm": {"components": 8, "epochs": 5}},
    )
    path = run(Inputs(events=[str(complements_file)], items=str(items)), tmp_path / "m", config)
    loaded = artifact.load(path)
    assert loaded.manifest.counts["cold_items"] == 1
    model = FactorModel(loaded)
    new = model.item_row("new-w")
    assert new is not None and model.item_row("bare") is None
    assert model.category_of(new) == "web-things"
    # Its vector comes from its features: not zero; it has sold nothing yet.
    assert np.abs(model.item_factors[new]).sum() > 0
    assert model.popularity[0, new] == 0
    if algorithm == "lightfm":  # its features' embeddings place it among the web items
        rows, _ = model.similar_items(new, 12)
        assert sum(model.item_id(int(r)).startswith("w") for r in rows) >= 6


def _matrix_data(matrix: sp.csr_matrix) -> Data:
    n_users, n_items = matrix.shape
    return Data(
        events=pa.table({"customer_id": pa.array([], pa.string())}),
        interactions=Interactions(
            matrix=matrix,
            customer_ids=np.array([f"u{i}" for i in range(n_users)], dtype=object),
            item_ids=np.array([f"i{j}" for j in range(n_items)], dtype=object),
        ),
        excluded=(matrix > 0).astype(np.float32).tocsr(),
        end=datetime(2026, 1, 1, tzinfo=UTC),
        weights=Weights(),
    )


def test_eases_default_l2_follows_the_scale_of_the_weights() -> None:
    """Weighting every event ten times as much leaves the default EASE's ranking unchanged;
    a fixed l2 would turn it into another model (the best l2 moves with the item counts)."""
    rng = np.random.default_rng(3)
    x = sp.random(60, 40, density=0.2, random_state=rng, format="csr", dtype=np.float32)
    exact = {"exact_items": 100}
    one, ten = (fit_ease(_matrix_data(m), exact) for m in (x, (x * 10).tocsr()))
    np.testing.assert_allclose(ten.user_factors, 10 * one.user_factors, rtol=1e-3, atol=1e-5)
    diagonal = np.asarray(x.multiply(x).sum(axis=0)).ravel()
    assert one.params["l2"] == pytest.approx(AUTO_L2_PER_MEAN_COUNT * diagonal.mean(), rel=1e-5)
    fixed = {**exact, "l2": 5.0}
    one, ten = (fit_ease(_matrix_data(m), fixed) for m in (x, (x * 10).tocsr()))
    assert not np.allclose(ten.user_factors, 10 * one.user_factors, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("fit", [fit_ease, fit_itemknn])
def test_exact_exports_give_way_to_low_rank_ones_for_many_customers(
    fit: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exact export's user vectors are dense over the catalogue: past the budget of customers
    x items (``EXACT_MAX_USER_ENTRIES``), a catalogue under ``exact_items`` is exported at the
    part's rank instead."""
    rng = np.random.default_rng(4)
    x = sp.random(60, 40, density=0.2, random_state=rng, format="csr", dtype=np.float32)
    params: dict[str, object] = {"exact_items": 100, "rank": 8}
    if fit is fit_ease:
        params["export"] = "factors"  # not its sparse component: the factors are the point here
    exact = fit(_matrix_data(x), params)  # type: ignore[operator]
    assert exact.user_factors.shape == (60, 40)
    monkeypatch.setattr("training.models.neighbours.EXACT_MAX_USER_ENTRIES", 60 * 40 - 1)
    reduced = fit(_matrix_data(x), params)  # type: ignore[operator]
    assert reduced.user_factors.shape == (60, 8)
    assert reduced.item_factors.shape == (40, 8)


@pytest.mark.parametrize("l2", [0, -1.0, "big"])
def test_an_ease_l2_that_is_not_positive_or_auto_is_refused(l2: object) -> None:
    x = sp.identity(4, dtype=np.float32, format="csr")
    with pytest.raises(ValueError, match="ease l2"):
        fit_ease(_matrix_data(x), {"l2": l2})


@pytest.mark.parametrize("compact", [True, False])
def test_the_component_sums_every_contribution_per_item(
    compact: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A history whose items reach the same items many times over, in no particular order: the
    # sums per item must be what a plain per-item accumulation gives, both when the component
    # reaches few items (summed in an array of them) and when it reaches many (grouped through a
    # scratch slot per item, whatever the scratch held).
    if not compact:
        monkeypatch.setattr("service.neighbours._COMPACT_TARGETS", 10)
    rng = np.random.default_rng(3)
    n_items, per_row = 6000, 40
    indptr = np.arange(0, n_items * per_row + 1, per_row, dtype=np.int64)
    # Half the contributions go to 20 items (many repeats), half to any of 3,000 others (most
    # once); the other 2,980 items are never reached.
    pool = rng.choice(n_items, 3020, replace=False)
    indices = pool[
        np.where(
            rng.random(n_items * per_row) < 0.5,
            rng.integers(0, 20, n_items * per_row),
            rng.integers(20, len(pool), n_items * per_row),
        )
    ].astype(np.int32)
    weights = rng.normal(size=n_items * per_row).astype(np.float32)
    arrays = {
        "neighbours_indptr": indptr,
        "neighbours_indices": indices,
        "neighbours_weights": weights,
    }
    component = Neighbours(arrays, NeighboursSpec(weight=1.5))
    assert (component._compact is not None) == compact
    component._scratch()[:] = rng.integers(0, 4800, n_items)  # leftovers of earlier requests
    history = rng.choice(n_items, 120, replace=False).astype(np.int64)
    values = rng.random(120) + 0.5
    expected: dict[int, float] = {}
    for row, value in zip(history.tolist(), values.tolist(), strict=True):
        for at in range(indptr[row], indptr[row + 1]):
            item = int(indices[at])
            expected[item] = expected.get(item, 0.0) + float(weights[at]) * value
    items, scores = component.scores(history, values)
    assert items.tolist() == sorted(expected)
    assert np.allclose(scores, [1.5 * expected[i] for i in sorted(expected)], atol=1e-5)


def _tangled_component(
    n_items: int, per_row: int, n_targets: int, seed: int
) -> dict[str, np.ndarray]:
    """A component whose rows repeat targets (duplicate pairs included) and skip some items."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, per_row, n_items)
    lengths[::7] = 0  # items that lend nothing
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    pool = rng.choice(n_items, n_targets, replace=False)
    indices = pool[rng.integers(0, n_targets, int(indptr[-1]))].astype(np.int32)
    weights = rng.normal(size=int(indptr[-1])).astype(np.float32)
    return {
        "neighbours_indptr": indptr,
        "neighbours_indices": indices,
        "neighbours_weights": weights,
    }


@pytest.mark.parametrize("chunk_rows", [None, 1, 7])
def test_the_dense_block_sums_as_the_stored_neighbours(
    chunk_rows: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole histories in one gather (the default chunk of a small block) or a few rows at a
    time: the same sums as the stored neighbours give."""
    if chunk_rows is not None:
        monkeypatch.setattr("service.neighbours._DENSE_CHUNK_BYTES", chunk_rows * 4 * 40)
    arrays = _tangled_component(n_items=900, per_row=60, n_targets=40, seed=5)
    block = dense_block(arrays)
    assert block["neighbours_dense"].shape == (len(block["neighbours_dense_sources"]), 40)
    sparse = Neighbours(arrays, NeighboursSpec(weight=2.0, normalise=True))
    dense = Neighbours({**arrays, **block}, NeighboursSpec(weight=2.0, normalise=True))
    assert chunk_rows is None or dense._chunk_rows == chunk_rows  # the history spans chunks

    def unused(*args: object) -> None:
        raise AssertionError("summed from the stored neighbours")

    monkeypatch.setattr(dense, "_sparse_sums", unused)
    rng = np.random.default_rng(6)
    for size in (1, 30, 300):
        history = rng.choice(900, size, replace=False).astype(np.int64)
        values = rng.random(size) + 0.5
        want_items, want = sparse.scores(history, values)
        items, got = dense.scores(history, values)
        assert items.tolist() == want_items.tolist()
        assert np.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_history_reaching_few_neighbours_per_row_is_summed_sparsely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 2,000 reachable items, each source lending to one: a dense row would be 2,000 entries for
    # one neighbour.
    n_items = 4000
    arrays = {
        "neighbours_indptr": np.arange(n_items + 1, dtype=np.int64),
        "neighbours_indices": (np.arange(n_items) % 2000).astype(np.int32),
        "neighbours_weights": np.ones(n_items, np.float32),
    }
    component = Neighbours({**arrays, **dense_block(arrays)}, NeighboursSpec())

    def unused(*args: object) -> None:
        raise AssertionError("summed through the dense block")

    monkeypatch.setattr(component, "_dense_sums", unused)
    items, scores = component.scores(np.array([5, 2005]), np.array([1.0, 2.0]))
    assert items.tolist() == [5] and scores.tolist() == [3.0]


def test_no_dense_block_beyond_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = _tangled_component(n_items=300, per_row=20, n_targets=50, seed=1)
    assert dense_block({}) == {}
    size = dense_block(arrays)["neighbours_dense"].nbytes
    monkeypatch.setattr("service.neighbours.DENSE_MAX_BYTES", size - 1)
    assert dense_block(arrays) == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("neighbours_dense_sources"), "go together"),
        (
            lambda a: a.update(neighbours_dense_sources=a["neighbours_dense_sources"][1:]),
            "every item",
        ),
        (lambda a: a.update(neighbours_dense=a["neighbours_dense"][:, 1:]), "sources x"),
        (
            lambda a: [
                a.pop(n) for n in ("neighbours_indptr", "neighbours_indices", "neighbours_weights")
            ],
            "without the neighbours",
        ),
    ],
)
def test_a_broken_dense_block_is_refused(change: object, message: str) -> None:
    arrays = _tangled_component(n_items=200, per_row=10, n_targets=30, seed=2)
    arrays.update(dense_block(arrays))
    change(arrays)  # type: ignore[operator]
    problem = check_neighbours(arrays, 200)
    assert problem is not None and message in problem


@pytest.mark.slow
def test_a_filtered_request_ranks_its_items_by_the_full_score(trained: Path) -> None:
    # The component's items outside the filter are dropped before rescoring; the answer must be
    # the filter's best items by factors plus component, with and without the index.
    now = datetime(2027, 1, 1, tzinfo=UTC)
    for ann in (AnnConfig(mode="off"), AnnConfig(mode="on", exact_below=0)):
        model = FactorModel(artifact.load(trained), ann=ann)
        allowed = np.zeros(model.n_items, dtype=bool)
        allowed[::2] = True
        for customer in ("c3", "c11", "probe"):
            row = model.user_row(customer)
            assert row is not None
            history = customer_history(model, customer, [], now)
            vector = model.user_vector(row)
            every, _ = model.recommend(vector, model.n_items, history=history)
            want = [r for r in every.tolist() if allowed[r]][:5]
            got, _ = model.recommend(vector, 5, allowed=allowed, history=history)
            assert got.tolist() == want
