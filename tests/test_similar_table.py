"""The similar-items table: built at training time, checked on save and load, served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from service import ann, artifact, ranking
from service.errors import ArtifactError
from service.ranking import FactorModel
from service.similar_table import SIMILAR_KEPT, build_similar, unit_rows
from tests.builders import clustered_artifact, with_arrays

N_ITEMS = 4000


def exact_cosine(factors: np.ndarray) -> np.ndarray:
    """Every pair's cosine, an item with itself at -inf."""
    unit = unit_rows(factors)
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)
    return scores


@pytest.mark.parametrize("n_items", [1, 2, 5, 65, 130, 1000])
def test_the_table_holds_each_items_exact_best_by_cosine(n_items: int) -> None:
    rng = np.random.default_rng(n_items)
    factors = rng.normal(size=(n_items, 8)).astype(np.float32)
    if n_items > 3:
        factors[3] = 0  # an item without signal: cosine 0 with everything
        factors[4] = 2.5 * factors[2]  # the same direction as item 2: a tie for every other item
    table = build_similar(factors, block_cells=4096)  # several blocks
    rows, scores = table["similar_rows"], table["similar_scores"]
    width = min(SIMILAR_KEPT, n_items - 1)
    assert rows.shape == scores.shape == (n_items, width)
    truth = exact_cosine(factors)
    for i in range(n_items):
        assert i not in rows[i].tolist()
        assert len(set(rows[i].tolist())) == width
        np.testing.assert_allclose(scores[i], np.sort(truth[i])[::-1][:width], atol=1e-6)
        np.testing.assert_allclose(truth[i, rows[i]], scores[i], atol=1e-6)
    if n_items > 5:
        # Items 2 and 4 score the same against every item; the lower row comes first.
        first = rows[0].tolist()
        if 2 in first and 4 in first:
            assert first.index(2) == first.index(4) - 1


def test_a_broken_table_is_refused(tmp_path: Path) -> None:
    path = clustered_artifact(tmp_path / "a", 200, with_index=False)
    good = build_similar(artifact.load(path).arrays["item_factors"])
    everyone = np.tile(np.arange(200, dtype=np.int32), (200, 1))
    cases = {
        "needs both": {"similar_rows": good["similar_rows"]},
        "out of range": {**good, "similar_rows": good["similar_rows"] + 1},
        "one row per item": {k: v[:-1] for k, v in good.items()},
        "of equal width": {**good, "similar_scores": good["similar_scores"][:, :-1]},
        "more neighbours than": {
            "similar_rows": everyone,
            "similar_scores": np.zeros((200, 200), np.float32),
        },
        "must be 2-D": {**good, "similar_rows": good["similar_rows"].astype(np.float32)},
    }
    for message, table in cases.items():
        with pytest.raises(ArtifactError, match=message):
            with_arrays(tmp_path / message.replace(" ", "-"), path, table)
    assert artifact.load(with_arrays(tmp_path / "good", path, good)).arrays["similar_rows"].shape


@pytest.fixture(scope="module")
def blurred(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Blurred topics, where probing the index for cosine neighbours misses many of them.
    return clustered_artifact(
        tmp_path_factory.mktemp("blurred"), N_ITEMS, with_index=True, spread=3.0
    )


def test_large_catalogues_answer_from_the_table_exactly(
    blurred: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Above the size where the service would score the catalogue itself, the index answers
    # unless training shipped the table.
    monkeypatch.setattr(ranking, "_SIMILAR_EXACT_MAX_ITEMS", 100)
    on = ann.AnnConfig(mode="on", nprobe_similar=2)
    without = FactorModel(artifact.load(blurred), ann=on)
    table = build_similar(without.item_factors)
    model = FactorModel(artifact.load(with_arrays(tmp_path / "t", blurred, table)), ann=on)
    assert model.index is not None
    truth = exact_cosine(np.asarray(model.item_factors))
    missed = 0
    for item in range(0, N_ITEMS, 97):
        best = set(np.argsort(-truth[item])[:10].tolist())
        rows, scores = model.similar_items(item, 10)
        assert set(rows.tolist()) == best
        np.testing.assert_allclose(scores, np.sort(truth[item])[::-1][:10], atol=1e-5)
        missed += len(best - set(without.similar_items(item, 10)[0].tolist()))
    assert missed > 0  # the index alone would have answered differently


def test_filters_apply_to_the_table_and_a_starved_table_falls_back(
    blurred: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ranking, "_SIMILAR_EXACT_MAX_ITEMS", 100)
    loaded = artifact.load(blurred)
    path = with_arrays(tmp_path / "t", blurred, build_similar(loaded.arrays["item_factors"]))
    model = FactorModel(artifact.load(path), ann=ann.AnnConfig(mode="on"))
    truth = exact_cosine(np.asarray(model.item_factors))[11]
    kept = np.asarray(model.similar_items(11, SIMILAR_KEPT)[0])
    allowed = np.ones(N_ITEMS, dtype=bool)
    allowed[kept[::2]] = False
    rows, _ = model.similar_items(11, 10, allowed=allowed, exclude=kept[1:4])
    expected = [r for r in np.argsort(-truth).tolist() if allowed[r] and r not in kept[1:4]]
    assert rows.tolist() == expected[:10]
    allowed[kept] = False  # none of the table's neighbours may be shown: the catalogue is searched
    rows, _ = model.similar_items(11, 10, allowed=allowed)
    assert len(rows) == 10 and allowed[rows].all() and 11 not in rows.tolist()
    # More than the table keeps: searched too, still k items.
    assert len(model.similar_items(11, SIMILAR_KEPT + 6)[0]) == SIMILAR_KEPT + 6


def test_training_lists_what_the_same_customers_took_first_then_factor_neighbours() -> None:
    from training.similar import co_interaction_table

    # Customers x 4 items in the matrix's order; the artifact orders them differently
    # (matrix column j is artifact row matrix_rows[j]) and adds item row 4, without events.
    matrix = sp.csr_matrix(
        np.array(
            [
                [1, 1, 0, 0],  # columns 0 and 1 go together...
                [2, 1, 0, 0],
                [1, 0, 1, 0],  # ...column 2 a little with column 0...
                [0, 0, 0, 3],  # ...and column 3 with nothing
            ],
            dtype=np.float32,
        )
    )
    matrix_rows = np.array([3, 0, 2, 1], dtype=np.int64)
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(5, 4)).astype(np.float32)
    table = co_interaction_table(matrix, matrix_rows, factors, kept=3, min_together=1)
    rows, scores = table["similar_rows"], table["similar_scores"]
    cosine = exact_cosine(factors)
    by_factors = np.argsort(-cosine, axis=1, kind="stable")
    # Artifact row 3 (column 0): column 1 (row 0) bought by 2 of its 3 customers, column 2 (row 2)
    # by 1; binary cosine 2/sqrt(3*2) and 1/sqrt(3*1); then the best factor neighbour left.
    assert rows[3, :2].tolist() == [0, 2]
    np.testing.assert_allclose(scores[3, :2], [2 / np.sqrt(6), 1 / np.sqrt(3)], rtol=1e-5)
    assert rows[3, 2] == next(r for r in by_factors[3] if r not in (0, 2, 3))
    assert scores[3, 2] == 0
    # No co-interaction (row 1: column 3; row 4: no events): the factor neighbours and cosine.
    for item in (1, 4):
        assert rows[item].tolist() == by_factors[item][:3].tolist()
        np.testing.assert_allclose(scores[item], np.sort(cosine[item])[::-1][:3], atol=1e-6)
    for item in range(5):
        assert item not in rows[item].tolist() and len(set(rows[item].tolist())) == 3
    # Two shared customers are required: columns 0 and 1 share two, columns 0 and 2 only one.
    strict = co_interaction_table(matrix, matrix_rows, factors, kept=3, min_together=2)
    assert strict["similar_rows"][3, 0] == 0 and strict["similar_scores"][3, 1] == 0
    assert strict["similar_rows"][0, 0] == 3  # and the other way round
    # Three: none, so every list is the factor neighbours.
    none = co_interaction_table(matrix, matrix_rows, factors, kept=3, min_together=3)
    assert none["similar_rows"].tolist() == by_factors[:, :3].tolist()
    # Customers who took more items than allowed are left out: the first three took two each.
    capped = co_interaction_table(
        matrix, matrix_rows, factors, kept=3, min_together=1, max_customer_items=1
    )
    assert capped["similar_rows"].tolist() == by_factors[:, :3].tolist()
    # Allowed two: the pairs of columns 0 and 1, and of 0 and 2, are back.
    assert co_interaction_table(
        matrix, matrix_rows, factors, kept=3, min_together=1, max_customer_items=2
    )["similar_rows"][3, :2].tolist() == [0, 2]


def test_the_table_of_some_items_is_their_rows_of_the_whole_table() -> None:
    factors = np.random.default_rng(3).normal(size=(300, 8)).astype(np.float32)
    whole = build_similar(factors)
    some = np.array([299, 0, 17, 17], dtype=np.int64)
    part = build_similar(factors, items=some, block_cells=1000)
    np.testing.assert_array_equal(part["similar_rows"], whole["similar_rows"][some])
    # Other block shapes round the products differently in the last bits.
    np.testing.assert_allclose(part["similar_scores"], whole["similar_scores"][some], atol=1e-6)
    assert build_similar(factors, items=np.empty(0, np.int64))["similar_rows"].shape == (0, 64)
