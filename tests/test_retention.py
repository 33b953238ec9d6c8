"""Model versions on disk: ``fit --keep-versions`` and ``python -m training prune``."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service import artifact
from tests.builders import checkerboard_artifact
from training.__main__ import main
from training.retention import STALE_AFTER_S, prune
from training.sample import SampleConfig, write_sample

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)


def versions(model_dir: Path, n: int) -> list[str]:
    """``n`` versions, oldest first, each made LATEST as it is saved (as ``fit`` does)."""
    names = [f"v{i}" for i in range(n)]
    for i, name in enumerate(names):
        checkerboard_artifact(model_dir, version=name, created_at=DAY0 + timedelta(days=i))
    return names


def on_disk(model_dir: Path) -> set[str]:
    return {p.name for p in model_dir.iterdir()}


def test_the_newest_versions_stay_and_the_older_ones_go(tmp_path: Path) -> None:
    names = versions(tmp_path, 5)
    report = prune(tmp_path, keep=2)
    assert report.removed == ["v2", "v1", "v0"]
    assert report.kept == ["v4", "v3"]
    assert on_disk(tmp_path) == {"v4", "v3", artifact.LATEST}
    assert report.bytes_freed > 0
    # What remains loads, and LATEST still names the newest.
    assert artifact.load(artifact.resolve(tmp_path)).manifest.model_version == names[-1]


def test_the_version_latest_names_stays_after_a_rollback(tmp_path: Path) -> None:
    versions(tmp_path, 5)
    artifact.set_latest(tmp_path, "v0")  # rolled back to the oldest
    report = prune(tmp_path, keep=1)
    assert report.kept == ["v4", "v0"]
    assert on_disk(tmp_path) == {"v4", "v0", artifact.LATEST}
    assert artifact.load(artifact.resolve(tmp_path)).manifest.model_version == "v0"


def test_what_is_not_a_readable_version_is_never_touched(tmp_path: Path) -> None:
    versions(tmp_path, 3)
    (tmp_path / "being-copied").mkdir()  # a version's folder still arriving: no manifest yet
    (tmp_path / "notes.txt").write_text("ours")
    broken = tmp_path / "v-broken"
    broken.mkdir()
    (broken / artifact.MANIFEST).write_text("{not json")
    prune(tmp_path, keep=1)
    assert on_disk(tmp_path) == {"v2", artifact.LATEST, "being-copied", "notes.txt", "v-broken"}


def test_a_dry_run_says_what_would_go_and_removes_nothing(tmp_path: Path) -> None:
    versions(tmp_path, 4)
    before = on_disk(tmp_path)
    dry = prune(tmp_path, keep=2, dry_run=True)
    assert on_disk(tmp_path) == before
    assert prune(tmp_path, keep=2) == dry


def test_leftovers_of_interrupted_work_go_once_stale(tmp_path: Path) -> None:
    versions(tmp_path, 1)
    old = time.time() - STALE_AFTER_S - 60
    killed_fit = tmp_path / ".tmp-killed"  # a fit killed while writing its artifact
    killed_fit.mkdir()
    (killed_fit / "item_factors.npy").write_bytes(b"x" * 1000)
    half_latest = tmp_path / ".LATEST-abc"
    half_latest.write_text("v0")
    for path in (killed_fit / "item_factors.npy", killed_fit, half_latest):
        os.utime(path, (old, old))
    writing = tmp_path / ".tmp-now"  # a concurrent fit writing right now
    writing.mkdir()
    (writing / "item_factors.npy").write_bytes(b"x")
    interrupted = tmp_path / ".pruned-v-1"  # a prune interrupted after its rename
    interrupted.mkdir()
    report = prune(tmp_path, keep=1)
    assert sorted(report.leftovers_removed) == [".LATEST-abc", ".pruned-v-1", ".tmp-killed"]
    assert on_disk(tmp_path) == {"v0", artifact.LATEST, ".tmp-now"}


def test_a_removed_version_is_never_seen_half_deleted(tmp_path: Path) -> None:
    """A worker falling back lists versions; the renamed folder is not one of them."""
    versions(tmp_path, 2)
    hidden = tmp_path / ".pruned-v0"
    os.rename(tmp_path / "v0", hidden)  # the moment between a prune's rename and its delete
    assert artifact.versions_newest_first(tmp_path) == ["v1"]


def test_keep_must_be_at_least_one(tmp_path: Path) -> None:
    versions(tmp_path, 1)
    with pytest.raises(ValueError, match="at least 1"):
        prune(tmp_path, keep=0)
    with pytest.raises(SystemExit) as exited:
        main(["prune", "--model-dir", str(tmp_path), "--keep", "0"])
    assert exited.value.code == 2
    assert main(["prune", "--model-dir", str(tmp_path / "missing")]) == 1
    assert on_disk(tmp_path) == {"v0", artifact.LATEST}


def test_the_prune_command_prints_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    versions(tmp_path, 3)
    assert main(["prune", "--model-dir", str(tmp_path), "--keep", "1", "--dry-run"]) == 0
    assert '"removed":["v1","v0"]' in capsys.readouterr().out
    assert on_disk(tmp_path) == {"v0", "v1", "v2", artifact.LATEST}
    assert main(["prune", "--model-dir", str(tmp_path), "--keep", "1"]) == 0
    assert on_disk(tmp_path) == {"v2", artifact.LATEST}


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data")
    small = SampleConfig(customers=150, items=40, categories=4, brands=5, days=40, seed=3)
    return write_sample(data, small)["events"]


def fit(events: Path, model_dir: Path, *extra: str) -> int:
    argv = ["fit", "--events", str(events), "--model-dir", str(model_dir), "--no-progress"]
    return main([*argv, "--config", str(_fast_config(model_dir.parent)), *extra])


def _fast_config(folder: Path) -> Path:
    config = folder / "fast.toml"
    config.write_text('algorithm = "als"\n[als]\niterations = 2\nfactors = 4\n')
    return config


def test_fit_keeps_the_newest_versions(events: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    for _ in range(3):
        assert fit(events, models, "--keep-versions", "2", "--force") == 0
    left = artifact.versions_newest_first(models)
    assert len(left) == 2
    assert artifact.latest_version(models) == left[0]


def test_fit_keeps_every_version_with_zero(events: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    for _ in range(3):
        assert fit(events, models, "--keep-versions", "0", "--force") == 0
    assert len(artifact.versions_newest_first(models)) == 3
