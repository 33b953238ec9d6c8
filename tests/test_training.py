"""The training job: weights, decay, matrix, metrics, split, config and a real fit end to end."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
from litestar.testing import TestClient

from service import ann, artifact
from service.customer_table import CUSTOMER_KEPT
from service.foldin import confidences, gramian, recalculate_user
from service.ranking import FactorModel
from service.settings import Settings
from tests.conftest import ADMIN_KEY, client_for, replace
from training import coldstart, evaluate, matrix
from training.__main__ import main
from training.config import AlsParams, TrainConfig, Weights, load_config
from training.experiment import SideInfo, make_data
from training.loaders import EVENTS_SCHEMA
from training.pipeline import Inputs, run
from training.sample import SampleConfig, write_sample
from training.similar import MIN_TOGETHER

END = datetime(2026, 11, 1, tzinfo=UTC)


def events_table(rows: list[dict[str, object]]) -> pa.Table:
    """A normalised events table from partial rows (defaults: a web view one day before END)."""
    defaults: dict[str, object] = {
        "event_type": "view",
        "channel": "web",
        "timestamp": END - timedelta(days=1),
        "quantity": 1.0,
    }
    full = [{**defaults, **r} for r in rows]
    return pa.Table.from_pylist(
        [{f.name: r.get(f.name) for f in EVENTS_SCHEMA} for r in full], schema=EVENTS_SCHEMA
    )


NO_DECAY = Weights(half_life_days=0, transform="none")


@pytest.mark.parametrize(
    ("row", "weights", "expected"),
    [
        ({"event_type": "view"}, NO_DECAY, 1.0),
        ({"event_type": "purchase"}, NO_DECAY, 5.0),
        (
            {"event_type": "purchase", "channel": "store"},
            Weights(half_life_days=0, channels={"store": 2.0}),
            10.0,
        ),
        (
            {"event_type": "purchase", "channel": "app"},
            Weights(half_life_days=0, channels={"store": 2.0}),
            0.0,
        ),
        ({"event_type": "rating", "rating": 4.0}, NO_DECAY, 0.8),
        ({"event_type": "email_open", "item_id": None}, NO_DECAY, 0.0),
        ({"event_type": "return"}, NO_DECAY, 0.0),
        ({"timestamp": END - timedelta(days=30)}, Weights(half_life_days=30), 0.5),
        ({"timestamp": END - timedelta(days=60)}, Weights(half_life_days=30), 0.25),
        ({"timestamp": END}, Weights(half_life_days=30), 1.0),
    ],
)
def test_event_weights(row: dict[str, object], weights: Weights, expected: float) -> None:
    table = events_table([{"customer_id": "c", "item_id": "i", **row}])
    assert matrix.event_weights(table, weights, END)[0] == pytest.approx(expected)


def test_the_matrix_sums_events_per_cell_and_leaves_out_zero_weight_rows() -> None:
    table = events_table(
        [
            {"customer_id": "a", "item_id": "x"},
            {"customer_id": "a", "item_id": "x", "event_type": "purchase"},
            {"customer_id": "b", "item_id": "y"},
            {
                "customer_id": "z",
                "item_id": "w",
                "event_type": "return",
            },  # weight 0: neither z nor w
        ]
    )
    built = matrix.build(table, NO_DECAY, end=END)
    assert built.shape == (2, 2)
    dense = {
        (c, i): built.matrix[r, col]
        for r, c in enumerate(built.customer_ids)
        for col, i in enumerate(built.item_ids)
    }
    assert dense == {("a", "x"): 6.0, ("a", "y"): 0.0, ("b", "x"): 0.0, ("b", "y"): 1.0}
    logged = matrix.build(table, Weights(half_life_days=0), end=END)
    assert logged.matrix.max() == pytest.approx(np.log1p(6.0))


def test_a_short_half_life_over_years_leaves_ancient_events_out_not_zeros_in() -> None:
    # A 2-day half-life over ten years: the oldest weights are about 1e-550 (0 in float64), 1e-50
    # (0 in the float32 matrix) and 1e-16; only the events within a meaningful share of the
    # newest stay, every cell is a normal float32 whose square is too, and item-item fits.
    ages = [0, 30, 100, 330, 3650]
    table = events_table(
        [
            {"customer_id": f"c{n % 3}", "item_id": f"i{n}", "timestamp": END - timedelta(days=a)}
            for n, a in enumerate(ages)
        ]
        + [{"customer_id": "c0", "item_id": "i1"}, {"customer_id": "c1", "item_id": "i0"}]
    )
    built = matrix.build(table, Weights(half_life_days=2), end=END)
    assert set(built.item_ids.tolist()) == {"i0", "i1"}  # 100 days and older: left out
    data = built.matrix.data
    assert (data > 0).all() and (data.astype(np.float32) ** 2 > 0).all()
    assert data.min() >= data.max() * matrix.MIN_RELATIVE_WEIGHT


def test_adoptions_count_settled_customers_first_purchases_decayed() -> None:
    def bought(customer: str, item: str, days_before_end: float) -> dict[str, object]:
        return {
            "customer_id": customer,
            "item_id": item,
            "event_type": "purchase",
            "timestamp": END - timedelta(days=days_before_end),
        }

    table = events_table(
        [
            bought("a", "x", 40),  # a arrives: not an adoption
            bought("a", "y", 20),  # a adopts y ...
            bought("a", "y", 15),  # ... and buys it again: still one adoption
            bought("a", "x", 10),  # a repeat, not a first purchase
            bought("b", "z", 40),  # b arrives
            bought("b", "y", 0),  # b adopts y, just now
            bought("c", "y", 5),  # c arrives with y: not settled
            bought("c", "x", 3),  # two days later: still settling
            {"customer_id": "a", "item_id": "z"},  # a view is no purchase
        ]
    )
    built = matrix.build(table, NO_DECAY, end=END)
    col = {i: n for n, i in enumerate(built.item_ids.tolist())}

    def adoptions(half_life_days: float) -> dict[str, float]:
        found = matrix.adoptions(
            table,
            built,
            end=END,
            half_life_days=half_life_days,
            settle_days=7,
            min_rating=NO_DECAY.relevant_rating,
        )
        return {i: round(float(found[col[i]]), 6) for i in col}

    assert adoptions(0) == {"x": 0.0, "y": 2.0, "z": 0.0}
    # a's adoption 20 days ago weighs 0.5 ** (20 / 10), b's of today 1.
    assert adoptions(10) == {"x": 0.0, "y": 1.25, "z": 0.0}


def test_the_cart_at_the_end_is_what_the_service_would_hold() -> None:
    def at(days: float) -> datetime:
        return END - timedelta(days=days)

    table = events_table(
        [
            {"customer_id": "a", "item_id": "x", "event_type": "add_to_cart", "timestamp": at(5)},
            {"customer_id": "a", "item_id": "y", "event_type": "add_to_cart", "timestamp": at(4)},
            {"customer_id": "a", "item_id": "y", "event_type": "purchase", "timestamp": at(3)},
            {"customer_id": "a", "item_id": "z", "timestamp": at(1)},  # a view: not carted
            # b's cart went stale: nothing added for longer than the cart lives.
            {"customer_id": "b", "item_id": "x", "event_type": "add_to_cart", "timestamp": at(200)},
            {"customer_id": "c", "item_id": "z", "event_type": "add_to_cart", "timestamp": at(2)},
            {"customer_id": "c", "item_id": "z", "event_type": "remove_from_cart"},
            {"customer_id": "c", "item_id": "x", "event_type": "add_to_cart"},
            # Bought at the very moment it was added: out of the cart.
            {"customer_id": "c", "item_id": "y", "event_type": "add_to_cart"},
            {"customer_id": "c", "item_id": "y", "event_type": "purchase"},
        ]
    )
    built = matrix.build(table, NO_DECAY, end=END)
    rows, cols = matrix.carted(table, built, end=END).nonzero()
    carts = {(built.customer_ids[r], built.item_ids[c]) for r, c in zip(rows, cols, strict=True)}
    assert carts == {("a", "x"), ("c", "x")}


def test_evaluation_leaves_out_what_the_cart_holds_as_production_does() -> None:
    """An item in the cart at the cutoff is never recommended by the service: it is neither
    ranked nor a target, as an item bought before the cutoff."""
    train = events_table(
        [
            {"customer_id": "a", "item_id": "x", "event_type": "purchase"},
            {"customer_id": "a", "item_id": "y", "event_type": "add_to_cart"},
            {"customer_id": "b", "item_id": "z", "event_type": "purchase"},
        ]
    )
    data = make_data(train, TrainConfig(), SideInfo())
    test = events_table(
        [
            {"customer_id": "a", "item_id": i, "event_type": "purchase", "timestamp": END}
            for i in ("x", "y", "z")
        ]
    )
    customers, targets = evaluate.test_targets(
        data.interactions, data.excluded, test, TrainConfig().weights.relevant_rating
    )
    assert [data.interactions.customer_ids[c] for c in customers] == ["a"]
    assert [{data.interactions.item_ids[i] for i in t} for t in targets] == [{"z"}]
    assert list(data.interactions.item_ids) == ["x", "y", "z"]
    scores = np.array([[3.0, 2.0, 1.0]])  # x and y score highest, and are left out
    [ranked] = evaluate.rank(lambda rows: scores, customers, data.excluded, 1)
    assert [data.interactions.item_ids[i] for i in ranked] == ["z"]


def test_a_new_customers_carted_item_is_no_target_of_the_fold_in() -> None:
    """The service never recommends what a new customer has in the cart, so the cold-start
    evaluation neither ranks it nor counts its purchase as a hit."""
    known = events_table([{"customer_id": "a", "item_id": i} for i in ("x", "y", "z")])
    built = matrix.build(known, NO_DECAY, end=END)
    later = [
        ("x", "view"), ("x", "add_to_cart"), ("y", "view"), ("x", "purchase"), ("z", "purchase")
    ]  # fmt: skip
    future = events_table(
        [
            {"customer_id": "n", "item_id": i, "event_type": t, "timestamp": END + timedelta(n)}
            for n, (i, t) in enumerate(later)
        ]
    )
    [case] = coldstart.new_customers(built, future, NO_DECAY.relevant_rating, context=3)
    items = list(built.item_ids)
    assert {items[i] for i in case.excluded} == {"x"}
    assert {items[i] for i in case.relevant} == {"z"}


def test_bought_and_popularity_per_channel() -> None:
    table = events_table(
        [
            {"customer_id": "a", "item_id": "x", "event_type": "purchase", "channel": "store"},
            {"customer_id": "a", "item_id": "y"},
            {"customer_id": "b", "item_id": "y", "event_type": "purchase", "channel": "web"},
            {"customer_id": "b", "item_id": "y", "event_type": "purchase", "channel": "web"},
        ]
    )
    built = matrix.build(table, NO_DECAY, end=END)
    indptr, items = matrix.bought(table, built)
    bought = {
        built.customer_ids[r]: sorted(built.item_ids[items[indptr[r] : indptr[r + 1]]])
        for r in range(len(built.customer_ids))
    }
    assert bought == {"a": ["x"], "b": ["y"]}
    pop = matrix.popularity(table, built, NO_DECAY, end=END)
    by_item = {ch: dict(zip(built.item_ids, v.tolist(), strict=True)) for ch, v in pop.items()}
    assert by_item["all"] == {"x": 5.0, "y": 11.0}
    assert by_item["store"] == {"x": 5.0, "y": 0.0}
    assert by_item["web"] == {"x": 0.0, "y": 11.0}


@pytest.mark.parametrize(
    ("recommended", "relevant", "ndcg", "recall", "ap", "hit"),
    [
        ([1, 2, 3], {1}, 1.0, 1.0, 1.0, 1.0),
        ([2, 1, 3], {1}, 1 / np.log2(3), 1.0, 0.5, 1.0),
        ([2, 3, 4], {1}, 0.0, 0.0, 0.0, 0.0),
        # hits at ranks 1 and 3 of 2 relevant: AP = (1/1 + 2/3) / 2
        ([1, 9, 2], {1, 2}, (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3)), 1.0, (1 + 2 / 3) / 2, 1.0),
        ([], {1}, 0.0, 0.0, 0.0, 0.0),
    ],
)
def test_metrics_on_hand_computed_examples(
    recommended: list[int], relevant: set[int], ndcg: float, recall: float, ap: float, hit: float
) -> None:
    assert evaluate.ndcg_at_k(recommended, relevant, 3) == pytest.approx(ndcg)
    assert evaluate.recall_at_k(recommended, relevant, 3) == pytest.approx(recall)
    assert evaluate.average_precision_at_k(recommended, relevant, 3) == pytest.approx(ap)
    assert evaluate.hit_at_k(recommended, relevant, 3) == hit


def test_metrics_only_count_the_top_k() -> None:
    assert evaluate.recall_at_k([5, 6, 1], {1}, 2) == 0.0
    assert evaluate.ndcg_at_k([5, 6, 1], {1}, 2) == 0.0


def test_summarise_averages_and_measures_coverage() -> None:
    metrics = evaluate.summarise([[1, 2], [1, 3]], [{1}, {4}], k=2, n_items=10)
    assert metrics.recall == pytest.approx(0.5)
    assert metrics.hit_rate == pytest.approx(0.5)
    assert metrics.coverage == pytest.approx(0.3)


def test_the_split_is_by_time_and_targets_skip_repurchases() -> None:
    day = timedelta(days=1)
    table = events_table(
        [
            {
                "customer_id": "a",
                "item_id": "x",
                "event_type": "purchase",
                "timestamp": END - 10 * day,
            },
            {"customer_id": "a", "item_id": "y", "timestamp": END - 9 * day},
            {"customer_id": "b", "item_id": "y", "timestamp": END - 8 * day},
            {
                "customer_id": "a",
                "item_id": "x",
                "event_type": "purchase",
                "timestamp": END,
            },  # again
            {"customer_id": "a", "item_id": "y", "event_type": "purchase", "timestamp": END},  # new
            {"customer_id": "new", "item_id": "y", "event_type": "purchase", "timestamp": END},
            {"customer_id": "b", "item_id": "new", "event_type": "purchase", "timestamp": END},
        ]
    )
    train, test, cutoff = evaluate.time_split(table, 0.5)
    assert train.num_rows == 3 and test.num_rows == 4
    assert END - 8 * day < cutoff <= END
    built = matrix.build(train, NO_DECAY)
    indptr, items = matrix.bought(train, built)
    import scipy.sparse as sp

    bought = sp.csr_matrix((np.ones(len(items)), items, indptr), shape=built.shape)
    customers, relevant = evaluate.test_targets(built, bought, test, NO_DECAY.relevant_rating)
    assert [built.customer_ids[c] for c in customers] == ["a"]
    assert [{built.item_ids[i] for i in s} for s in relevant] == [{"y"}]


def test_config_files_are_read_and_typos_fail(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        "[als]\nfactors = 8\n[weights]\nhalf_life_days = 7\n[weights.event_types]\nview = 0.5\n"
    )
    config = load_config(good)
    assert config.als.factors == 8
    assert config.weights.half_life_days == 7
    assert config.weights.event_types == {"view": 0.5}
    for text, message in [
        ("[als]\nfactorz = 8\n", "factorz"),
        ("[weights.event_types]\nvieww = 1.0\n", "vieww"),
        ("[als]\nfactors = 0\n", ">= 1"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_config(bad)


SMALL = SampleConfig(customers=300, items=120, categories=6, brands=10, days=60)
FAST = TrainConfig(algorithm="als", als=AlsParams(factors=16, iterations=5))


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sample")
    write_sample(directory, SMALL)
    return directory


def test_a_customer_base_past_the_limit_ships_no_customer_table(
    sample_dir: Path, tmp_path: Path
) -> None:
    inputs = Inputs(events=[str(sample_dir / "events.csv.gz")])
    config = msgspec.structs.replace(FAST, customer_table_max_customers=10)
    arrays = artifact.load(run(inputs, tmp_path, config)).arrays
    assert len(arrays["user_ids"]) > 10 and "customer_top_rows" not in arrays


@pytest.mark.slow
def test_fit_writes_a_loadable_artifact_with_evaluation(sample_dir: Path, tmp_path: Path) -> None:
    inputs = Inputs(
        events=[str(sample_dir / "events.csv.gz")],
        items=str(sample_dir / "items.csv.gz"),
        customers=str(sample_dir / "customers.csv.gz"),
    )
    path = run(inputs, tmp_path, FAST)
    assert artifact.latest_version(tmp_path) == path.name
    loaded = artifact.load(path)
    manifest = loaded.manifest
    assert manifest.algorithm == "als" and manifest.params["factors"] == 16
    assert manifest.counts["events"] > 1000 and manifest.counts["customers_file_rows"] == 300
    assert (
        manifest.data_window is not None and manifest.data_window.start < manifest.data_window.end
    )
    assert set(manifest.popularity_channels) >= {"all", "web", "app", "store"}
    metrics = manifest.metrics
    assert metrics["als"]["customers"] > 0
    assert metrics["als"]["ndcg"] > metrics["popularity"]["ndcg"]  # it learned the taste structure
    model = FactorModel(loaded)
    assert model.category_codes  # categories came from the items file
    row = model.item_row("i00001")
    assert row is not None
    assert model.title_of(row) and model.brand_of(row) and model.price_of(row)
    assert manifest.fold_in.event_weights["purchase"] == FAST.weights.event_types["purchase"]
    assert manifest.fold_in.regularization == FAST.als.regularization
    assert loaded.arrays["user_factors"].shape[1] == 16
    # Each item's most similar items ship with the model: first the items sharing at least
    # MIN_TOGETHER customers with it, by cosine of the binary matrix's columns, best first.
    a = loaded.arrays
    taken = sp.csr_matrix(
        (np.ones(len(a["user_items_indices"])), a["user_items_indices"], a["user_items_indptr"]),
        shape=(len(a["user_ids"]), model.n_items),
    ).toarray()
    shared = taken.T @ taken
    norms = np.sqrt(np.diag(shared))
    cosine = np.where(shared >= MIN_TOGETHER, shared / np.outer(norms, norms), 0)
    np.fill_diagonal(cosine, 0)
    # Each customer's best items ship too, without what they bought (service/customer_table.py).
    best = a["customer_top_rows"]
    assert best.shape == (len(a["user_ids"]), min(CUSTOMER_KEPT, model.n_items))
    for user in range(0, len(best), 13):
        assert best[user].min() >= 0
        assert not set(best[user].tolist()) & set(model.bought_rows(user).tolist())
        expected, _ = model.recommend(
            model.user_vector(user), best.shape[1], exclude=model.bought_rows(user)
        )
        assert best[user].tolist() == expected.tolist()
    rows, scores = a["similar_rows"], a["similar_scores"]
    assert rows.shape == (model.n_items, min(64, model.n_items - 1))
    for item in range(0, model.n_items, 7):
        together = int(np.count_nonzero(cosine[item] > 0))
        assert together > 0  # in the sample every item shares customers with others
        best = np.sort(cosine[item])[::-1][: min(together, rows.shape[1])]
        np.testing.assert_allclose(scores[item, : len(best)], best, rtol=1e-5)
        np.testing.assert_allclose(cosine[item, rows[item, : len(best)]], best, rtol=1e-5)


@pytest.mark.slow
def test_a_purchase_in_store_is_not_recommended_on_the_web(
    sample_dir: Path, tmp_path: Path, settings: Settings
) -> None:
    """Train for real, serve it, buy the top web item in store: it leaves the web list."""
    run(Inputs(events=[str(sample_dir / "events.csv.gz")]), tmp_path / "models", FAST)
    with client_for(replace(settings, model_dir=str(tmp_path / "models"))) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        customer = "c00001"
        first = client.get(
            f"/v1/customers/{customer}/recommendations", params={"channel": "web", "k": 5}
        )
        assert first.status_code == 200 and first.json()["fallback"] is False
        top = first.json()["items"][0]["item_id"]
        event = {
            "customer_id": customer,
            "item_id": top,
            "event_type": "purchase",
            "channel": "store",
        }
        assert client.post("/v1/events", json=event).status_code == 202
        after = client.get(
            f"/v1/customers/{customer}/recommendations", params={"channel": "web", "k": 5}
        )
        assert top not in [i["item_id"] for i in after.json()["items"]]


@pytest.mark.slow
def test_the_held_out_item_of_a_checkerboard_is_ranked_first(tmp_path: Path) -> None:
    """Even customers like even items, odd ones odd items; each customer's diagonal is withheld.

    Two factors are enough for the two tastes, and too few to memorise single cells.
    """
    rows = [
        {"customer_id": f"c{u}", "item_id": f"i{i}", "event_type": "purchase"}
        for u in range(40)
        for i in range(20)
        if u % 2 == i % 2 and i != u % 20
    ]
    path = tmp_path / "events.csv"
    header = "customer_id,item_id,event_type,channel,timestamp\n"
    path.write_text(
        header
        + "".join(
            f"{r['customer_id']},{r['item_id']},purchase,web,2026-10-01T00:00:00Z\n" for r in rows
        )
    )
    version = run(
        Inputs(events=[str(path)]),
        tmp_path / "models",
        TrainConfig(algorithm="als", als=AlsParams(factors=2, iterations=10)),
    )
    model = FactorModel(artifact.load(version))
    for u in range(2, 20, 2):
        row = model.user_row(f"c{u}")
        rows_, _ = model.recommend(model.user_vector(row), 1, exclude=model.bought_rows(row))  # type: ignore[arg-type]
        assert model.item_id(int(rows_[0])) == f"i{u}"


def test_the_cli_fails_with_one_clear_line_on_a_bad_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "events.csv.gz"
    bad.write_bytes(gzip.compress(b"customer_id,item_id\n")[:10])
    assert main(["fit", "--events", str(bad), "--model-dir", str(tmp_path / "m")]) == 1
    assert str(bad) in caplog.text
    assert artifact.latest_version(tmp_path / "m") is None


def test_reject_mode_refuses_a_file_with_a_bad_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = tmp_path / "events.csv"
    events.write_text(
        "customer_id,item_id,event_type,channel,timestamp\n"
        "c1,i1,purchase,web,2026-10-01T00:00:00Z\n"
        "c1,i2,purchase,fax,2026-10-02T00:00:00Z\n"
    )
    argv = ["fit", "--events", str(events), "--model-dir", str(tmp_path / "m"), "--no-progress"]
    assert main([*argv, "--on-bad-rows", "reject"]) == 1
    assert "fax" in caplog.text and ":3" in caplog.text  # file:line of the bad row
    assert artifact.latest_version(tmp_path / "m") is None


def test_bootstrap_generates_data_and_a_model_only_when_missing(tmp_path: Path) -> None:
    data, models = tmp_path / "sample", tmp_path / "models"
    argv = ["bootstrap", "--data-dir", str(data), "--model-dir", str(models)]
    assert main(argv) == 0
    first = artifact.latest_version(models)
    assert first is not None and (data / "events.csv.gz").is_file()
    assert main(argv) == 0
    assert artifact.latest_version(models) == first  # nothing retrained


def test_fit_help_documents_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    for option in (
        "--events",
        "--items",
        "--customers",
        "--model-dir",
        "--config",
        "--on-bad-rows",
    ):
        assert option in out


def test_the_service_serves_what_training_wrote(
    sample_dir: Path, tmp_path: Path, settings: Settings
) -> None:
    """The contract between the two halves: an artifact from the CLI loads in the service."""
    models = tmp_path / "cli-models"
    config = tmp_path / "fast.toml"
    config.write_text("[als]\nfactors = 8\niterations = 3\n[evaluation]\nholdout_fraction = 0\n")
    argv = [
        "fit",
        "--events",
        str(sample_dir / "events.csv.gz"),
        "--model-dir",
        str(models),
        "--config",
        str(config),
    ]
    assert main(argv) == 0
    with TestClient(
        app=__import__("service.app", fromlist=["create_app"]).create_app(
            replace(settings, model_dir=str(models))
        )
    ) as client:
        assert client.get("/health/ready").json()["status"] == "ok"


def test_the_test_report_ranks_at_most_max_customers(sample_dir: Path, tmp_path: Path) -> None:
    """A large retailer's fit ranks a seeded sample of its test customers, not all of them."""
    inputs = Inputs(events=[str(sample_dir / "events.csv.gz")])
    full = artifact.load(run(inputs, tmp_path / "all", FAST)).manifest.metrics
    assert full["als"]["customers"] > 40
    capped = msgspec.structs.replace(
        FAST, evaluation=msgspec.structs.replace(FAST.evaluation, max_customers=40)
    )
    # Also: a catalogue above similar_table_max_items ships no table.
    capped = msgspec.structs.replace(capped, similar_table_max_items=SMALL.items - 1)
    loaded = artifact.load(run(inputs, tmp_path / "capped", capped))
    assert "similar_rows" not in loaded.arrays
    metrics = loaded.manifest.metrics
    assert metrics["als"]["customers"] == 40
    assert metrics["popularity"]["customers"] == 40
    assert all(m["customers"] <= 40 for m in metrics["als"]["by_channel"].values())


def test_a_model_with_more_factors_than_items_ships_its_fold_in_products(
    sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exact item-item export has one factor per item: the artifact holds the fold-in's
    products and the service maps them instead of computing its own (one copy per machine)."""
    monkeypatch.setattr("service.foldin._PROJECT_FROM_DIM", 64)  # the sample has 120 items
    inputs = Inputs(events=[str(sample_dir / "events.csv.gz")])
    loaded = artifact.load(run(inputs, tmp_path, TrainConfig(algorithm="itemknn")))
    n_items, dim = loaded.arrays["item_factors"].shape
    assert n_items <= dim
    assert loaded.arrays["foldin_kernel"].shape == (n_items, n_items)
    model = FactorModel(loaded)
    assert np.shares_memory(model.least_squares._kernel, loaded.arrays["foldin_kernel"])
    row = model.user_row(loaded.arrays["user_ids"][0].decode())
    assert row is not None
    rows, values = confidences(model.fold_in, *model.training_row(row))
    expected = recalculate_user(
        loaded.arrays["item_factors"], gramian(loaded.arrays["item_factors"]), rows, values,
        model.fold_in,
    )  # fmt: skip
    np.testing.assert_allclose(model.least_squares.solve(rows, values), expected, atol=1e-5)


def test_a_large_catalogue_ships_its_index_calibrated(sample_dir: Path, tmp_path: Path) -> None:
    """Past ann_min_items the artifact holds the index and the probes its calibration measured."""
    inputs = Inputs(events=[str(sample_dir / "events.csv.gz")])
    small = artifact.load(run(inputs, tmp_path / "small", FAST))
    assert small.manifest.ann is None and "ann_centroids" not in small.arrays
    config = msgspec.structs.replace(FAST, ann_min_items=SMALL.items, ann_recall_target=0.9)
    loaded = artifact.load(run(inputs, tmp_path / "large", config))
    spec = loaded.manifest.ann
    assert spec is not None and "ann_centroids" in loaded.arrays
    assert spec.recall_target == 0.9 and spec.recall_at_10 >= 0.9
    assert spec.recall_at_10_similar >= 0.9 and spec.sample > 0
    # The service's default settings name no probes: the model's are used.
    model = FactorModel(loaded, ann=ann.AnnConfig(mode="on"))
    assert model.index is not None and model.index.nprobe == spec.nprobe


@pytest.mark.parametrize("n_items", [7, 500, 92_000])
@pytest.mark.parametrize("tied", [False, True])
def test_each_rows_best_columns_in_order(n_items: int, tied: bool) -> None:
    rng = np.random.default_rng(n_items)
    scores = rng.standard_normal((6, n_items)).astype(np.float32)
    if tied:  # most columns alike, as a popularity's zeros, and some ruled out
        scores[:, rng.random(n_items) < 0.9] = 0.0
        scores[:, : n_items // 3 : 2] = -np.inf
    k = min(10, n_items)
    best = evaluate.best_per_row(scores, k)
    for row, found in zip(scores, best, strict=True):
        assert len(set(found.tolist())) == k
        assert row[found].tolist() == sorted(row.tolist(), reverse=True)[:k]  # best first
    unordered = evaluate.best_per_row(scores, k, ordered=False)
    assert [set(u.tolist()) for u in unordered] == [set(b.tolist()) for b in best]
    # A broadcast row (the popularity scorer's) read in columns gives the same.
    broadcast = np.array(np.broadcast_to(scores[0], scores.shape))
    assert (evaluate.best_per_row(broadcast, k) == best[0]).all()


def test_rank_leaves_out_what_each_customer_bought() -> None:
    factors = np.eye(4, dtype=np.float32)
    users = np.array([[4, 3, 2, 1], [1, 2, 3, 4]], dtype=np.float32)
    bought = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float32))
    ranked = evaluate.rank(evaluate.factor_scorer(users, factors), np.array([0, 1]), bought, 2)
    assert ranked == [[1, 2], [2, 1]]
