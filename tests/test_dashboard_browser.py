"""The dashboard in a real browser (headless Chromium via Playwright) and the static report."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from service.app import create_app
from service.report import write_report
from service.settings import Settings
from tests.builders import checkerboard_artifact
from tests.conftest import ADMIN_KEY, client_for, replace

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS = Path(__file__).resolve().parent.parent / "docs"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} is absent (apt-get install -y chromium; .ci/run installs it)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def holdout(ndcg: float, recall: float) -> dict[str, object]:
    """Metrics shaped like training's manifest.metrics."""
    als = {"k": 10, "customers": 800, "ndcg": ndcg, "recall": recall, "map": ndcg / 2}
    popular = {"k": 10, "customers": 800, "ndcg": 0.05, "recall": 0.09, "map": 0.02}
    return {
        "test_events": 5000,
        "als": {**als, "hit_rate": 0.4, "coverage": 0.3},
        "popularity": popular,
    }


@pytest.fixture
def two_models(settings: Settings, tmp_path: Path) -> Settings:
    """Settings whose model folder holds a previous and a live version, both with metrics."""
    model_dir = tmp_path / "two-models"
    day = datetime(2026, 11, 1, tzinfo=UTC)
    checkerboard_artifact(
        model_dir, version="v0-previous", metrics=holdout(0.18, 0.25), created_at=day
    )
    checkerboard_artifact(
        model_dir,
        version="v1-live",
        metrics=holdout(0.21, 0.29),
        created_at=day + timedelta(days=7),
    )
    return replace(settings, model_dir=str(model_dir))


@pytest.fixture
def server(two_models: Settings) -> Iterator[str]:
    """The app served by uvicorn in a thread, on a free port."""
    port = free_port()
    app = create_app(two_models)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def fill_with_traffic(base: str) -> None:
    """An experiment, answers on three channels, and five days of touches and purchases."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=base, headers=headers) as http:
        experiment = {"variants": [{"name": "control"}, {"name": "popular", "ranking": "popular"}]}
        assert http.put("/v1/experiments/home-ab", json=experiment).status_code == 200
        for customer in [f"u{i}" for i in range(10)]:
            for channel in ("web", "app", "store"):
                slot = "&placement=home" if channel == "web" else ""
                http.get(f"/v1/customers/{customer}/recommendations?channel={channel}&k=4{slot}")
        now = datetime.now(UTC)
        events = []
        # Different click and purchase rates per channel and day, so every line is its own.
        rates = {"web": ("i02", 3, 5), "app": ("i03", 4, 7), "store": ("i04", 2, 4)}
        for day in range(6, -1, -1):
            at = now - timedelta(days=day)
            for n, customer in enumerate(f"u{i}" for i in range(10)):
                for channel, (item, click_every, buy_every) in rates.items():
                    placed = {"placement": "home"} if channel == "web" else {}
                    events.append(_event("impression", customer, item, channel, at, **placed))
                    if (n * day + n) % click_every == 0:
                        events.append(_event("click", customer, item, channel, at, **placed))
                    if (n + 2 * day) % buy_every == 0:
                        price = 20 + 5 * (n % 3)
                        events.append(_event("purchase", customer, item, "store", at, price=price))
        assert http.post("/v1/events", json=events).status_code == 202


def _event(kind: str, customer: str, item: str, channel: str, at: datetime, **kw: object) -> dict:
    return {
        "event_type": kind,
        "customer_id": customer,
        "item_id": item,
        "channel": channel,
        "timestamp": at.isoformat(),
        **kw,
    }


def test_the_live_model_offline_metrics_sit_next_to_its_online_figures(
    two_models: Settings,
) -> None:
    with client_for(two_models) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        now = datetime.now(UTC)
        client.post("/v1/events", json=[_event("impression", "u0", "i02", "web", now)])
        models = client.get("/v1/dashboard").json()["models"]
    live, previous = models
    assert (live["role"], live["version"]) == ("live", "v1-live")
    assert (previous["role"], previous["version"]) == ("previous", "v0-previous")
    assert live["offline"]["als.ndcg"] == pytest.approx(0.21)
    assert previous["offline"]["als.ndcg"] == pytest.approx(0.18)
    [web] = [c for c in live["online"] if c["channel"] == "web"]
    assert web["figures"]["impressions"] == 1
    assert [c["channel"] for c in previous["online"]] == ["all"]  # nothing served by it


@needs_chromium
def test_the_dashboard_renders_its_charts_with_data(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    fill_with_traffic(server)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(f"{server}/dashboard")
        page.fill("#key", ADMIN_KEY)
        page.click("#login button")
        page.wait_for_selector("svg.chart polyline", timeout=15_000)
        charts = page.locator("svg.chart")
        assert charts.count() == 5
        lines = page.locator("svg.chart polyline[data-series]")
        series = {lines.nth(i).get_attribute("data-series") for i in range(lines.count())}
        assert {"web", "app", "store", "coverage"} <= series
        assert {"home-ab/control", "home-ab/popular"} <= series
        assert "Experiment home-ab" in page.content()
        assert "home · web" in page.content()  # the table per placement and channel
        assert page.evaluate("sessionStorage.getItem('omnireco-admin-key')") == ADMIN_KEY
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    if os.environ.get("UPDATE_SCREENSHOT"):
        DOCS.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS / "dashboard.png")


@needs_chromium
def test_the_static_report_renders_without_the_service(
    server: str, two_models: Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    fill_with_traffic(server)
    time.sleep(1.2)  # the served-items counters are flushed once a second
    out = tmp_path / "report.html"

    asyncio.run(write_report(two_models, out, days=7))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(out.as_uri())
        page.wait_for_selector("svg.chart polyline", timeout=15_000)
        assert page.locator("svg.chart").count() == 5
        assert page.locator("#login").is_hidden()
        assert "v0-previous" in page.content() and "als.ndcg" in page.content()
        browser.close()
