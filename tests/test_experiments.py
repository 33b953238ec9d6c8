"""Deterministic, consistent assignment of customers to experiment variants."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from service import experiments
from service.experiments import Experiment, Variant

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def experiment(exp_id: str = "exp1", **kw: object) -> Experiment:
    variants = [Variant(name="control"), Variant(name="treatment")]
    return Experiment(experiment_id=exp_id, variants=variants, **kw)  # type: ignore[arg-type]


def test_assignment_is_stable_across_processes() -> None:
    """It does not depend on Python's salted hash(): a new interpreter agrees."""
    customers = [f"c{i}" for i in range(20)]
    here = [experiments.assign(experiment(), c).name for c in customers]
    code = (
        "from service import experiments as e\n"
        "x = e.Experiment(experiment_id='exp1', variants=[e.Variant(name='control'),"
        " e.Variant(name='treatment')])\n"
        f"print(','.join(e.assign(x, c).name for c in {customers!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().split(",") == here


def test_the_split_follows_the_weights() -> None:
    exp = Experiment(
        experiment_id="split",
        variants=[Variant(name="a", weight=9), Variant(name="b", weight=1)],
    )
    names = [experiments.assign(exp, f"customer-{i}").name for i in range(10_000)]
    assert names.count("b") / len(names) == pytest.approx(0.1, abs=0.01)


def test_assignment_depends_on_the_experiment() -> None:
    customers = [f"c{i}" for i in range(200)]
    a = [experiments.assign(experiment("a"), c).name for c in customers]
    b = [experiments.assign(experiment("b"), c).name for c in customers]
    assert a != b


def test_choose_is_the_same_on_every_covered_channel() -> None:
    exps = [experiment(channels=["web", "store"])]
    for customer in ("c1", "c2", "c3"):
        web = experiments.choose(exps, "web", customer, NOW)
        store = experiments.choose(exps, "store", customer, NOW)
        assert web is not None and web == store
    assert experiments.choose(exps, "email", "c1", NOW) is None


def test_start_and_stop_bound_an_experiment() -> None:
    exp = experiment(start=NOW, stop=NOW + timedelta(days=1))
    assert experiments.is_running(exp, "web", NOW)
    assert not experiments.is_running(exp, "web", NOW - timedelta(seconds=1))
    assert not experiments.is_running(exp, "web", NOW + timedelta(days=1))


@pytest.mark.parametrize(
    "body",
    [
        {"variants": [{"name": "a"}]},
        {"variants": [{"name": "a"}, {"name": "a"}]},
        {"variants": [{"name": "a"}, {"name": "b", "weight": 0}]},
        # Two weights of 1e308 summed to infinity and sent every customer to the last variant.
        {"variants": [{"name": "a", "weight": 1e308}, {"name": "b", "weight": 1e308}]},
        {"variants": [{"name": "a"}, {"name": "b"}], "channels": ["moon"]},
    ],
)
def test_invalid_configs_are_rejected(body: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(body, experiments.ExperimentConfig)
