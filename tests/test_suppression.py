"""Erased customers' events are dropped wherever the suppression files lie with the event files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.store.erasure import customer_hash
from training.__main__ import main
from training.errors import TrainingError
from training.pipeline import Inputs, read_events
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
    "text", ["{}", "[]", "customer_id\nerased\n", '{"sha256": ["erased"]}', '{"sha256": "ab"}']
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
