"""``python -m benchmarks.hot_path``: each step of a request timed over a sample of customers,
for a generated catalogue or a trained model's folder, printed and written as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import hot_path
from benchmarks.catalogue import write_catalogue

COMPONENT_STEP = "item-item component's sums (of the history)"


def _run(tmp_path: Path, redis_url: str, *args: str) -> dict:
    out = tmp_path / "hot_path.json"
    argv = [*args, "--customers", "20", "--redis-url", redis_url, "--out", str(out)]
    assert hot_path.main(argv) == 0
    return json.loads(out.read_text())


def test_a_trained_folder_with_an_item_item_component_gets_its_own_step(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    write_catalogue(models, 2_000, 300, neighbours=20)
    report = _run(tmp_path, redis_url, "--trained", str(models))
    shape, steps = report["model"], report["us_per_request"]
    assert (shape["items"], shape["customers"], shape["sampled_customers"]) == (2_000, 300, 20)
    assert shape["component"].startswith(("dense", "sparse"))
    assert COMPONENT_STEP in steps
    assert all(us > 0 for us in steps.values()), steps
    # The whole ranking holds its parts: the fold-in and the scoring (component included).
    whole = steps["recommend.for_customer (rules + fold-in + scoring)"]
    assert whole > steps[COMPONENT_STEP]
    printed = capsys.readouterr().out
    assert f"| {COMPONENT_STEP} |" in printed and "2,000 items" in printed


def test_a_generated_catalogue_without_a_component_has_no_such_step(
    tmp_path: Path, redis_url: str
) -> None:
    report = _run(tmp_path, redis_url, "--items", "1500", "--users", "200")
    assert report["model"]["component"] is None
    assert report["model"]["index"] is None  # 1,500 items: exact scoring
    assert COMPONENT_STEP not in report["us_per_request"]
    assert "Redis customer_state (1 round trip)" in report["us_per_request"]
