"""Erased customers' events are dropped wherever the suppression files lie with the event files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service import artifact
from service.events import CLOCK_SKEW
from service.store.erasure import customer_hash
from training.__main__ import main
from training.config import AlsParams, Evaluation, TrainConfig
from training.errors import TrainingError
from training.pipeline import Inputs, read_events, run
from training.suppression import suppression_files

ROWS = [
    {
        "customer_id": customer,
        "item_id": f"i{n}",
        "event_type": "purchase",
        "channel": "web",
        "timestamp": f"2026-09-02T0{n}:00:00Z",
    }
    for customer in ("keep", "erased")
    for n in range(3)
]
BEFORE = "2026-09-01T00:00:00+00:00"


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """The exporter's layout: exp/events/_suppressions.json beside date=… partitions."""
    events = tmp_path / "exp" / "events"
    part = events / "date=2026-09-02" / "part-1-100.parquet"
    part.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS), part)
    (events / "_suppressions.json").write_text(json.dumps({"sha256": [customer_hash("erased")]}))
    return tmp_path / "exp"


def customers(events: list[Path], suppressions: Path | None = None) -> set[str]:
    inputs = Inputs(
        events=[str(p) for p in events], suppressions=str(suppressions) if suppressions else None
    )
    table, _ = read_events(inputs)
    return set(table["customer_id"].to_pylist())


@pytest.mark.parametrize(
    "given",
    [
        "exp",  # a folder above the suppressions
        "exp/events",  # the exporter's --out
        "exp/events/date=2026-09-02",  # one partition
        "exp/events/date=2026-09-02/part-1-100.parquet",  # one part file
    ],
)
def test_the_exports_suppressions_apply_however_its_files_are_given(
    export: Path, given: str
) -> None:
    assert customers([export.parent / given]) == {"keep"}


def test_a_suppressions_file_outside_the_layout_is_not_guessed(tmp_path: Path) -> None:
    """Only partition folders lead upwards: a plain folder's parent is not searched."""
    (tmp_path / "_suppressions.json").write_text(json.dumps({"sha256": [customer_hash("x")]}))
    data = tmp_path / "plain" / "e.parquet"
    data.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS), data)
    assert suppression_files([data]) == []


def test_a_named_suppressions_file_must_exist(export: Path) -> None:
    with pytest.raises(TrainingError, match=r"nope\.json: no such suppressions file"):
        customers([export], export / "nope.json")


def test_a_named_suppressions_file_applies_to_any_events(export: Path, tmp_path: Path) -> None:
    part = next(export.rglob("*.parquet"))
    (export / "events" / "_suppressions.json").unlink()
    assert customers([part]) == {"keep", "erased"}
    named = tmp_path / "erased.json"
    named.write_text(json.dumps({"sha256": [customer_hash("erased")]}))
    assert customers([part], named) == {"keep"}


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        "[]",
        "customer_id\nerased\n",
        '{"sha256": ["erased"]}',
        '{"sha256": "ab"}',
        '{"as_of": "2026-11-01T00:00:00Z"}',  # no list
        '{"erased_at": {"ab": "2026-11-01T00:00:00Z"}}',  # not a hash
        '{"erased_at": {"%s": "2026-11-01T00:00:00"}}' % ("0" * 64),  # a time without its zone
    ],
)
def test_a_malformed_suppressions_file_is_an_error_naming_it(
    export: Path, text: str, tmp_path: Path
) -> None:
    bad = export / "events" / "_suppressions.json"
    bad.write_text(text)
    with pytest.raises(TrainingError, match=rf"{bad}: not a suppressions file"):
        customers([export])
    argv = ["fit", "--events", str(export), "--model-dir", str(tmp_path / "m")]
    assert main(argv) == 1
    assert not (tmp_path / "m").exists()


ERASED_AT = datetime(2026, 11, 2, 12, tzinfo=UTC)
SKEW = CLOCK_SKEW + timedelta(minutes=1)


def stream_id(when: datetime) -> str:
    return f"{int(when.timestamp() * 1000)}-0"


@pytest.mark.parametrize(
    ("timestamp", "recorded", "kept"),
    [
        (-1, -1, False),  # before the erasure
        (+1, -1, False),  # sent before it by a client clock running ahead
        (-1, +1, False),  # sent after it but dated before it: a late sync of the erased past
        (+1, +1, True),  # the customer come back
        (+1, None, False),  # from elsewhere, within a client clock's skew of the erasure
        (SKEW, None, True),  # from elsewhere, surely after it
    ],
)
def test_an_erased_customers_events_are_kept_only_when_both_times_are_after_the_erasure(
    tmp_path: Path, timestamp: int | timedelta, recorded: int | None, kept: bool
) -> None:
    def at(offset: int | timedelta) -> datetime:
        return ERASED_AT + (offset if isinstance(offset, timedelta) else timedelta(hours=offset))

    row = {**ROWS[3], "timestamp": at(timestamp).isoformat()}
    if recorded is not None:
        row["stream_id"] = stream_id(at(recorded))
    others = [{**r, "stream_id": stream_id(ERASED_AT)} for r in ROWS[:3]]
    pq.write_table(pa.Table.from_pylist([row, *others]), tmp_path / "part.parquet")
    erased = {"erased_at": {customer_hash("erased"): ERASED_AT.isoformat()}}
    (tmp_path / "_suppressions.json").write_text(json.dumps(erased))
    assert customers([tmp_path]) == ({"keep", "erased"} if kept else {"keep"})


def test_a_list_of_the_first_format_still_drops_every_event_of_its_customers(
    tmp_path: Path,
) -> None:
    """It holds no erasure times: nothing erased before resurfaces, however late."""
    late = datetime.now(UTC)
    rows = [{**r, "timestamp": late.isoformat(), "stream_id": stream_id(late)} for r in ROWS]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "part.parquet")
    first = {"sha256": [customer_hash("erased")]}
    (tmp_path / "_suppressions.json").write_text(json.dumps(first))
    assert customers([tmp_path]) == {"keep"}
    # Beside a list with a time for the same customer, the first format's still wins.
    dated = {"as_of": late.isoformat(), "erased_at": {customer_hash("erased"): BEFORE}}
    (tmp_path / "dated.json").write_text(json.dumps(dated))
    assert customers([tmp_path], tmp_path / "dated.json") == {"keep"}
    (tmp_path / "_suppressions.json").unlink()
    assert customers([tmp_path], tmp_path / "dated.json") == {"keep", "erased"}


def test_the_model_records_the_time_of_the_latest_erasure_list_it_honoured(
    export: Path, tmp_path: Path
) -> None:
    """The service treats a customer erased at or after it as a stranger to the model."""
    older, newer = "2026-11-01T00:00:00+00:00", "2026-11-03T00:00:00+00:00"
    lists = [export / "events" / "_suppressions.json", tmp_path / "named.json"]
    for file, as_of in zip(lists, [newer, older], strict=True):
        file.write_text(json.dumps({"as_of": as_of, "erased_at": {}}))
    config = TrainConfig(
        algorithm="als", als=AlsParams(factors=2, iterations=1), evaluation=Evaluation(0)
    )
    path = run(Inputs(events=[str(export)], suppressions=str(lists[1])), tmp_path / "m", config)
    assert artifact.load(path).manifest.erasures_as_of == datetime.fromisoformat(newer)
    for file in lists:
        file.write_text(json.dumps({"sha256": []}))
    path = run(Inputs(events=[str(export)], suppressions=str(lists[1])), tmp_path / "m", config)
    assert artifact.load(path).manifest.erasures_as_of is None
