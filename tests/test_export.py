"""The exporter: Redis Stream to Parquet, each acknowledged event exactly once, crashes included."""

from __future__ import annotations

import os
import stat
import threading
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis
from litestar.testing import TestClient

from service import artifact
from service.ranking import FactorModel
from service.settings import Settings
from training.__main__ import main
from training.config import AlsParams, Evaluation, TrainConfig
from training.export import SUPPRESSIONS_FILE, Exporter
from training.loaders import load_events
from training.pipeline import Inputs, drop_suppressed, run, suppressions


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """The export folder (apart from the models the client fixture keeps in tmp_path)."""
    return tmp_path / "export"


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs, no cleanup."""


def post_events(
    client: TestClient, n: int, customer: str = "c1", days: tuple[int, ...] = (1, 2)
) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, 100):
        batch = [
            {
                "customer_id": customer,
                "item_id": f"i{k % 7}",
                "event_type": "view",
                "channel": "web",
                "timestamp": f"2026-10-0{days[k % len(days)]}T10:{k % 60:02d}:00Z",
            }
            for k in range(start, min(start + 100, n))
        ]
        response = client.post("/v1/events", json=batch)
        assert response.status_code == 202, response.text
        ids.extend(response.json()["ids"])
    return ids


def exported_ids(out: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for file in out.rglob("*.parquet"):
        counts.update(pq.read_table(file, columns=["stream_id"])["stream_id"].to_pylist())
    return counts


def exporter(redis_url: str, settings: Settings, out: Path, **kwargs: object) -> Exporter:
    return Exporter(redis.Redis.from_url(redis_url), out, prefix=settings.key_prefix, **kwargs)  # type: ignore[arg-type]


def test_every_event_is_exported_once_into_date_partitions(
    client: TestClient, settings: Settings, redis_url: str, out: Path
) -> None:
    ids = post_events(client, 250)
    report = exporter(redis_url, settings, out, batch=100).run()
    assert report.exported == 250
    counts = exported_ids(out)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "date=2026-10-01",
        "date=2026-10-02",
    ]
    # The loaders read the export back as events, with the same contract.
    events, _ = load_events([out])
    assert events.num_rows == 250
    # A second run finds nothing new, and the stream was trimmed of what was exported.
    assert exporter(redis_url, settings, out).run().exported == 0
    assert redis.Redis.from_url(redis_url).xlen(f"{settings.key_prefix}:events") <= 1


def test_exported_files_are_readable_by_the_training_jobs_user(
    client: TestClient, settings: Settings, redis_url: str, out: Path
) -> None:
    post_events(client, 10)
    before = os.umask(0o022)
    try:
        exporter(redis_url, settings, out).run()
    finally:
        os.umask(before)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}


@pytest.mark.parametrize("crash_after_files", [1, 2])
def test_a_crash_in_the_middle_of_a_batch_loses_and_duplicates_nothing(
    client: TestClient, settings: Settings, redis_url: str, out: Path, crash_after_files: int
) -> None:
    """Each batch spans two days (two files); the process dies after one or after both files."""
    ids = post_events(client, 120)
    written = []

    def die(path: Path) -> None:
        written.append(path)
        if len(written) == crash_after_files:
            raise Crash

    with pytest.raises(Crash):
        exporter(redis_url, settings, out, batch=50, consumer="a", on_file_written=die).run()
    report = exporter(redis_url, settings, out, batch=50, consumer="a").run()
    assert report.recovered_batches == 1
    counts = exported_ids(out)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1


def test_a_crashed_consumers_batch_is_taken_over_by_another(
    client: TestClient, settings: Settings, redis_url: str, out: Path
) -> None:
    ids = post_events(client, 80)
    with pytest.raises(Crash):
        exporter(
            redis_url,
            settings,
            out,
            batch=30,
            consumer="dead",
            on_file_written=lambda p: (_ for _ in ()).throw(Crash()),
        ).run()
    exporter(redis_url, settings, out, batch=30, consumer="heir", claim_idle_seconds=0).run()
    counts = exported_ids(out)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1


def test_concurrent_exporters_split_the_work_without_duplicates(
    client: TestClient, settings: Settings, redis_url: str, out: Path
) -> None:
    ids = post_events(client, 600)
    threads = [
        threading.Thread(target=exporter(redis_url, settings, out, batch=25, consumer=f"w{n}").run)
        for n in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = exported_ids(out)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1


def test_erased_and_non_consenting_customers_are_not_exported_nor_trained_on(
    client: TestClient, settings: Settings, redis_url: str, out: Path
) -> None:
    post_events(client, 10, customer="keep")
    post_events(client, 10, customer="refuses")
    client.put("/v1/customers/refuses/consent", json={"personalisation": False})
    first = out / "first"
    exporter(redis_url, settings, first).run()  # exported before the erasure below
    post_events(client, 10, customer="erased")
    assert client.delete("/v1/customers/keep").status_code == 200
    second = out / "second"
    report = exporter(redis_url, settings, second).run()
    assert report.exported == 10  # only "erased"'s events were still in the stream... then erased
    events, _ = load_events([first])
    assert set(events["customer_id"].to_pylist()) == {"keep"}
    # The training job drops the erased customer's already-exported events.
    hashes = suppressions(Inputs(events=[str(second)]))
    assert (second / SUPPRESSIONS_FILE).is_file()
    assert drop_suppressed(events, hashes).num_rows == 0


@pytest.mark.parametrize(
    ("environ", "flag", "exported"),
    [
        ({}, None, {"silent", "agrees"}),
        ({"RECO_DEFAULT_PERSONALISATION": "false"}, None, {"agrees"}),
        ({"DEFAULT_PERSONALISATION": "0"}, None, {"agrees"}),
        ({"RECO_DEFAULT_PERSONALISATION": "false"}, "true", {"silent", "agrees"}),
    ],
)
def test_the_export_command_follows_the_services_default_consent(
    client: TestClient,
    settings: Settings,
    redis_url: str,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str],
    flag: str | None,
    exported: set[str],
) -> None:
    """A customer who stated no consent is exported only where the service's default allows
    personalisation, as the service then personalises for them."""
    post_events(client, 3, customer="silent")
    post_events(client, 3, customer="agrees")
    client.put("/v1/customers/agrees/consent", json={"personalisation": True})
    for var in ("RECO_DEFAULT_PERSONALISATION", "DEFAULT_PERSONALISATION"):
        monkeypatch.delenv(var, raising=False)
    for var, value in environ.items():
        monkeypatch.setenv(var, value)
    args = ["export-events", "--redis-url", redis_url, "--out", str(out)]
    args += ["--prefix", settings.key_prefix]
    args += [] if flag is None else ["--default-personalisation", flag]
    assert main(args) == 0
    events, _ = load_events([out])
    assert set(events["customer_id"].to_pylist()) == exported


def test_training_on_the_export_leaves_erased_customers_out(
    client: TestClient, settings: Settings, redis_url: str, out: Path
) -> None:
    for customer in ("stays", "goes"):
        post_events(client, 30, customer=customer)
    exporter(redis_url, settings, out).run()
    assert client.delete("/v1/customers/goes").status_code == 200
    exporter(redis_url, settings, out).run()  # refreshes _suppressions.json
    config = TrainConfig(
        als=AlsParams(factors=2, iterations=2), evaluation=Evaluation(holdout_fraction=0)
    )
    model = FactorModel(
        artifact.load(run(Inputs(events=[str(out)]), out.parent / "trained", config))
    )
    assert model.user_row("stays") is not None
    assert model.user_row("goes") is None
