"""The training job on awkward input: outliers in time, tiny or degenerate data, one item."""

from __future__ import annotations

import gzip
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from service import artifact
from tests.test_training import END, events_table
from training import evaluate
from training.__main__ import main
from training.config import TrainConfig, load_config
from training.experiment import SideInfo, make_period
from training.pipeline import Inputs, TrainingError, run
from training.sample import SampleConfig, write_sample
from training.selection import WorseModelError, choose, ranks_items

SMALL = SampleConfig(customers=300, items=120, categories=6, brands=10, days=60)
AUTO = TrainConfig()  # auto selection: what `python -m training fit` does
HEADER = "customer_id,item_id,event_type,channel,timestamp,quantity,price,store_id,session_id"


@pytest.fixture(scope="module")
def base_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small sample's events as plain CSV (7,868 rows over 60 days)."""
    directory = tmp_path_factory.mktemp("edges")
    events = write_sample(directory, SMALL)["events"]
    path = directory / "base.csv"
    path.write_bytes(gzip.decompress(events.read_bytes()))
    return path


def with_rows(base: Path, out: Path, *rows: str) -> Path:
    out.write_text(base.read_text() + "".join(f"{r}\n" for r in rows))
    return out


def only(base: Path, out: Path, keep: object) -> Path:
    lines = base.read_text().splitlines()
    out.write_text("\n".join([lines[0], *filter(keep, lines[1:])]) + "\n")
    return out


def with_field(base: Path, out: Path, column: int, value: str) -> Path:
    """``base`` with field ``column`` of every data row set to ``value``."""
    lines = base.read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    out.write_text(
        "\n".join([lines[0], *(",".join([*r[:column], value, *r[column + 1 :]]) for r in rows)])
        + "\n"
    )
    return out


def fit(path: Path, model_dir: Path, config: TrainConfig = AUTO, **options: bool) -> Path:
    return run(Inputs(events=[str(path)]), model_dir, config, **options)


def test_a_far_past_outlier_leaves_the_cutoff_where_the_data_put_it() -> None:
    start = datetime(2026, 9, 1, tzinfo=UTC)
    rows = [
        {
            "customer_id": f"c{n % 50}",
            "item_id": f"i{n % 7}",
            "timestamp": start + timedelta(hours=n),
        }
        for n in range(2000)
    ]
    _, _, clean = evaluate.time_split(events_table(rows), 0.1)
    outlier = {"customer_id": "c1", "item_id": "i1", "timestamp": datetime(1970, 1, 1, tzinfo=UTC)}
    past, future, cutoff = evaluate.time_split(events_table([outlier, *rows]), 0.1)
    assert cutoff == clean  # not 1970 + 90% of 57 years, before every other event
    assert past.num_rows == 1 + 1800 and future.num_rows == 200


def test_a_split_with_an_empty_side_says_so() -> None:
    table = events_table([{"customer_id": "c", "item_id": "i"}])
    with pytest.raises(evaluate.SplitError, match="no event before the cutoff"):
        evaluate.time_split(table, 0.5)
    with pytest.raises(evaluate.SplitError, match="no events"):
        evaluate.time_split(table.slice(0, 0), 0.5)


@pytest.mark.parametrize("when", ["1970-01-01T00:00:00Z", "2000-01-01", "2025-06-01T00:00:00Z"])
def test_one_far_past_row_does_not_wreck_the_evaluation(
    base_csv: Path, tmp_path: Path, when: str
) -> None:
    path = with_rows(base_csv, tmp_path / "e.csv", f"c00001,i00003,view,web,{when},1,,,x")
    metrics = artifact.load(fit(path, tmp_path / "m")).manifest.metrics
    selected = metrics["selected"]
    assert metrics[selected]["customers"] > 40
    assert metrics[selected]["ndcg"] > metrics["popularity"]["ndcg"]


def test_a_holdout_of_almost_everything_ships_popularity_and_says_why(
    base_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = msgspec.structs.replace(
        AUTO, evaluation=msgspec.structs.replace(AUTO.evaluation, holdout_fraction=0.99)
    )
    with caplog.at_level(logging.WARNING):
        loaded = artifact.load(fit(base_csv, tmp_path, config))
    assert loaded.manifest.algorithm == "popularity" and loaded.manifest.metrics == {}
    assert "nothing to select on" in caplog.text


def test_a_model_without_test_metrics_does_not_replace_one_with_them(
    base_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two customers leave nothing to validate on: the model is popularity, without metrics, and
    it replaces a measured LATEST only with --force."""
    good = fit(base_csv, tmp_path)
    few = only(base_csv, tmp_path / "few.csv", lambda line: int(line[1:6]) <= 2)
    with caplog.at_level(logging.WARNING), pytest.raises(WorseModelError, match="no test NDCG"):
        fit(few, tmp_path)
    assert "nothing to select on" in caplog.text
    assert artifact.latest_version(tmp_path) == good.name
    forced = artifact.load(fit(few, tmp_path, force=True))
    assert artifact.latest_version(tmp_path) == forced.path.name
    assert forced.manifest.algorithm == "popularity" and forced.manifest.metrics == {}


@pytest.mark.parametrize("customers", [1, 2, 3, 5])
def test_a_handful_of_customers_gets_a_model(
    base_csv: Path, tmp_path: Path, customers: int
) -> None:
    """Too few to validate on: popularity (1 or 2 here); a few more: what validation chose."""
    few = only(base_csv, tmp_path / "few.csv", lambda line: int(line[1:6]) <= customers)
    loaded = artifact.load(fit(few, tmp_path))
    assert loaded.manifest.counts["customers"] == customers
    assert (loaded.manifest.algorithm == "popularity") == (not loaded.manifest.metrics)


@pytest.mark.parametrize("event_type", ["email_open", "return"])
def test_events_that_all_weigh_nothing_say_so(
    base_csv: Path, tmp_path: Path, event_type: str
) -> None:
    path = with_field(base_csv, tmp_path / "zero.csv", 2, event_type)
    with pytest.raises(TrainingError, match="no event has a positive weight"):
        fit(path, tmp_path / "m")
    assert artifact.latest_version(tmp_path / "m") is None


@pytest.mark.parametrize(
    "rows",
    [
        ["c1,i1,view,web,2026-09-03T00:00:00Z,1,,,"],
        [f"c{n},i1,purchase,web,2026-09-{1 + n:02d}T00:00:00Z,1,,," for n in range(20)],
    ],
)
def test_a_catalogue_of_one_item_gives_a_model(tmp_path: Path, rows: list[str]) -> None:
    path = tmp_path / "one.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    loaded = artifact.load(fit(path, tmp_path / "m", force=True))
    assert loaded.arrays["item_ids"].tolist() == [b"i1"]
    assert loaded.arrays["similar_rows"].shape == (1, 0)


def test_a_part_that_scores_every_item_alike_is_never_selected() -> None:
    """Content affinity without catalogue features scores every item 0, so it ranks by catalogue
    order. Here that order puts first the item customers take next, which popularity ranks last:
    such a part would win validation by luck and ship the same items to everyone."""
    past = [{"customer_id": "c0", "item_id": "z", "timestamp": END - timedelta(days=10)}]
    past += [
        {"customer_id": f"c{c}", "item_id": f"p{i}", "timestamp": END - timedelta(days=9)}
        for i in range(12)
        for c in range(1, 7)
    ]
    future = [
        {"customer_id": f"c{c}", "item_id": "z", "event_type": "purchase", "timestamp": END}
        for c in range(1, 7)
    ]
    parts = ["popularity", "attributes"]
    config = msgspec.structs.replace(
        AUTO,
        selection=msgspec.structs.replace(
            AUTO.selection, candidates=[*parts, "blend"], blend_parts=parts
        ),
    )
    period = make_period(events_table(past), events_table(future), config, SideInfo())
    choice = choose(period, config)
    assert not ranks_items(choice.fitted["attributes"])
    assert choice.algorithm in ("popularity", "blend")
    assert "attributes" not in choice.validation
    assert choice.blend_weights.get("attributes", 0.0) == 0.0


def test_a_real_fit_without_catalogue_features_ships_no_flat_blend(
    base_csv: Path, tmp_path: Path
) -> None:
    weights = artifact.load(fit(base_csv, tmp_path)).manifest.metrics["blend_weights"]
    assert "attributes" not in weights and any(w > 0 for w in weights.values())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--trials", "0"], "argument --trials: '0' is not a whole number of at least 1"),
        (["--weight-trials", "-1"], "argument --weight-trials: '-1' is not a whole number"),
        (["--models", "nosuch"], "argument --models: 'nosuch' cannot be tuned; one of"),
        (["--models", "blend"], "argument --models: 'blend' cannot be tuned"),
    ],
)
def test_tune_refuses_bad_arguments_by_name(
    base_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    argv = ["tune", "--events", str(base_csv), "--out", str(tmp_path / "t.toml"), *options]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_tune_on_events_at_one_instant_says_there_is_nothing_to_tune_on(
    base_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = with_field(base_csv, tmp_path / "instant.csv", 4, "2026-10-15T00:00:00Z")
    out = tmp_path / "t.toml"
    with caplog.at_level(logging.ERROR):
        assert main(["tune", "--events", str(path), "--out", str(out)]) == 1
    assert "TrainingError: nothing to tune on: no event before the cutoff" in caplog.text
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("customer_id,item_id\nc1,i1\n", "Expected '=' after a key"),
        ("[selection]\ncandidates = []\n", "length >= 1 - at `$.selection.candidates`"),
    ],
)
def test_a_config_file_that_is_not_one_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(f"{path}: ") + ".*" + re.escape(message)):
        load_config(path)


FAST = 'algorithm = "als"\n[als]\nfactors = 8\niterations = 2\n'


def fitted(tmp_path: Path, name: str, events: Path) -> artifact.Artifact:
    config = tmp_path / "fast.toml"
    config.write_text(FAST)
    models = tmp_path / name
    argv = ["fit", "--events", str(events), "--model-dir", str(models), "--config", str(config)]
    assert main(argv) == 0
    return artifact.load(artifact.resolve(models), verify_checksums=False)


def test_a_warehouse_export_trains_as_the_reference_file_does(
    base_csv: Path, tmp_path: Path
) -> None:
    """Upper-case headers, capitalised event types, Unix milliseconds, gzipped under a plain
    name: the same events, ids and window as the reference format."""
    lines = base_csv.read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    for row in rows:
        row[2] = row[2].title()
        when = datetime.fromisoformat(row[4].replace("Z", "+00:00"))
        row[4] = str(int(when.timestamp() * 1000))
    export = tmp_path / "export.csv"
    text = "\n".join([lines[0].upper(), *(",".join(row) for row in rows)]) + "\n"
    export.write_bytes(gzip.compress(text.encode()))

    reference, warehouse = fitted(tmp_path, "a", base_csv), fitted(tmp_path, "b", export)

    assert warehouse.manifest.counts == reference.manifest.counts
    assert warehouse.manifest.data_window == reference.manifest.data_window
    for name in ("user_ids", "item_ids"):
        assert (warehouse.arrays[name] == reference.arrays[name]).all()


def test_a_file_of_only_bad_rows_fails_in_one_line_saying_why(
    base_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = with_field(base_csv, tmp_path / "pounds.csv", 6, "£2.55")
    argv = ["fit", "--events", str(path), "--model-dir", str(tmp_path / "m")]

    with caplog.at_level(logging.ERROR):
        assert main(argv) == 1

    rows = len(path.read_text().splitlines()) - 1
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error == (
        f"TrainingError: no valid events in {path}: {rows} bad row(s), the first "
        f"{path}:2: price '£2.55' is not a number"
    )


def test_a_folder_without_event_files_says_so(tmp_path: Path) -> None:
    (tmp_path / "events.tsv").write_text("customer_id\titem_id\n")

    with pytest.raises(TrainingError, match=r"no .csv, .csv.gz or .parquet file there"):
        fit(tmp_path, tmp_path / "m")
