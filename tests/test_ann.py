"""The approximate index: recall against exact scoring, full lists under filters, the artifact."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from service import ann, artifact, ranking
from service.errors import ArtifactError
from service.ranking import FactorModel
from service.topk import top_k
from tests.builders import clustered_artifact

N_ITEMS = 4000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clustered_artifact(tmp_path_factory.mktemp("models"), N_ITEMS, with_index=True).parent


@pytest.fixture(scope="module")
def ann_model(model_dir: Path) -> FactorModel:
    return FactorModel(artifact.load(artifact.resolve(model_dir)), ann=ann.AnnConfig(mode="on"))


@pytest.fixture(scope="module")
def exact_model(model_dir: Path) -> FactorModel:
    return FactorModel(artifact.load(artifact.resolve(model_dir)), ann=ann.AnnConfig(mode="off"))


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return len(set(found.tolist()) & set(truth.tolist())) / len(truth)


def test_the_index_finds_what_exact_scoring_finds(
    ann_model: FactorModel, exact_model: FactorModel
) -> None:
    assert ann_model.index is not None
    assert exact_model.index is None
    users = [ann_model.user_vector(u) for u in range(200)]
    personal = [
        recall(ann_model.recommend(u, 10)[0], exact_model.recommend(u, 10)[0]) for u in users
    ]
    similar = [
        recall(ann_model.similar_items(i, 10)[0], exact_model.similar_items(i, 10)[0])
        for i in range(0, N_ITEMS, 40)
    ]
    assert np.mean(personal) >= 0.95
    assert np.mean(similar) >= 0.95


def test_the_index_scores_like_exact_scoring(ann_model: FactorModel) -> None:
    rows, scores = ann_model.similar_items(7, 5)
    assert 7 not in rows.tolist()
    expected = ann_model.item_factors[rows] @ ann_model.item_factors[7]
    expected /= ann_model.item_norms[rows] * ann_model.item_norms[7]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    assert list(scores) == sorted(scores, reverse=True)


def test_recommendations_carry_their_rows_scores(ann_model: FactorModel) -> None:
    """The unfiltered search looks up only its best candidates' rows: each score is its row's."""
    for u in range(0, 200, 20):
        user = ann_model.user_vector(u)
        bought = ann_model.bought_rows(u)
        rows, scores = ann_model.recommend(user, 10, exclude=bought)
        np.testing.assert_allclose(scores, ann_model.item_factors[rows] @ user, rtol=1e-5)
        assert list(scores) == sorted(scores, reverse=True)
        assert not set(rows.tolist()) & set(bought.tolist())


def test_filters_still_leave_k_items(ann_model: FactorModel, exact_model: FactorModel) -> None:
    user = ann_model.user_vector(3)
    best = exact_model.recommend(user, 50)[0]
    # Excluding the 50 best items: the index must look further than its first probe.
    rows, _ = ann_model.recommend(user, 10, exclude=best)
    assert len(rows) == 10
    assert not set(rows.tolist()) & set(best.tolist())
    # A mask that keeps 0.5% of the catalogue, scattered: answered exactly over those items.
    allowed = np.zeros(N_ITEMS, dtype=bool)
    allowed[::200] = True
    rows, _ = ann_model.recommend(user, 10, allowed=allowed)
    assert rows.tolist() == exact_model.recommend(user, 10, allowed=allowed)[0].tolist()
    # Fewer allowed items than k: all of them, never a disallowed one.
    allowed = np.zeros(N_ITEMS, dtype=bool)
    allowed[[5, 900, 3000]] = True
    rows, _ = ann_model.similar_items(5, 10, allowed=allowed)
    assert sorted(rows.tolist()) == [900, 3000]


def test_a_broad_filter_falls_back_to_exact_scoring_when_the_index_runs_dry() -> None:
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(500, 8)).astype(np.float32)
    index = ann.IvfIndex(ann.build_index(factors, nlist=50), nprobe=1, exact_below=0)
    query = factors[0]
    allowed = np.ones(500, dtype=bool)
    allowed[index.rows[: index.offsets[-2]]] = False  # only the last cluster is allowed
    found = index.search(query, 5, allowed=allowed)
    last = set(index.rows[index.offsets[-2] :].tolist())
    assert found is None or set(found[0].tolist()) <= last


@pytest.mark.parametrize(
    ("mode", "min_items", "n_items", "expected"),
    [
        ("auto", 30_000, 4000, False),
        ("auto", 1000, 4000, True),
        ("on", 30_000, 4000, True),
        ("off", 1000, 4000, False),
        ("on", 1000, 1, False),
    ],
)
def test_the_switch_is_by_size_and_configurable(
    mode: str, min_items: int, n_items: int, expected: bool
) -> None:
    config = ann.AnnConfig(mode=mode, min_items=min_items)  # type: ignore[arg-type]
    assert config.wanted(n_items) is expected


def test_an_artifact_without_an_index_still_loads_and_scores(tmp_path: Path) -> None:
    path = clustered_artifact(tmp_path, 1000, with_index=False)
    loaded = artifact.load(path)
    assert "ann_centroids" not in loaded.manifest.files
    exact = FactorModel(loaded)  # auto: 1000 items is below the threshold
    assert exact.index is None
    built = FactorModel(loaded, ann=ann.AnnConfig(mode="on"))  # built at load
    assert built.index is not None
    user = exact.user_vector(0)
    assert recall(built.recommend(user, 10)[0], exact.recommend(user, 10)[0]) >= 0.8
    assert len(exact.recommend(user, 10)[0]) == 10


def test_the_index_is_checksummed_like_every_array(tmp_path: Path) -> None:
    path = clustered_artifact(tmp_path, 1000, with_index=True)
    assert "ann_factors" in artifact.load(path).manifest.files
    data = bytearray((path / "ann_factors.npy").read_bytes())
    data[-5] ^= 0xFF
    (path / "ann_factors.npy").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"ann_factors\.npy: checksum mismatch"):
        artifact.load(path)


def test_an_index_of_another_model_is_refused(tmp_path: Path) -> None:
    path = clustered_artifact(tmp_path, 1000, with_index=True)
    arrays = dict(artifact.load(path).arrays)
    arrays.update(ann.build_index(arrays["item_factors"][::-1].copy()))
    manifest = artifact.load(path).manifest
    manifest = artifact.Manifest(**{**_fields(manifest), "model_version": "v2"})
    with pytest.raises(ArtifactError, match="index belongs to another model"):
        artifact.save(tmp_path, manifest, arrays)
    del arrays["ann_rows"]
    with pytest.raises(ArtifactError, match="ANN index is incomplete: ann_rows missing"):
        artifact.save(tmp_path, manifest, arrays)


def _fields(manifest: artifact.Manifest) -> dict[str, object]:
    return {f: getattr(manifest, f) for f in manifest.__struct_fields__}


def test_popular_items_come_from_the_cached_head_and_beyond_it(exact_model: FactorModel) -> None:
    scores = np.array(exact_model.popularity[0], dtype=np.float32)
    expected = top_k(scores.copy(), 10)[0]
    assert exact_model.popular("all", 10)[0].tolist() == expected.tolist()
    # Exclude the whole cached head: the answer comes from the full ranking, still k items.
    head = top_k(scores.copy(), 1000)[0]
    rows, _ = exact_model.popular("all", 10, exclude=head)
    assert rows.tolist() == top_k(scores.copy(), 10, exclude=head)[0].tolist()
    allowed = np.zeros(N_ITEMS, dtype=bool)
    allowed[head[-3:]] = True
    assert sorted(exact_model.popular("all", 10, allowed=allowed)[0].tolist()) == sorted(
        head[-3:].tolist()
    )


@pytest.mark.parametrize("channel", ["all", "web"])
def test_popular_items_within_a_category_come_from_its_own_rows(
    model_dir: Path, channel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Beyond the cached head, a category's most popular items are ranked among its own rows,
    # never by a pass over the catalogue (which would be guarded off the event loop).
    model = FactorModel(artifact.load(artifact.resolve(model_dir)), ann=ann.AnnConfig(mode="on"))
    mask = model.category_mask("cat3")
    assert mask is not None and model._remembered(mask) is not None
    row = model._channel_rows.get(channel, 0)
    scores = model._popular_scores(row)
    head = top_k(scores.copy(), 1000)[0]
    exclude = head[mask[head]]  # every item of the category in the head
    expected = top_k(scores.copy(), 10, exclude=exclude, allowed=mask)
    model.popular(channel, 1)  # the channel's head, scored once per model (guarded then)
    guarded: list[int] = []
    monkeypatch.setattr("service.ranking.guard", guarded.append)
    rows, found = model.popular(channel, 10, exclude=exclude, allowed=mask)
    assert rows.tolist() == expected[0].tolist()
    np.testing.assert_allclose(found, expected[1])
    assert mask[rows].all() and not np.isin(rows, exclude).any()
    assert guarded == []  # answered from the category's rows
    model.popular(channel, 10, exclude=exclude, allowed=mask.copy())  # a mask of its own: a scan
    assert guarded == [model.n_items]


def test_inner_product_probes_lean_towards_a_spread_clusters_best_member() -> None:
    # Cluster 0: tight around (1, 0). Cluster 1: centred on 0 but spread to radius 10, holding the
    # item that scores best for the query (1, 0). The centroid alone probes cluster 0 first.
    tight = np.array([[1.0, 0.01], [1.0, -0.01], [0.99, 0.0]], dtype=np.float32)
    spread = np.array([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0], [0.0, -10.0]], dtype=np.float32)
    factors = np.concatenate([tight, spread])
    arrays = {
        "ann_centroids": np.array([tight.mean(axis=0), spread.mean(axis=0)], dtype=np.float32),
        "ann_offsets": np.array([0, 3, 7], dtype=np.int64),
        "ann_rows": np.arange(7, dtype=np.int32),
        "ann_factors": factors,
    }
    index = ann.IvfIndex(arrays, nprobe=1)
    tight_radius = float(np.linalg.norm(tight - tight.mean(axis=0), axis=1).max())
    assert index.radii.tolist() == pytest.approx([tight_radius, 10.0], rel=1e-5)
    rows, scores = index.search(np.array([1.0, 0.0], dtype=np.float32), 1)  # type: ignore[misc]
    assert rows.tolist() == [3] and scores.tolist() == [10.0]


def test_similar_items_are_exact_with_an_index(tmp_path: Path) -> None:
    # Blurred topics, where probing the index for cosine neighbours misses many of them.
    path = clustered_artifact(tmp_path, N_ITEMS, with_index=True, spread=3.0)
    model = FactorModel(artifact.load(path), ann=ann.AnnConfig(mode="on"))
    assert model.index is not None
    unit = model.item_factors / model.item_norms[:, None]
    for item in range(0, N_ITEMS, 97):
        cosine = unit @ unit[item]
        cosine[item] = -np.inf
        rows, scores = model.similar_items(item, 10)
        assert set(rows.tolist()) == set(np.argsort(-cosine)[:10].tolist())
        np.testing.assert_allclose(scores, np.sort(cosine)[::-1][:10], rtol=1e-5)


def test_similar_items_under_a_filter_that_empties_the_kept_list(ann_model: FactorModel) -> None:
    kept, _ = ann_model.similar_items(11, 64)
    allowed = np.ones(N_ITEMS, dtype=bool)
    allowed[kept] = False  # none of the item's 64 best may be shown
    rows, _ = ann_model.similar_items(11, 10, allowed=allowed)
    assert len(rows) == 10
    assert allowed[rows].all() and 11 not in rows.tolist()
    excluded, _ = ann_model.similar_items(11, 10, exclude=kept[:60])
    assert set(excluded.tolist()).isdisjoint(kept[:60].tolist()) and len(excluded) == 10


@pytest.mark.parametrize(
    ("n_allowed", "n_items", "exact"),
    [
        (10_000, 10_000_000, True),  # up to exact_below: always
        (20_001, 100_000, False),  # 20% of the catalogue: the index finds enough of them
        (20_053, 1_000_000, True),  # a 2% category: the probes would starve
        (50_000, 1_000_000, True),
        (50_001, 10_000_000, False),  # selective, but more than SELECTIVE_MAX to score
    ],
)
def test_which_filters_are_scored_exactly(n_allowed: int, n_items: int, exact: bool) -> None:
    index = ann.IvfIndex(ann.build_index(np.eye(4, dtype=np.float32), nlist=2))
    assert index.exact_for(n_allowed, n_items) is exact


def test_a_selective_category_is_scored_exactly_over_its_kept_rows(model_dir: Path) -> None:
    """A category the index's probes would starve on is answered exactly, from rows kept with
    the category's mask (no pass over the catalogue per request)."""
    # One probe would miss most of a scattered filter. The category within the stock below keeps
    # under 200 items, so it is scored exactly (larger ones are searched in their clusters).
    config = ann.AnnConfig(mode="on", exact_below=200, nprobe=1)
    model = FactorModel(artifact.load(artifact.resolve(model_dir)), ann=config)
    exact = FactorModel(artifact.load(artifact.resolve(model_dir)), ann=ann.AnnConfig(mode="off"))
    mask = model.category_mask("cat3")
    assert mask is not None and mask.sum() > 10
    kept = model.allowed_rows(mask)
    assert model.allowed_rows(mask) is kept
    assert sorted(kept.tolist()) == np.flatnonzero(mask).tolist()
    # With an index, kept in its order with their positions in its copy of the factors.
    items = model._remembered(mask)
    assert items is not None and items.at is not None
    assert np.array_equal(model.index.factors[items.at], model.item_factors[items.rows])  # type: ignore[union-attr]
    other = mask.copy()  # not the model's own mask: computed, not kept
    assert model.allowed_rows(other) is not kept
    assert model.allowed_rows(other).tolist() == sorted(kept.tolist())
    narrow = mask & (np.arange(N_ITEMS) % 3 == 0)  # under 5% of the catalogue
    assert narrow.sum() <= ann.SELECTIVE_SHARE * N_ITEMS
    # The category within a stock: the same items, remembered with their index positions.
    within = model.category_mask("cat3", np.arange(N_ITEMS) % 3 == 0)
    assert within is not None and np.array_equal(within, narrow)
    for u in range(0, 300, 30):
        user = model.user_vector(u)
        bought = exact.recommend(user, 3, allowed=narrow)[0]
        expected = exact.recommend(user, 10, allowed=narrow, exclude=bought)
        for allowed in (narrow, within):
            rows, scores = model.recommend(user, 10, allowed=allowed, exclude=bought)
            assert rows.tolist() == expected[0].tolist()
            np.testing.assert_allclose(scores, expected[1], rtol=1e-5)


def test_a_large_category_is_searched_in_the_clusters_that_hold_it(model_dir: Path) -> None:
    """A selective category (at most 5% of the catalogue) above ``exact_below`` items is
    searched among its own items in the best clusters holding them (a category's items are
    alike, so they gather in few clusters): nearly what exact scoring finds."""
    config = ann.AnnConfig(mode="on", exact_below=50, nprobe=2)
    model = FactorModel(artifact.load(artifact.resolve(model_dir)), ann=config)
    exact = FactorModel(artifact.load(artifact.resolve(model_dir)), ann=ann.AnnConfig(mode="off"))
    index = model.index
    assert index is not None
    in_stock = np.arange(N_ITEMS) % 3 == 0  # a tenth of the catalogue per category: a third
    shares = []
    for u in range(0, 300, 3):
        user = model.user_vector(u)
        mask = model.category_mask(f"cat{u % 10}", in_stock)
        items = model._remembered(mask)  # type: ignore[arg-type]
        assert mask is not None and items is not None and items.at is not None
        assert 50 < len(items.rows) <= ann.SELECTIVE_SHARE * N_ITEMS
        bought = exact.recommend(user, 2, allowed=mask)[0]
        rows, scores = model.recommend(user, 10, allowed=mask, exclude=bought)
        assert len(rows) == 10 and mask[rows].all()
        assert not set(rows.tolist()) & set(bought.tolist())
        np.testing.assert_allclose(scores, model.item_factors[rows] @ user, rtol=1e-5)
        assert (np.diff(scores) <= 0).all()
        found = index.search_subset(user, 10, items.at, items.rows, items.bounds, exclude=bought)
        assert found is not None and found[0].tolist() == rows.tolist()  # not the exact path
        shares.append(recall(rows, exact.recommend(user, 10, allowed=mask, exclude=bought)[0]))
    assert np.mean(shares) >= 0.95
    # Each category's cluster bounds are kept when it may be searched, and only then.
    assert all(items.bounds is not None for items in model._category_items.values())
    small = FactorModel(model.artifact, ann=ann.AnnConfig(mode="on"))  # exact below 10,000
    assert all(items.bounds is None for items in small._category_items.values())


def test_an_index_built_with_groups_keeps_its_clusters_and_stores_each_group_in_runs() -> None:
    """Groups (categories) spread over every cluster: grouping reorders items within their
    clusters only, each group's share of a cluster becomes one run, and a search among a group
    scores its runs as slices with the answers of the gathered rows."""
    rng = np.random.default_rng(3)
    factors = rng.normal(size=(3000, 8)).astype(np.float32)
    groups = rng.integers(0, 6, 3000).astype(np.int32)
    plain = ann.IvfIndex(ann.build_index(factors, nlist=30), exact_below=0)
    grouped_arrays = ann.build_index(factors, nlist=30, groups=groups)
    grouped = ann.IvfIndex(grouped_arrays, nprobe=3, exact_below=0)
    assert np.array_equal(grouped.offsets, plain.offsets)
    assert np.array_equal(grouped_arrays["ann_factors"], factors[grouped.rows])
    for c in range(30):
        members = slice(grouped.offsets[c], grouped.offsets[c + 1])
        assert sorted(grouped.rows[members].tolist()) == sorted(plain.rows[members].tolist())
    for g in range(6):
        at = np.flatnonzero(groups[plain.rows] == g).astype(np.int32)
        assert not plain.in_runs(at, plain.subset_bounds(at))  # interleaved without groups
        at = np.flatnonzero(groups[grouped.rows] == g).astype(np.int32)
        rows = np.asarray(grouped.rows[at], dtype=np.int32)
        bounds = grouped.subset_bounds(at)
        assert grouped.in_runs(at, bounds)
        for query in rng.normal(size=(5, 8)).astype(np.float32):
            sliced = grouped.search_subset(query, 10, at, rows, bounds, runs=True)
            gathered = grouped.search_subset(query, 10, at, rows, bounds)
            assert sliced is not None and gathered is not None
            assert sliced[0].tolist() == gathered[0].tolist()
            np.testing.assert_allclose(sliced[1], gathered[1], rtol=1e-6)
            assert (groups[sliced[0]] == g).all()


def test_a_categorys_items_are_runs_of_the_index_searched_as_slices(model_dir: Path) -> None:
    """A model's index, built with the items' categories as groups (as training builds it):
    every category is kept as runs, and searched as slices with the gathered rows' answers."""
    config = ann.AnnConfig(mode="on", exact_below=50, nprobe=2)
    model = FactorModel(artifact.load(artifact.resolve(model_dir)), ann=config)
    index = model.index
    assert index is not None
    for start, end in zip(index.offsets[:-1], index.offsets[1:], strict=True):
        codes = model.item_category[index.rows[start:end]]
        assert (np.diff(codes) >= 0).all()
    assert all(items.runs for items in model._category_items.values())
    for u in range(0, 300, 7):
        user = model.user_vector(u)
        items = model._category_items[u % 10]
        bought = np.asarray(items.rows[:3], dtype=np.int64)
        args = (user, 10, items.at, items.rows, items.bounds)
        sliced = index.search_subset(*args, exclude=bought, runs=True)
        gathered = index.search_subset(*args, exclude=bought, runs=False)
        assert sliced is not None and gathered is not None
        assert sliced[0].tolist() == gathered[0].tolist()
        np.testing.assert_allclose(sliced[1], gathered[1], rtol=1e-6)


def test_similar_items_within_a_large_category_are_searched_by_cosine(model_dir: Path) -> None:
    """Items like one of another category, shown within a category: the kept list holds none
    of them, so the category is searched by cosine among its own items."""
    # Two clusters' worth of items is enough for a cosine search here: fewer than the category's
    # third in stock (about 130), so the search scores part of it.
    config = ann.AnnConfig(mode="on", exact_below=50, nprobe_similar=2)
    model = FactorModel(artifact.load(artifact.resolve(model_dir)), ann=config)
    index = model.index
    assert index is not None
    mask = model.category_mask("cat0", np.arange(N_ITEMS) % 3 == 0)
    items = model._remembered(mask)  # type: ignore[arg-type]
    assert mask is not None and items is not None and items.at is not None
    unit = model.item_factors / model.item_norms[:, None]
    shares = []
    for item in np.flatnonzero(model.item_category != model.category_codes["cat0"])[:60:3]:
        item = int(item)
        rows, scores = model.similar_items(item, 10, allowed=mask)
        assert len(rows) == 10 and mask[rows].all() and item not in rows.tolist()
        np.testing.assert_allclose(scores, unit[rows] @ unit[item], rtol=1e-4, atol=1e-6)
        own = np.array([item])
        found = index.search_subset(
            unit[item], 10, items.at, items.rows, exclude=own, norms=model.item_norms
        )
        assert found is not None and found[0].tolist() == rows.tolist()  # not the exact path
        truth = np.flatnonzero(mask)[np.argsort(-(unit[mask] @ unit[item]), kind="stable")[:10]]
        shares.append(recall(rows, truth))
    assert np.mean(shares) >= 0.95


def test_a_category_spread_thinly_over_the_clusters_is_left_to_exact_scoring(
    ann_model: FactorModel,
) -> None:
    index = ann_model.index
    assert index is not None
    # Every tenth item in the index's order: about a tenth of each cluster.
    at = np.arange(0, N_ITEMS, 10, dtype=np.int32)
    rows = np.asarray(index.rows[at], dtype=np.int32)
    user = ann_model.user_vector(0)
    assert index.search_subset(user, 10, at, rows) is None
    # One that fills its clusters is searched; bounds found or given agree.
    at = np.arange(0, int(index.offsets[index.nlist // 2]), dtype=np.int32)
    rows = np.asarray(index.rows[at], dtype=np.int32)
    bounds, half = index.subset_bounds(at), index.nlist // 2
    assert np.array_equal(np.diff(bounds)[:half], np.diff(index.offsets)[:half])
    assert not np.diff(bounds)[half:].any()
    found = index.search_subset(user, 10, at, rows)
    assert found is not None
    assert found[0].tolist() == index.search_subset(user, 10, at, rows, bounds)[0].tolist()  # type: ignore[index]
    assert set(found[0].tolist()) <= set(rows.tolist())


def test_a_category_within_the_stock_is_built_from_the_categorys_rows(
    ann_model: FactorModel,
) -> None:
    """Category pages filtered by stock: the mask comes from the category's kept rows, its rows
    are remembered for exact scoring, and forgotten with the mask."""
    category = ann_model.category_mask("cat3")
    assert category is not None
    available = np.random.default_rng(1).random(N_ITEMS) < 0.7
    within = ann_model.category_mask("cat3", available)
    assert within is not None
    assert np.array_equal(within, category & available)
    assert ann_model.allowed_count(within) == int((category & available).sum())
    rows = ann_model.allowed_rows(within)
    assert sorted(rows.tolist()) == np.flatnonzero(category & available).tolist()
    items = ann_model._remembered(within)
    assert items is not None and items.at is not None
    assert np.array_equal(ann_model.index.factors[items.at], ann_model.item_factors[rows])  # type: ignore[union-attr]
    remembered = len(ann_model._mask_items)
    del within
    assert len(ann_model._mask_items) == remembered - 1
    assert ann_model.category_mask("no such category", available) is None


@pytest.mark.parametrize("n_rows", [0, 1, 30, 1024, 1025, 5000])
@pytest.mark.parametrize("n_others", [0, 1, 12, 330])
def test_among_agrees_with_isin_whichever_way_it_takes(n_rows: int, n_others: int) -> None:
    # Binary search up to 1,024 rows, a table above; repeats and misses on both sides.
    rng = np.random.default_rng(n_rows * 1000 + n_others)
    rows = rng.integers(0, 3000, n_rows).astype(np.int64)
    others = rng.integers(0, 3000, n_others).astype(np.int64)
    found = ann.among(rows, others)
    assert found.dtype == bool
    assert np.array_equal(found, np.isin(rows, others))


def _exact_best(items: np.ndarray, query: np.ndarray, bought: np.ndarray) -> set[int]:
    scores = items @ query
    scores[bought] = -np.inf
    return set(np.argsort(-scores, kind="stable")[:10].tolist())


def _recall_at(
    index: ann.IvfIndex, items: np.ndarray, users: np.ndarray, bought: list[np.ndarray], n: int
) -> float:
    index.nprobe = n
    shares = []
    for query, rows in zip(users, bought, strict=True):
        found = index.search(query, 10, exclude=rows if len(rows) else None)
        shares.append(len(_exact_best(items, query, rows) & set(found[0].tolist())) / 10)
    return float(np.mean(shares))


def _blurred_model(seed: int, n_items: int, purchases: int) -> dict[str, np.ndarray]:
    """Factors of 30 blurred topics; each customer bought ``purchases`` items of what it likes
    best (the items the service leaves out)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, 16)).astype(np.float32)
    noise = 1.5 * rng.normal(size=(n_items, 16))
    items = (centres[rng.integers(0, 30, n_items)] + noise).astype(np.float32)
    users = rng.normal(size=(400, 16)).astype(np.float32)
    best = np.argsort(-(users @ items.T), axis=1)[:, : purchases * 2]
    bought = np.sort(best[:, ::2], axis=1).astype(np.int32)  # every other one of its best
    indptr = np.arange(401, dtype=np.int64) * purchases
    return {
        "item_factors": items,
        "user_factors": users,
        "bought_indptr": indptr,
        "bought_items": bought.ravel(),
    }


@pytest.mark.parametrize(("target", "purchases"), [(0.6, 0), (0.9, 0), (0.99, 0), (0.9, 40)])
def test_calibration_finds_the_fewest_probes_that_reach_the_recall_target(
    target: float, purchases: int
) -> None:
    model = _blurred_model(3, 6000, purchases)
    items, users, indptr = model["item_factors"], model["user_factors"], model["bought_indptr"]
    arrays = ann.build_index(items, nlist=150)
    spec = ann.calibrate(arrays, model, target=target, sample=200, seed=1)
    index = ann.IvfIndex(arrays, lean=spec.lean)
    picked = np.random.default_rng(1).choice(400, size=200, replace=False)
    bought = [model["bought_items"][indptr[u] : indptr[u + 1]].astype(np.int64) for u in picked]
    # What it reports is what a search at that many probes finds, checked independently (up to
    # an item or two of the 2,000 whose score float32 rounding puts either side of the 10th).
    found = _recall_at(index, items, users[picked], bought, spec.nprobe)
    assert spec.recall_at_10 == pytest.approx(found, abs=0.001)
    assert spec.recall_at_10 >= target
    assert spec.sample == 200 and spec.recall_target == target
    # The step below it misses the target: fewer probes would not do.
    steps = [n for n in (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128) if n < spec.nprobe]
    if steps:
        assert _recall_at(index, items, users[picked], bought, steps[-1]) < target
    assert 1 <= spec.nprobe_similar <= index.nlist and spec.recall_at_10_similar >= target


def _two_spreads(seed: int, n_items: int = 6000) -> dict[str, np.ndarray]:
    """Factors of 30 topics, half of them tight and half spread wide, as a blend's columns of
    several models are: the best items may lie far from a wide cluster's centre."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 30, n_items)
    spread = np.where(topic % 2 == 0, 0.3, 1.5)[:, None]
    items = rng.normal(size=(30, 16))[topic] + spread * rng.normal(size=(n_items, 16))
    return {
        "item_factors": items.astype(np.float32),
        "user_factors": rng.normal(size=(400, 16)).astype(np.float32),
        "bought_indptr": np.zeros(401, dtype=np.int64),
        "bought_items": np.zeros(0, dtype=np.int32),
    }


def test_calibration_keeps_the_lean_that_needs_the_fewest_probes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leaned_further = 0
    for seed in (1, 2, 3):
        model = _two_spreads(seed)
        arrays = ann.build_index(model["item_factors"], nlist=150)
        spec = ann.calibrate(arrays, model, target=0.95, sample=200, seed=1)
        alone = {}
        for lean in ann.LEANS:
            with monkeypatch.context() as patched:
                patched.setattr(ann, "LEANS", (lean,))
                alone[lean] = ann.calibrate(arrays, model, target=0.95, sample=200, seed=1)
        fewest = min(s.nprobe for s in alone.values())
        first = next(lean for lean, s in alone.items() if s.nprobe == fewest)
        assert (spec.nprobe, spec.lean) == (fewest, first)
        assert spec.recall_at_10 == alone[first].recall_at_10 >= 0.95
        leaned_further += spec.nprobe < alone[ann.RADIUS_WEIGHT].nprobe
        # What it reports is what a search leaning so finds.
        index = ann.IvfIndex(arrays, lean=spec.lean)
        picked = np.random.default_rng(1).choice(400, size=200, replace=False)
        nothing = [np.zeros(0, dtype=np.int64)] * 200
        users = model["user_factors"][picked]
        found = _recall_at(index, model["item_factors"], users, nothing, spec.nprobe)
        assert spec.recall_at_10 == pytest.approx(found, abs=0.001)
    assert leaned_further  # one of these needs fewer probes leaning past the default


def test_customers_who_bought_their_best_items_need_more_probes() -> None:
    fresh, loyal = _blurred_model(5, 6000, 0), _blurred_model(5, 6000, 60)
    arrays = ann.build_index(fresh["item_factors"], nlist=150)
    assert (
        ann.calibrate(arrays, fresh, target=0.98).nprobe
        < ann.calibrate(arrays, loyal, target=0.98).nprobe
    )


def test_a_harder_target_probes_more_clusters() -> None:
    rng = np.random.default_rng(4)
    model = _blurred_model(4, 5000, 0)
    model["item_factors"] = rng.normal(size=(5000, 16)).astype(np.float32)  # no clusters
    arrays = ann.build_index(model["item_factors"], nlist=140)
    easy = ann.calibrate(arrays, model, target=0.5)
    hard = ann.calibrate(arrays, model, target=0.99)
    assert easy.nprobe < hard.nprobe <= 140
    assert hard.recall_at_10 >= 0.99
    # Every item found: at most all clusters, which is exact.
    exact = ann.calibrate(arrays, model, target=1.0)
    assert hard.nprobe <= exact.nprobe <= 140 and exact.recall_at_10 == 1.0


def test_the_service_probes_as_the_model_was_calibrated_unless_told_otherwise(
    model_dir: Path,
) -> None:
    loaded = artifact.load(artifact.resolve(model_dir))
    spec = loaded.manifest.ann
    assert spec is not None and spec.recall_at_10 >= ann.RECALL_TARGET
    calibrated = FactorModel(loaded, ann=ann.AnnConfig(mode="on"))
    assert calibrated.index is not None
    assert (calibrated.index.nprobe, calibrated.index.nprobe_similar, calibrated.index.lean) == (
        spec.nprobe,
        spec.nprobe_similar,
        spec.lean,
    )
    told = FactorModel(loaded, ann=ann.AnnConfig(mode="on", nprobe=40, nprobe_similar=3))
    assert told.index is not None
    assert (told.index.nprobe, told.index.nprobe_similar, told.index.lean) == (40, 3, spec.lean)


def test_an_index_calibrated_before_leans_were_calibrated_leans_the_old_default(
    tmp_path: Path,
) -> None:
    path = clustered_artifact(tmp_path, 1000, with_index=True)
    manifest = msgspec.json.decode((path / "manifest.json").read_bytes())
    assert manifest["ann"].pop("lean") in ann.LEANS
    (path / "manifest.json").write_bytes(msgspec.json.encode(manifest))
    model = FactorModel(artifact.load(path), ann=ann.AnnConfig(mode="on"))
    assert model.index is not None and model.index.lean == ann.RADIUS_WEIGHT


def test_an_index_without_calibration_probes_the_defaults(tmp_path: Path) -> None:
    path = clustered_artifact(tmp_path, 1000, with_index=True)
    loaded = artifact.load(path)
    manifest = artifact.Manifest(**{**_fields(loaded.manifest), "model_version": "v2", "ann": None})
    model = FactorModel(artifact.load(artifact.save(tmp_path, manifest, dict(loaded.arrays))))
    model = FactorModel(model.artifact, ann=ann.AnnConfig(mode="on"))
    assert model.index is not None
    assert (model.index.nprobe, model.index.nprobe_similar) == (
        min(ann.DEFAULT_NPROBE, model.index.nlist),
        ann.DEFAULT_NPROBE_SIMILAR,
    )


def test_a_calibration_without_its_index_is_refused(tmp_path: Path) -> None:
    path = clustered_artifact(tmp_path, 1000, with_index=True)
    loaded = artifact.load(path)
    arrays = {k: v for k, v in loaded.arrays.items() if not k.startswith("ann_")}
    manifest = artifact.Manifest(**{**_fields(loaded.manifest), "model_version": "v2"})
    with pytest.raises(ArtifactError, match="calibrates an index the arrays do not hold"):
        artifact.save(tmp_path, manifest, arrays)


def test_calibration_does_not_depend_on_the_scale_of_the_scores() -> None:
    """ALS scores can be a few thousandths: near misses must not count as ties found."""
    model = _blurred_model(6, 4000, 0)
    tiny = {**model, "item_factors": model["item_factors"] * np.float32(1e-3)}
    tiny["user_factors"] = model["user_factors"] * np.float32(1e-3)
    arrays = ann.build_index(model["item_factors"], nlist=120)
    tiny_arrays = ann.build_index(tiny["item_factors"], nlist=120)
    assert np.array_equal(arrays["ann_rows"], tiny_arrays["ann_rows"])  # the same clusters
    spec = ann.calibrate(arrays, model, target=0.95)
    scaled = ann.calibrate(tiny_arrays, tiny, target=0.95)
    assert scaled.nprobe == spec.nprobe
    assert scaled.recall_at_10 == pytest.approx(spec.recall_at_10, abs=0.002)


def test_a_model_without_customer_vectors_keeps_the_default_probes() -> None:
    model = _blurred_model(7, 3000, 0)
    model["user_factors"] = np.zeros_like(model["user_factors"])
    spec = ann.calibrate(ann.build_index(model["item_factors"], nlist=100), model)
    assert (spec.nprobe, spec.sample, spec.recall_at_10) == (ann.DEFAULT_NPROBE, 0, 0.0)
    assert spec.recall_at_10_similar >= ann.RECALL_TARGET  # the items still calibrate


def test_cosine_searches_read_the_norms_kept_in_the_index_order_and_answer_the_same() -> None:
    rng = np.random.default_rng(7)
    factors = rng.normal(size=(3000, 16)).astype(np.float32)
    factors *= rng.uniform(0.1, 3.0, size=(3000, 1)).astype(np.float32)  # norms that matter
    norms = np.linalg.norm(factors, axis=1).astype(np.float32)
    arrays = ann.build_index(factors, nlist=40)
    kept = ann.IvfIndex(arrays, nprobe_similar=6, item_norms=norms)
    plain = ann.IvfIndex(arrays, nprobe_similar=6)
    other = norms * 2  # not the array the index keeps: gathered row by row, as before
    for row in rng.choice(3000, size=25, replace=False).tolist():
        query = factors[row] / norms[row]
        exclude = np.array([row])
        a = kept.search(query, 10, exclude=exclude, norms=norms)
        b = plain.search(query, 10, exclude=exclude, norms=norms)
        c = kept.search(query, 10, exclude=exclude, norms=other)
        assert a is not None and b is not None and c is not None
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1], rtol=1e-6)
        np.testing.assert_array_equal(c[0], b[0])
        np.testing.assert_allclose(c[1], b[1] / 2, rtol=1e-6)
        # The scores are cosines: each found item's own, exactly.
        np.testing.assert_allclose(a[1], factors[a[0]] @ query / norms[a[0]], rtol=1e-5)


def test_similar_items_of_a_large_catalogue_come_from_the_index_once_per_item(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the exact limit, without a table, an item's best 64 are searched once and kept: the
    answers, filtered or not, are the ones a search per request gives."""
    monkeypatch.setattr(ranking, "_SIMILAR_EXACT_MAX_ITEMS", 100)
    # Enough probes to hold the best 64 without widening: then the same clusters as for 10.
    config = ann.AnnConfig(mode="on", nprobe_similar=8, exact_below=50)
    model = FactorModel(artifact.load(artifact.resolve(model_dir)), ann=config)
    index = model.index
    assert index is not None and model._similar_table is None
    in_stock = np.random.default_rng(5).random(N_ITEMS) < 0.7
    for item in range(0, N_ITEMS, 97):
        own = np.array([item])
        query = model.item_factors[item] / model.item_norms[item]
        first = model.similar_items(item, 10)
        assert item in model._similar  # kept
        searched = index.search(query, 10, exclude=own, norms=model.item_norms)
        assert searched is not None
        for got in (first, model.similar_items(item, 10)):
            assert got[0].tolist() == searched[0].tolist()
            np.testing.assert_allclose(got[1], searched[1], rtol=1e-6)
        bought = first[0][:3]
        rows, _ = model.similar_items(item, 10, exclude=bought, allowed=in_stock)
        both = index.search(
            query, 10, exclude=np.concatenate([bought, own]), allowed=in_stock,
            norms=model.item_norms,
        )  # fmt: skip
        assert both is not None and rows.tolist() == both[0].tolist()
        assert in_stock[rows].all() and not set(rows.tolist()) & {item, *bought.tolist()}
    # More than the head holds: searched, not kept.
    assert len(model.similar_items(5, ranking.SIMILAR_KEPT + 1)[0]) == ranking.SIMILAR_KEPT + 1
