"""Several worker processes: how many by default, and one /metrics that counts them all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.metrics import Metrics
from service.settings import MAX_WORKERS, Settings, SettingsError, usable_cpus
from service.worker_metrics import Snapshots, clear, exposition, merge
from tests.browser import running_service, service_env
from tests.conftest import STOREFRONT_KEY


def test_workers_default_to_the_usable_cpus_and_take_a_number() -> None:
    assert Settings.from_env({}).workers == "auto"
    assert Settings.from_env({}).worker_count == usable_cpus() >= 1
    assert Settings.from_env({"RECO_WORKERS": "3"}).worker_count == 3
    assert Settings.from_env({"RECO_WORKERS": "auto"}).worker_count == usable_cpus()
    assert Settings.from_env({"RECO_WORKERS": str(MAX_WORKERS)}).worker_count == MAX_WORKERS
    for bad in ("0", "many", "-2", str(MAX_WORKERS + 1)):
        with pytest.raises(SettingsError, match=f"^RECO_WORKERS='{bad}': expected an integer"):
            Settings.from_env({"RECO_WORKERS": bad})


def test_a_cgroup_quota_caps_the_workers(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == affinity  # no cgroup files: the affinity alone
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one worker
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{(affinity + 8) * 100000} 100000\n")
    assert usable_cpus(tmp_path) == affinity  # a quota above the CPUs it may run on
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")  # cgroup v1: one CPU
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1 without a quota
    assert usable_cpus(tmp_path) == affinity


def _worker_exposition(requests: int, model: str, kept: int) -> str:
    """A real worker's exposition after ``requests`` timed recommendation requests."""
    metrics = Metrics()
    for n in range(requests):
        metrics.latency.observe(("/v1/recs", "GET", "web"), 0.002 * (n + 1))
        metrics.responses.inc(("/v1/recs", "200"))
    metrics.events.labels("view", "web").inc(requests)
    metrics.watch_state_cache(_Kept(kept))
    return metrics.render(model).decode()


class _Kept:
    """What a state cache shows the metrics (the figures only)."""

    def __init__(self, customers: int) -> None:
        self.hits, self.misses, self.customers = customers, 1, customers

    @property
    def active(self) -> bool:
        return True

    def __len__(self) -> int:
        return self.customers


def _samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for the lines of an exposition."""
    lines = [line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")]
    return {name: float(value) for name, value in lines}


def test_merged_expositions_add_counters_and_histograms_and_live_gauges() -> None:
    first, second, dead = (
        _worker_exposition(3, "v2", 10),
        _worker_exposition(2, "v1", 7),
        _worker_exposition(4, "v1", 100),
    )
    merged = _samples(exposition(merge([(first, True), (second, True), (dead, False)])))
    route = 'method="GET",route="/v1/recs"'
    assert merged[f'reco_request_duration_seconds_count{{channel="web",{route}}}'] == 9
    # 2, 4, 6 ms; 2, 4 ms; 2, 4, 6, 8 ms: six at or under 5 ms, all nine under 10 ms.
    assert merged[f'reco_request_duration_seconds_bucket{{channel="web",le="0.005",{route}}}'] == 6
    assert merged[f'reco_request_duration_seconds_bucket{{channel="web",le="0.01",{route}}}'] == 9
    assert merged[f'reco_request_duration_seconds_sum{{channel="web",{route}}}'] == pytest.approx(
        0.002 * (6 + 3 + 10)
    )
    assert merged['reco_responses_total{route="/v1/recs",status="200"}'] == 9
    assert merged['reco_events_ingested_total{channel="web",event_type="view"}'] == 9
    assert merged['reco_state_cache_reads_total{result="hit"}'] == 117  # a counter: dead counts
    assert merged["reco_state_cache_customers"] == 17  # a gauge: live workers only
    # The version each live worker serves, 1 each: both during a swap.
    assert merged['reco_model_info{version="v2"}'] == 1
    assert merged['reco_model_info{version="v1"}'] == 1
    created = [v for k, v in merged.items() if k.startswith("reco_events_ingested_created")]
    assert len(created) == 1 and created[0] <= time.time()


def test_a_scrape_answers_for_every_worker_in_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    other = Snapshots(folder, lambda: _worker_exposition(2, "v1", 0).encode())
    other.write()
    this = Snapshots(folder, lambda: b"")
    merged = _samples(this.merged(_worker_exposition(1, "v1", 0).encode()).decode())
    assert merged['reco_responses_total{route="/v1/recs",status="200"}'] == 3
    clear(folder)
    merged = _samples(this.merged(_worker_exposition(1, "v1", 0).encode()).decode())
    assert merged['reco_responses_total{route="/v1/recs",status="200"}'] == 1


def test_two_workers_serve_one_port_and_metrics_count_both(
    tmp_path: Path, model_dir: Path, redis_url: str, key_prefix: str
) -> None:
    env = service_env(redis_url, key_prefix, model_dir, workers=2)
    folder = tmp_path / "metrics"
    with running_service(env, tmp_path) as base:
        # Each worker writes its file once started: then both take connections.
        deadline = time.monotonic() + 30
        while len(list(folder.glob("*.prom"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        # One file per worker process, named by its pid.
        assert len({f.name.split("-")[0] for f in folder.glob("*.prom")}) == 2
        assert "workers:   2 (RECO_WORKERS)" in (tmp_path / "service.log").read_text()

        def recommend(n: int) -> int:
            request = urllib.request.Request(
                f"{base}/v1/customers/u{n % 4}/recommendations?channel=web",
                headers={"Authorization": f"Bearer {STOREFRONT_KEY}", "Connection": "close"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)

        requests = 40
        with ThreadPoolExecutor(8) as pool:  # both workers busy at once
            assert set(pool.map(recommend, range(requests))) == {200}
        route = 'route="/v1/customers/{customer_id}/recommendations"'
        count = f'reco_responses_total{{{route},status="200"}}'
        deadline = time.monotonic() + 10
        while True:  # a scrape reaches one worker; each writes its figures every second
            with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
                seen = _samples(response.read().decode()).get(count)
            if seen == requests or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert seen == requests


def test_a_folder_that_cannot_be_written_warns_once_and_serving_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "metrics"
    blocked.write_text("a file where the folder should be")
    snapshots = Snapshots(blocked, lambda: b"", interval=0.01)

    async def run_a_while() -> None:
        task = asyncio.create_task(snapshots.run())
        await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.WARNING, logger="service.worker_metrics"):
        asyncio.run(run_a_while())
    warnings = [r.message for r in caplog.records if r.name == "service.worker_metrics"]
    assert len(warnings) == 1 and "not written" in warnings[0]  # 20 failed writes, one line
    # The scrape still answers with this worker's own figures.
    own = _worker_exposition(1, "v1", 0).encode()
    assert b"reco_responses_total" in Snapshots(tmp_path / "fine", lambda: b"").merged(own)


def test_clearing_removes_finished_and_half_written_files(tmp_path: Path) -> None:
    for name in ("1-a.prom", "2-b.tmp"):
        (tmp_path / name).write_text("x")
    (tmp_path / "keep.txt").write_text("not ours")
    clear(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    # A file that cannot be removed (here a folder by that name) does not stop the start.
    (tmp_path / "3-c.prom").mkdir()
    clear(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3-c.prom", "keep.txt"]
