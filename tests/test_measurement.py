"""Measurement end to end over HTTP and a real Redis: attribution, experiments, /metrics, logs."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from service import logs
from tests.conftest import EVENTS_KEY, client_for, replace

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)  # +8 days stays in the past


def event(kind: str, customer: str, item: str, channel: str, at: datetime, **kw: Any) -> dict:
    return {
        "customer_id": customer,
        "item_id": item,
        "event_type": kind,
        "channel": channel,
        "timestamp": at.isoformat(),
        **kw,
    }


def post(client: TestClient, *events: dict) -> None:
    response = client.post("/v1/events", json=list(events))
    assert response.status_code == 202, response.text


def totals(client: TestClient) -> dict[str, dict[str, Any]]:
    response = client.get("/v1/dashboard", params={"days": 14})
    assert response.status_code == 200, response.text
    return {c["channel"]: c["figures"] for c in response.json()["channel_figures"]}


def test_a_web_impression_is_credited_with_a_store_purchase_two_days_later(
    client: TestClient,
) -> None:
    post(
        client,
        event("impression", "u0", "i02", "web", T0, request_id="r1"),
        event("impression", "u0", "i04", "web", T0, request_id="r1"),
        event("click", "u0", "i02", "web", T0 + timedelta(minutes=1), request_id="r1"),
    )
    post(client, event("purchase", "u0", "i02", "store", T0 + timedelta(days=2), price=30.0))
    web = totals(client)["web"]
    assert (web["impressions"], web["clicks"], web["conversions"]) == (2, 1, 1)
    assert web["revenue"] == pytest.approx(30.0)
    assert web["ctr"]["value"] == pytest.approx(0.5)
    assert web["average_order_value"]["value"] == pytest.approx(30.0)


def test_a_purchase_outside_the_window_is_not_credited(client: TestClient) -> None:
    post(client, event("impression", "u2", "i04", "web", T0, request_id="r2"))
    post(client, event("purchase", "u2", "i04", "store", T0 + timedelta(days=8), price=10.0))
    assert totals(client)["web"]["conversions"] == 0


def test_the_window_is_per_channel_and_configurable(settings) -> None:  # type: ignore[no-untyped-def]
    with client_for(replace(settings, attribution_windows="web=1")) as client:
        client.headers["Authorization"] = "Bearer test-admin-key"
        post(client, event("impression", "u4", "i06", "web", T0))
        post(client, event("purchase", "u4", "i06", "store", T0 + timedelta(days=2)))
        assert totals(client)["web"]["conversions"] == 0


def test_a_purchase_in_the_same_batch_as_its_impression_is_credited(client: TestClient) -> None:
    post(
        client,
        event("impression", "u6", "i08", "app", T0),
        event("purchase", "u6", "i08", "app", T0 + timedelta(hours=1), price=5.0, quantity=2),
    )
    app = totals(client)["app"]
    assert app["conversions"] == 1 and app["revenue"] == pytest.approx(10.0)


EXPERIMENT = {
    "variants": [{"name": "control"}, {"name": "popular", "ranking": "popular"}],
    "channels": ["web", "store"],
}


def test_responses_carry_request_id_model_and_variant_consistently_on_every_channel(
    client: TestClient,
) -> None:
    assert client.put("/v1/experiments/ab1", json=EXPERIMENT).status_code == 200
    seen: dict[str, set[str]] = {}
    for customer in [f"u{i}" for i in range(10)] + ["new-1", "new-2"]:
        for channel in ("web", "store"):
            response = client.get(f"/v1/customers/{customer}/recommendations?channel={channel}")
            body = response.json()
            assert body["experiment"] == "ab1"
            assert body["model_version"] == "v1-checkerboard"
            assert response.headers["x-request-id"] == body["request_id"]
            seen.setdefault(customer, set()).add(body["variant"])
    assert all(len(variants) == 1 for variants in seen.values())  # same on web and store
    assert {v for vs in seen.values() for v in vs} == {"control", "popular"}
    email = client.get("/v1/customers/u0/recommendations?channel=email").json()
    assert email["experiment"] is None and email["variant"] is None
    # Offer answers carry the same assignment as the customer's recommendations.
    for customer, variants in seen.items():
        offers = client.get(f"/v1/customers/{customer}/offers?channel=web&record=false").json()
        assert offers["experiment"] == "ab1"
        assert {offers["variant"]} == variants
        assert offers["request_id"] and offers["model_version"] == "v1-checkerboard"


def test_a_popular_variant_serves_popular_items(client: TestClient) -> None:
    body = {"variants": [{"name": "a", "ranking": "popular"}, {"name": "b", "weight": 1e-9}]}
    assert client.put("/v1/experiments/pop", json=body).status_code == 200
    items = client.get("/v1/customers/u0/recommendations?channel=store&k=2").json()["items"]
    assert [i["item_id"] for i in items] == ["i18", "i16"]
    # Overall popularity leads with i00, which u0 bought in the training data: never shown.
    items = client.get("/v1/customers/u0/recommendations?channel=email&k=2").json()["items"]
    assert [i["item_id"] for i in items] == ["i01", "i02"]
    # Without consent to personalisation the history is not used, as on every other path.
    client.put("/v1/customers/u0/consent", json={"personalisation": False})
    items = client.get("/v1/customers/u0/recommendations?channel=email&k=2").json()["items"]
    assert [i["item_id"] for i in items] == ["i00", "i01"]


def test_a_variant_pinned_to_an_unknown_model_falls_back_to_the_live_one(
    client: TestClient,
) -> None:
    body = {"variants": [{"name": "a", "model_version": "missing"}, {"name": "b", "weight": 1e-9}]}
    client.put("/v1/experiments/pin", json=body)
    response = client.get("/v1/customers/u0/recommendations")
    assert response.status_code == 200
    assert response.json()["model_version"] == "v1-checkerboard"


def test_experiment_admin_api(client: TestClient) -> None:
    assert client.put("/v1/experiments/bad", json={"variants": [{"name": "x"}]}).status_code == 400
    assert client.get("/v1/experiments/nope").status_code == 404
    client.put("/v1/experiments/ab2", json=EXPERIMENT)
    assert [e["experiment_id"] for e in client.get("/v1/experiments").json()] == ["ab2"]
    stopped = client.post("/v1/experiments/ab2/stop").json()
    assert stopped["stop"] is not None
    body = client.get("/v1/customers/u0/recommendations").json()
    assert body["experiment"] is None
    assert client.delete("/v1/experiments/ab2").status_code == 204
    assert client.get("/v1/experiments").json() == []


@pytest.mark.parametrize("experiment_id", ["caf\u00e9", "a:b", "x" * 65])
def test_an_experiment_id_the_store_refuses_is_a_documented_400_naming_the_path(
    client: TestClient, experiment_id: str
) -> None:
    """An experiment's id is a name (letters, digits, ``.``, ``_``, ``-``; at most 64): the path
    parameter said any id, so a PUT the OpenAPI allowed was a 400 blaming ``$.experiment_id``,
    a field the body does not have (found by fuzzing the API against its OpenAPI)."""
    response = client.put(f"/v1/experiments/{experiment_id}", json=EXPERIMENT)
    assert response.status_code == 400, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["path.experiment_id"]
    spec = client.get("/schema/openapi.json").json()
    [param] = spec["paths"]["/v1/experiments/{experiment_id}"]["put"]["parameters"]
    schema = param["schema"]
    assert (schema["pattern"], schema["maxLength"]) == ("^[A-Za-z0-9._-]+$", 64)


def test_stopping_an_experiment_that_has_not_started_is_a_409_and_changes_nothing(
    client: TestClient,
) -> None:
    scheduled = {**EXPERIMENT, "start": "2030-01-01T00:00:00Z"}
    assert client.put("/v1/experiments/e3", json=scheduled).status_code == 200
    before = client.get("/v1/experiments/e3").json()
    response = client.post("/v1/experiments/e3/stop")
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:omnireco:problem:experiment-not-started"
    assert "DELETE" in response.json()["detail"]
    assert client.get("/v1/experiments/e3").json() == before


def test_huge_experiment_weights_are_a_400_naming_the_field(client: TestClient) -> None:
    body = {
        "variants": [{"name": "a", "weight": 1e308}, {"name": "b", "weight": 1e308}],
        "channels": ["support"],
    }
    response = client.put("/v1/experiments/e5", json=body)
    assert response.status_code == 400
    assert "$.variants[0].weight" in response.json()["detail"]
    assert client.get("/v1/experiments/e5").status_code == 404


def test_stopping_a_stopped_experiment_keeps_its_stop_time(client: TestClient) -> None:
    client.put("/v1/experiments/ab4", json=EXPERIMENT)
    first = client.post("/v1/experiments/ab4/stop").json()["stop"]
    assert client.post("/v1/experiments/ab4/stop").json()["stop"] == first


def test_experiment_results_per_variant_and_channel(client: TestClient) -> None:
    client.put("/v1/experiments/ab3", json=EXPERIMENT)
    variants = {}
    for i in range(10):
        body = client.get(f"/v1/customers/u{i}/recommendations?channel=web").json()
        variants[f"u{i}"] = body["variant"]
    now = datetime.now(UTC)
    for customer in variants:
        post(client, event("impression", customer, "i01", "web", now))
    post(client, event("click", "u0", "i01", "web", now))
    post(client, event("purchase", "u0", "i01", "store", now, price=20.0))
    result = client.get("/v1/experiments/ab3/results").json()
    assert result["control"] == "control"
    [web] = [c for c in result["channels"] if c["channel"] == "web"]
    figures = {v["variant"]: v["figures"] for v in web["variants"]}
    in_control = sum(1 for v in variants.values() if v == "control")
    assert figures["control"]["impressions"] + figures["popular"]["impressions"] == 10
    assert figures[variants["u0"]]["conversions"] == 1
    assert figures["control"]["impressions"] == in_control
    other = web["variants"][1]
    assert other["ctr_vs_control"]["statement"].startswith("not yet significant")


def test_a_retried_event_counts_once_in_the_results_and_the_metrics(client: TestClient) -> None:
    client.put("/v1/experiments/ab3", json=EXPERIMENT)
    variant = client.get("/v1/customers/u0/recommendations?channel=web").json()["variant"]
    now = datetime.now(UTC)
    batch = [
        event("impression", "u0", "i01", "web", now, event_id="imp-1"),
        event("click", "u0", "i01", "web", now, event_id="clk-1"),
        event("purchase", "u0", "i01", "store", now, price=20.0, event_id="buy-1"),
    ]
    post(client, *batch)
    post(client, *batch)  # a retry of the whole batch
    post(client, batch[2], batch[2])  # the purchase again, twice in one batch
    [web] = [
        c for c in client.get("/v1/experiments/ab3/results").json()["channels"]
        if c["channel"] == "web"
    ]  # fmt: skip
    figures = {v["variant"]: v["figures"] for v in web["variants"]}[variant]
    assert (figures["impressions"], figures["clicks"], figures["conversions"]) == (1, 1, 1)
    assert figures["revenue"] == pytest.approx(20.0)
    metrics = client.get("/metrics").text
    assert 'reco_events_ingested_total{channel="store",event_type="purchase"} 1.0' in metrics
    assert 'reco_events_ingested_total{channel="web",event_type="impression"} 1.0' in metrics


def test_more_clicks_than_impressions_is_a_share_of_one_not_a_server_error(
    client: TestClient,
) -> None:
    """A client may lose impressions (an ad blocker, a batch that failed) yet send the clicks and
    purchases that follow: more clicks or conversions than impressions made the dashboard and the
    experiment's results a 500 for as long as they were in the window (the Wilson interval took
    the square root of a negative number; found by fuzzing the events API)."""
    client.put("/v1/experiments/ab3", json=EXPERIMENT)
    variant = client.get("/v1/customers/u0/recommendations?channel=web").json()["variant"]
    now = datetime.now(UTC)
    post(
        client,
        event("impression", "u0", "i01", "web", now),
        event("click", "u0", "i01", "web", now),
        event("click", "u0", "i02", "web", now),  # its impression never came
        event("purchase", "u0", "i01", "store", now, price=5.0),
        event("purchase", "u0", "i02", "store", now, price=7.0),
    )
    web = totals(client)["web"]
    assert (web["impressions"], web["clicks"], web["conversions"]) == (1, 2, 2)
    for share in (web["ctr"], web["conversion_rate"]):
        assert share["value"] == share["high"] == 1.0
        assert 0.0 < share["low"] < 1.0
    response = client.get("/v1/experiments/ab3/results")
    assert response.status_code == 200, response.text
    [result] = [c for c in response.json()["channels"] if c["channel"] == "web"]
    figures = {v["variant"]: v["figures"] for v in result["variants"]}[variant]
    assert (figures["clicks"], figures["ctr"]["value"]) == (2, 1.0)


def test_the_largest_purchases_are_counted_not_a_server_error(client: TestClient) -> None:
    """A price of 10^12 times a quantity of 10^9 is a revenue of 10^21 and a square of 10^42,
    past Redis's 64-bit integers: its HINCRBY failed inside the batch's transaction after the
    batch's events were in the stream, so the client got a 500 for events that had been recorded
    (a retry without ``event_id`` recorded them twice). Found by fuzzing the events API."""
    now = datetime.now(UTC)
    post(
        client,
        event("impression", "u0", "i01", "web", now),
        event("purchase", "u0", "i01", "store", now, price=1e12, quantity=1e9),
    )
    post(  # a small one after it adds to the same counters
        client,
        event("impression", "u1", "i01", "web", now),
        event("purchase", "u1", "i01", "store", now, price=20.0),
    )
    web = totals(client)["web"]
    assert (web["impressions"], web["conversions"]) == (2, 2)
    assert web["revenue"] == pytest.approx(1e21)
    assert web["average_order_value"]["value"] == pytest.approx(5e20)


def test_metrics_endpoint(client: TestClient) -> None:
    client.get("/v1/customers/u0/recommendations?channel=web")
    client.get("/v1/customers/stranger/recommendations?channel=app")
    post(client, event("impression", "u0", "i02", "web", datetime.now(UTC)))
    response = client.get("/metrics")
    assert response.status_code == 200
    content_type = response.headers["content-type"]
    assert content_type.startswith("text/plain; version=")
    assert content_type.lower().count("charset=") == 1  # given twice, Prometheus refuses it
    text = response.text
    route = 'route="/v1/customers/{customer_id}/recommendations"'
    assert f'reco_request_duration_seconds_count{{channel="web",method="GET",{route}}}' in text
    assert 'reco_fallbacks_total{channel="app"} 1.0' in text
    assert 'reco_model_info{version="v1-checkerboard"} 1.0' in text
    assert 'reco_events_ingested_total{channel="web",event_type="impression"} 1.0' in text
    assert 'reco_redis_duration_seconds_count{operation="customer_state"}' in text
    assert "reco_request_errors_total" in text
    assert "reco_requests_in_flight 1.0" in text  # the scrape itself; the others are done
    assert "u0" not in text and "stranger" not in text


def test_refused_keys_count_as_401_and_403_not_as_server_errors(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The key check answers before any handler: its refusals are counted with their status."""
    path = "/v1/customers/u0/recommendations"
    with caplog.at_level(logging.WARNING, logger="service.metrics"):
        assert client.get(path, headers={"Authorization": ""}).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
        wrong_scope = {"Authorization": f"Bearer {EVENTS_KEY}"}
        assert client.get(path, headers=wrong_scope).status_code == 403
    text = client.get("/metrics").text
    route = 'route="/v1/customers/{customer_id}/recommendations"'
    assert f'reco_responses_total{{{route},status="401"}} 2.0' in text
    assert f'reco_responses_total{{{route},status="403"}} 1.0' in text
    assert f'reco_responses_total{{{route},status="500"}}' not in text
    assert f"reco_request_errors_total{{{route}}}" not in text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_coverage_counts_items_recommended_today(client: TestClient) -> None:
    client.get("/v1/customers/u0/recommendations?k=3")  # i02 i04 i06
    client.get("/v1/customers/u1/recommendations?k=3")  # i03 i05 i07
    data = client.get("/v1/dashboard").json()
    assert data["coverage"][-1] == pytest.approx(6 / 20)
    assert data["models"][0]["role"] == "live"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_logs_are_json_with_the_request_id_and_no_personal_data(client: TestClient) -> None:
    handler = _Lines()
    logger = logging.getLogger("service")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)  # the access line of each request is at DEBUG
    try:
        customer = "jane.doe@example.com"
        response = client.get(f"/v1/customers/{customer}/recommendations?channel=web")
        logging.getLogger("service.test").warning("customer %s phoned +44 20 7946 0958", customer)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    entries = [json.loads(line) for line in handler.lines]
    [access] = [e for e in entries if e["msg"] == "request"]
    assert access["request_id"] == response.json()["request_id"]
    assert access["customer"] == logs.pseudonym(customer)
    assert access["route"] == "/v1/customers/{customer_id}/recommendations"
    joined = "\n".join(handler.lines)
    assert "jane.doe" not in joined and "example.com" not in joined
    assert "7946" not in joined


@pytest.mark.parametrize(
    "phone",
    [
        "+44 20 7946 0958",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "+14155552671",
        "07946 095800",
        "+45 12 34 56 78",
        "tel:+33 1 23 45 67 89",
    ],
)
def test_logs_mask_phone_numbers(phone: str) -> None:
    masked = logs.mask(f"customer {phone} called")
    assert masked.count("<phone>") == 1 and not any(ch.isdigit() for ch in masked)


@pytest.mark.parametrize(
    "kept",
    [
        "serving model 20261207T023206Z-bench-734d62 (100000 items)",
        # A version whose hash is all digits, then the count: ten digits, not a number.
        "serving model 20261207T051753Z-blend-246155 (1000 items)",
        "Error 111 connecting to 127.0.0.1:33559.",
        "at 2026-12-07 03:09:07 and 2026-12-07T03:09:07Z",
        "from 192.168.100.200 in 1234 ms",
    ],
)
def test_logs_keep_versions_addresses_dates_and_counts(kept: str) -> None:
    assert logs.mask(kept) == kept


def test_tracking_off_serves_without_experiments(settings) -> None:  # type: ignore[no-untyped-def]
    with client_for(replace(settings, tracking=False)) as client:
        # Without the metrics middleware, API keys are still checked.
        assert client.get("/v1/customers/u0/recommendations").status_code == 401
        client.headers["Authorization"] = "Bearer test-admin-key"
        client.put("/v1/experiments/ab4", json=EXPERIMENT)
        body = client.get("/v1/customers/u0/recommendations").json()
        assert body["variant"] is None and len(body["request_id"]) == 32
        post(client, event("impression", "u0", "i02", "web", datetime.now(UTC)))


def test_the_report_command_writes_a_standalone_page(
    client: TestClient, settings, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from service import report

    post(client, event("impression", "u0", "i02", "web", datetime.now(UTC)))
    for name, value in (
        ("RECO_REDIS_URL", settings.redis_url),
        ("RECO_KEY_PREFIX", settings.key_prefix),
        ("RECO_DATA_DIR", settings.data_dir),
    ):
        monkeypatch.setenv(name, value)
    out = tmp_path / "report.html"
    assert report.main(["--out", str(out), "--model-dir", settings.model_dir, "--days", "3"]) == 0
    page = out.read_text()
    assert "DASHBOARD_DATA" not in page
    assert '"channel_figures"' in page and '"v1-checkerboard"' in page


def test_events_recorded_are_acknowledged_when_their_counters_cannot_be_written(
    client: TestClient, redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The counters ride on the events' transaction, which Redis does not roll back: once the
    events are in, an error from a counter (here today's counters under a key of the wrong type)
    must not answer an error, or the client sends the recorded events again."""
    now = datetime.now(UTC)
    stats = f"{key_prefix}:stats:{now.date().isoformat()}"
    plain = redis.Redis.from_url(redis_url)
    try:
        plain.set(stats, "not a hash")
        with caplog.at_level(logging.ERROR, logger="service.store.customers"):
            response = client.post("/v1/events", json=event("impression", "u0", "i01", "web", now))
        assert response.status_code == 202, response.text
        assert plain.xlen(f"{key_prefix}:events") == 1
        assert "measurement counters" in caplog.text
    finally:
        plain.close()
