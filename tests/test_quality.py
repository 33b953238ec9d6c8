"""Model quality: metrics, the factor export of every model family, selection and the ship guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import scipy.sparse as sp

from service import artifact
from service.ranking import FactorModel
from training import evaluate
from training.__main__ import main
from training.coldstart import MAPPING_L2, NewCustomer, from_attributes, sampled
from training.config import Selection, TrainConfig, load_config
from training.experiment import SideInfo, Targets, make_period, score
from training.loaders import load_events
from training.models import FITTERS, Fitted
from training.models.base import low_rank
from training.models.blend import blend, normalised
from training.pipeline import Inputs, run
from training.selection import WorseModelError, guard, search_weights, tune_blend
from training.tuning import (
    COMPLEMENT_TRIALS,
    GRID_POINTS,
    REFINE_ROUNDS,
    scalar_search,
    to_toml,
    tune,
    validation_split,
)

START = datetime(2026, 9, 1, tzinfo=UTC)


def test_precision_counts_hits_over_k() -> None:
    assert evaluate.precision_at_k([1, 2, 3, 4], {1, 3, 9}, 4) == pytest.approx(0.5)
    assert evaluate.precision_at_k([1], {1}, 10) == pytest.approx(0.1)


def test_popularity_bias_is_the_mean_popularity_percentile_of_what_is_shown() -> None:
    counts = np.array([10.0, 5.0, 1.0])  # percentiles 1, 0.5, 0
    assert evaluate.popularity_bias([[0]], counts, 10) == pytest.approx(1.0)
    assert evaluate.popularity_bias([[0, 2], [1]], counts, 10) == pytest.approx(0.5)
    assert evaluate.popularity_bias([[2, 0]], counts, 1) == pytest.approx(0.0)  # only the top k


def test_a_blend_is_the_weighted_sum_of_per_customer_standardised_scores() -> None:
    rng = np.random.default_rng(0)
    a = Fitted(
        "a", rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)
    )
    b = Fitted("b", np.ones((5, 1), np.float32), rng.random((8, 1)).astype(np.float32))
    mixed = blend({"a": normalised(a), "b": normalised(b)}, {"a": 2.0, "b": 0.5})
    rows = np.arange(5)

    def standardised(f: Fitted) -> np.ndarray:
        s = f.scores(rows).astype(np.float64)
        return s / s.std(axis=1, keepdims=True)

    expected = 2.0 * standardised(a) + 0.5 * standardised(b)
    got = mixed.scores(rows)
    # Equal up to a per-customer constant, which does not change any ranking.
    assert np.allclose(
        got - got.mean(axis=1, keepdims=True),
        expected - expected.mean(axis=1, keepdims=True),
        atol=1e-4,
    )


def test_only_the_popularity_prior_may_be_subtracted_in_a_blend() -> None:
    rng = np.random.default_rng(1)
    cf = Fitted(
        "als",
        rng.normal(size=(4, 3)).astype(np.float32),
        rng.normal(size=(6, 3)).astype(np.float32),
    )
    prior = Fitted("popularity", np.ones((4, 1), np.float32), rng.random((6, 1)).astype(np.float32))
    parts = {"als": normalised(cf), "popularity": normalised(prior)}
    mixed = blend(parts, {"als": 1.0, "popularity": -0.5})
    rows = np.arange(4)
    expected = parts["als"].scores(rows) - 0.5 * parts["popularity"].scores(rows)
    assert np.allclose(mixed.scores(rows), expected, atol=1e-5)
    with pytest.raises(ValueError, match="negative weights"):
        blend(parts, {"als": -1.0, "popularity": 1.0})
    with pytest.raises(ValueError, match="positive weight"):
        blend(parts, {"popularity": -1.0})
    signed = b"[selection.blend_weights]\npopularity = -0.5\nals = 1.0\n"
    config = msgspec.toml.decode(signed, type=TrainConfig)
    assert config.selection.blend_weights == {"popularity": -0.5, "als": 1.0}
    with pytest.raises(msgspec.ValidationError, match="only popularity may be negative"):
        msgspec.toml.decode(b"[selection.blend_weights]\nals = -1.0\n", type=TrainConfig)


def test_the_blend_search_subtracts_all_time_popularity_when_what_is_rising_sells() -> None:
    # Items 0-19 sold most over the years and still sell; items 20-29 are rising: recently as
    # popular as the old hits, rarely bought before. Customers take rising items next, so only
    # recent popularity minus all-time popularity (a trend) ranks them first.
    n_users, n_items = 120, 60
    rng = np.random.default_rng(2)
    all_time = np.concatenate([np.full(20, 100.0), np.full(10, 5.0), np.full(30, 2.0)])
    recent = np.concatenate([np.full(20, 20.0), np.full(10, 19.0), np.full(30, 1.0)])
    recent *= 1 + 0.1 * rng.random(n_items)
    fitted = {
        name: Fitted(name, np.ones((n_users, 1), np.float32), np.log(c)[:, None].astype(np.float32))
        for name, c in (("popularity", all_time), ("recent_popularity", recent))
    }
    relevant = [
        set(rng.choice(np.arange(20, 30), 2, replace=False).tolist()) for _ in range(n_users)
    ]
    period = SimpleNamespace(
        overall=Targets(np.arange(n_users), relevant),
        data=SimpleNamespace(excluded=sp.csr_matrix((n_users, n_items), dtype=np.float32)),
    )
    config = TrainConfig(
        selection=Selection(blend_parts=["popularity", "recent_popularity"], blend_trials=5)
    )
    weights, found = tune_blend(fitted, period, config)  # type: ignore[arg-type]
    assert weights["popularity"] < 0 < weights["recent_popularity"]
    # Recent popularity alone ranks the old hits first: no rising item in its top 10.
    _, alone = tune_blend(
        {"recent_popularity": fitted["recent_popularity"]},
        period,  # type: ignore[arg-type]
        msgspec.structs.replace(
            config, selection=Selection(blend_parts=["recent_popularity"], blend_trials=1)
        ),
    )
    assert alone == 0.0
    # The trend ranks the ten rising items first: the two taken sit somewhere among them.
    assert found > 0.4


def launches(seed: int = 4) -> list[tuple[str, str, str, int]]:
    """Each customer buys their own five of ten staples every week; from day 60 five new items
    launch and each customer takes up two of them by day 120."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(150):
        arrival = int(rng.integers(0, 10))
        for s in rng.choice(10, size=5, replace=False):
            rows += [(f"c{c}", f"s{s}", "web", day) for day in range(arrival, 120, 7)]
        for n in rng.choice(5, size=2, replace=False):
            rows.append((f"c{c}", f"n{n}", "web", int(rng.integers(60, 120))))
    return rows


@pytest.fixture(scope="module")
def launch_events(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    path = tmp_path_factory.mktemp("launches") / "events.csv"
    path.write_text(_purchases(launches()))
    events, _ = load_events(path)
    return events


def test_adoption_ranks_what_customers_take_up_where_popularity_ranks_staples(
    launch_events: pa.Table,
) -> None:
    # What a customer buys new after day 90 is a launch (their staples are bought already):
    # recent popularity ranks the other staples first, adoption the launches.
    events = launch_events
    cut = pa.scalar(START + timedelta(days=90), events["timestamp"].type)
    past = events.filter(pc.less(events["timestamp"], cut))
    future = events.filter(pc.greater_equal(events["timestamp"], cut))
    config = TrainConfig()
    period = make_period(past, future, config, SideInfo())
    recent = FITTERS["recent_popularity"](period.data, config.params("recent_popularity"))
    adoption = FITTERS["adoption"](period.data, config.params("adoption"))
    items = period.data.interactions.item_ids.tolist()
    staples = [n for n, i in enumerate(items) if i.startswith("s")]
    assert adoption.item_factors[staples].max() == 0.0  # bought only on arrival
    assert score(adoption, period, 10).ndcg > 1.5 * score(recent, period, 10).ndcg


def test_adoption_is_tuned_by_what_it_adds_to_the_best_collaborative_model(
    launch_events: pa.Table,
) -> None:
    events = launch_events
    models = ["ease", "adoption"]
    config, found = tune(events, SMALL, SideInfo(), models=models, trials=1, weight_trials=1)
    assert found["adoption"]["beside"] == found["weights"]["probe"] == "ease"
    params = found["adoption"]["params"]
    assert config.models["adoption"] == params
    # Its score is that of the best blend of EASE and adoption at the chosen half-life (never
    # below EASE alone), not adoption's own ranking.
    period = make_period(*validation_split(events, config), config, SideInfo())
    pair = {"ease": FITTERS["ease"](period.data, config.params("ease"))}
    pair["adoption"] = FITTERS["adoption"](period.data, params)
    two = msgspec.structs.replace(
        config,
        selection=Selection(blend_parts=["ease", "adoption"], blend_trials=COMPLEMENT_TRIALS),
    )
    assert tune_blend(pair, period, two)[1] == pytest.approx(found["adoption"]["ndcg"])
    assert found["adoption"]["ndcg"] >= found["ease"]["ndcg"] - 1e-9
    alone = score(pair["adoption"], period, 10).ndcg
    assert found["adoption"]["ndcg"] != pytest.approx(alone)


def test_the_blend_search_climbs_to_a_peak_far_from_every_draw() -> None:
    # Draws give weights up to 2 and refinement moves a weight at most 2x per round: a peak at
    # b = 40 (with a = 1) is five rounds away from the best draw, beyond a fixed three rounds.
    def objective(w: dict[str, float]) -> float:
        if w["a"] <= 0 or w["b"] <= 0:
            return -100.0
        return -(np.log(w["a"]) ** 2) - (np.log(w["b"] / 40) ** 2)

    weights, value = search_weights(["a", "b"], objective, np.random.default_rng(0), trials=10)
    assert weights["b"] / weights["a"] == pytest.approx(40, rel=0.35)
    assert value == objective(weights)


def test_new_items_get_the_factors_items_with_their_attributes_have() -> None:
    # 20 items of category a with factors (1, 0), 20 of b with (0, 1); a new item of category a
    # gets the mean row plus a's ridge coefficient: (0.5, 0.5) + 20 * (0.5, -0.5) / (20 + l2).
    attributes = sp.csr_matrix(np.repeat(np.eye(2, dtype=np.float32), 20, axis=0))
    factors = np.repeat(np.eye(2, dtype=np.float32), 20, axis=0)
    data = SimpleNamespace(item_attributes=attributes, cold_item_ids=("new",))
    als = Fitted("als", np.ones((3, 2), np.float32), factors)
    mapped = from_attributes(als, data)  # type: ignore[arg-type]
    assert mapped.cold_items is not None
    new_a = mapped.cold_items(sp.csr_matrix(np.array([[1.0, 0.0]], dtype=np.float32)))
    shift = 20 * 0.5 / (20 + MAPPING_L2)
    assert np.allclose(new_a, [[0.5 + shift, 0.5 - shift]], atol=1e-5)
    # A prior ranks by an item's own record, which a new item lacks: not mapped.
    prior = Fitted("popularity", np.ones((3, 1), np.float32), np.arange(40.0)[:, None])
    assert from_attributes(prior, data).cold_items is None  # type: ignore[arg-type]
    # Without new items there is nothing to place.
    none_new = SimpleNamespace(item_attributes=attributes, cold_item_ids=())
    assert from_attributes(als, none_new).cold_items is None  # type: ignore[arg-type]


def test_the_randomised_svd_recovers_a_low_rank_matrix() -> None:
    rng = np.random.default_rng(1)
    m = (rng.normal(size=(40, 3)) @ rng.normal(size=(3, 40))).astype(np.float32)
    left, right = low_rank(lambda x: m @ x, lambda x: m.T @ x, 40, 3, seed=0)
    assert np.allclose(left @ right.T, m, atol=1e-3)


def _purchases(rows: list[tuple[str, str, str, int]]) -> str:
    """CSV of (customer, item, channel, day) purchases starting at START."""
    lines = ["customer_id,item_id,event_type,channel,timestamp"]
    for c, i, ch, day in rows:
        ts = (START + timedelta(days=day, minutes=len(lines))).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"{c},{i},purchase,{ch},{ts}")
    return "\n".join(lines) + "\n"


def complements(
    n_customers: int = 240, pairs: int = 12, seed: int = 3
) -> list[tuple[str, str, str, int]]:
    """Store purchases predict web interest: who buys ``s{j}`` in store buys ``w{j}`` online.

    Everybody also buys a few of ten popular web items, so popularity is a real competitor.
    Customer ``probe`` bought ``s0`` in store and nothing else.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_customers):
        day = int(rng.integers(0, 50))
        for j in rng.choice(pairs, size=2, replace=False):
            rows.append((f"c{c}", f"s{j}", "store", day))
            rows.append((f"c{c}", f"w{j}", "web", day + int(rng.integers(1, 9))))
        for p in rng.choice(10, size=3, replace=False):
            rows.append((f"c{c}", f"p{p}", "web", int(rng.integers(0, 60))))
    rows.append(("probe", "s0", "store", 30))
    return rows


@pytest.fixture(scope="module")
def complements_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("complements") / "events.csv"
    path.write_text(_purchases(complements()))
    return path


SMALL = TrainConfig(
    models={"bpr": {"factors": 8, "iterations": 20}, "lightfm": {"components": 8, "epochs": 5}}
)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FITTERS))
def test_every_model_family_exports_finite_factors(name: str, complements_file: Path) -> None:
    from training.experiment import SideInfo, make_data
    from training.loaders import load_events

    events, _ = load_events(complements_file)
    data = make_data(events, SMALL, SideInfo())
    fitted = FITTERS[name](data, SMALL.params(name))
    n_users, n_items = data.shape
    assert fitted.user_factors.shape[0] == n_users and fitted.item_factors.shape[0] == n_items
    assert fitted.user_factors.shape[1] == fitted.item_factors.shape[1]
    assert np.isfinite(fitted.scores(np.arange(n_users))).all()
    if fitted.exact is not None:  # small catalogue: the export is exact
        rows = np.arange(n_users)
        assert np.allclose(fitted.scores(rows), fitted.exact(rows), atol=1e-3)


@pytest.mark.slow
def test_a_store_purchase_brings_its_web_complement(complements_file: Path, tmp_path: Path) -> None:
    """Trained with model selection, a customer who bought s0 in store is shown w0 online."""
    path = run(Inputs(events=[str(complements_file)]), tmp_path, TrainConfig())
    loaded = artifact.load(path)
    metrics = loaded.manifest.metrics
    selected = metrics["selected"]
    assert loaded.manifest.algorithm == selected
    assert set(metrics["validation"]) == set(TrainConfig().selection.candidates)
    assert metrics[selected]["ndcg"] > metrics["popularity"]["ndcg"]
    assert "web" in metrics[selected]["by_channel"]  # per-channel report
    model = FactorModel(loaded)
    row = model.user_row("probe")
    assert row is not None
    top, _ = model.recommend(model.user_vector(row), 3, exclude=model.bought_rows(row))
    assert "w0" in [model.item_id(int(r)) for r in top]
    assert "s0" not in [model.item_id(int(r)) for r in top]  # already bought: never shown


def _artifact_with(model_dir: Path, ndcg: float) -> None:
    arrays, channels = artifact.pack(
        user_ids=["u"],
        user_factors=np.ones((1, 1), np.float32),
        item_ids=["i"],
        item_factors=np.ones((1, 1), np.float32),
        item_categories=[None],
        popularity={"all": np.ones(1)},
        bought_indptr=np.array([0, 0]),
        bought_items=np.array([], np.int32),
    )
    manifest = artifact.Manifest(
        format_version=artifact.FORMAT_VERSION,
        model_version="v1",
        algorithm="als",
        created_at=START,
        popularity_channels=channels,
        metrics={"selected": "als", "als": {"ndcg": ndcg}},
    )
    artifact.save(model_dir, manifest, arrays)


def test_the_guard_refuses_a_model_worse_than_latest_by_more_than_the_margin(
    tmp_path: Path,
) -> None:
    guard(tmp_path, 0.1, 0.05)  # no LATEST yet: anything ships
    _artifact_with(tmp_path, 0.5)
    guard(tmp_path, 0.48, 0.05)  # within the margin
    with pytest.raises(WorseModelError, match=r"0\.4000.*v1"):
        guard(tmp_path, 0.4, 0.05)


@pytest.mark.slow
def test_the_cli_refuses_to_ship_a_worse_model_unless_forced(
    complements_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models"
    good = ["fit", "--events", str(complements_file), "--model-dir", str(models), "--no-progress"]
    assert main(good) == 0
    first = artifact.latest_version(models)
    worse = tmp_path / "worse.toml"
    worse.write_text('algorithm = "popularity"\n')
    assert main([*good, "--config", str(worse)]) == 1
    assert "WorseModelError" in caplog.text and "--force" in caplog.text
    assert artifact.latest_version(models) == first
    assert main([*good, "--config", str(worse), "--force"]) == 0
    assert artifact.latest_version(models) != first


@pytest.mark.slow
def test_tune_writes_a_config_that_fit_reuses(complements_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "tuned.toml"
    argv = [
        "tune",
        "--events",
        str(complements_file),
        "--out",
        str(out),
        "--trials",
        "2",
        "--weight-trials",
        "2",
        "--models",
        "als",
        "recent_popularity",
    ]
    assert main(argv) == 0
    tuned = load_config(out)
    assert set(tuned.models) >= {"als", "recent_popularity"}
    assert tuned.selection.blend_weights  # the blend was tuned too
    assert (
        main(
            [
                "fit",
                "--events",
                str(complements_file),
                "--model-dir",
                str(tmp_path / "m"),
                "--config",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )


def test_the_weights_are_tuned_with_the_best_collaborative_model(complements_file: Path) -> None:
    events, _ = load_events([complements_file])
    models = ["popularity", "itemknn", "ease"]
    config, found = tune(events, SMALL, SideInfo(), models=models, trials=2, weight_trials=3)
    probe = found["weights"]["probe"]
    assert probe in {"itemknn", "ease"}  # never a ranking that is the same for everyone
    # The probe's first weight trial is the current setting, and a re-tune starts from its params.
    assert found[probe]["ndcg"] >= found["weights"]["ndcg"] - 1e-9
    assert config.models["ease"]["l2"] == found["ease"]["params"]["l2"]


def test_the_scalar_search_finds_a_peak_anywhere_in_its_range() -> None:
    for peak in (15.0, 500.0, 25_000.0):
        calls: list[float] = []

        def objective(v: float, peak: float = peak, calls: list[float] = calls) -> float:
            calls.append(v)
            return -((np.log(v) - np.log(peak)) ** 2)

        found = scalar_search(objective, 10.0, 30_000.0)
        # The grid step is 30_000/10 ** (1/5) ~ 5; two refinements bring it to ~1.5.
        assert abs(np.log(found / peak)) <= np.log(1.5) / 2 + 1e-9
        assert len(calls) == len(set(calls)) <= GRID_POINTS + 2 * REFINE_ROUNDS


def test_configs_round_trip_through_toml(tmp_path: Path) -> None:
    config = TrainConfig(models={"ease": {"l2": 300.0}, "itemknn": {"similarity": "bm25"}})
    path = tmp_path / "c.toml"
    path.write_text(to_toml(config))
    assert load_config(path) == config


@pytest.mark.slow
def test_a_new_customer_is_folded_in_from_a_few_events(complements_file: Path) -> None:
    """Cold start: one store purchase of s1, folded in as the service does, brings w1."""
    from service.artifact import FoldIn
    from training.coldstart import new_customers, score_cold
    from training.experiment import SideInfo, make_data
    from training.loaders import load_events

    events, _ = load_events(complements_file)
    data = make_data(events, SMALL, SideInfo())
    ids = data.interactions.item_ids.tolist()
    s1, w1 = ids.index("s1"), ids.index("w1")
    case = NewCustomer(
        rows=[s1],
        event_types=["purchase"],
        channels=["store"],
        ages=[0.0],
        ratings=[None],
        excluded={s1},
        relevant={w1},
    )
    fitted = FITTERS["als"](data, SMALL.params("als"))
    params = FoldIn(event_weights={"purchase": 5.0}, regularization=1.0, alpha=10.0)
    assert score_cold(fitted, [case], params, 3).hit_rate == 1.0
    # Only customers the model lacks count, with their first events as context.
    later = events.slice(events.num_rows - 1)  # probe's purchase: a known customer
    assert new_customers(data.interactions, later, SMALL.weights.relevant_rating) == []


def test_customer_attributes_become_one_hot_features() -> None:
    from training.experiment import customer_attributes

    m = customer_attributes(
        ["a", "b", "c"], {"a": {"age": "45-54", "income": ""}, "b": {"age": "19-24"}}
    )
    assert m.shape == (3, 2)  # age=19-24, age=45-54; empty values and unknown customers: none
    assert m.toarray().tolist() == [[0, 1], [1, 0], [0, 0]]


def test_new_customer_cases_are_sampled_to_the_limit_in_their_order() -> None:
    cases = [NewCustomer([i], ["view"], ["web"], [0.0], [None], set(), {i}) for i in range(100)]
    assert sampled(cases, 200) is cases
    picked = sampled(cases, 10, seed=3)
    assert len(picked) == 10 and len({c.rows[0] for c in picked}) == 10
    assert [c.rows[0] for c in picked] == sorted(c.rows[0] for c in picked)
    assert [c.rows for c in sampled(cases, 10, seed=3)] == [c.rows for c in picked]  # seeded
