"""The HTTP API end to end: TestClient against the app, a real Redis and a hand-built model."""

from __future__ import annotations

import asyncio
import gc
import shutil
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from litestar.testing import TestClient

from service import artifact
from service.live_model import LiveModel
from service.ranking import FactorModel
from service.settings import Settings
from tests.builders import checkerboard_artifact
from tests.conftest import ADMIN_KEY, EVENTS_KEY, STOREFRONT_KEY, client_for, replace

PROBLEM = "application/problem+json"


def recommended(response) -> list[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return [i["item_id"] for i in response.json()["items"]]


def purchase(customer: str, item: str, channel: str = "store") -> dict[str, str]:
    return {"customer_id": customer, "item_id": item, "event_type": "purchase", "channel": channel}


def test_recommendations_for_a_known_customer(client: TestClient) -> None:
    response = client.get("/v1/customers/u0/recommendations", params={"k": 3, "channel": "web"})
    body = response.json()
    assert recommended(response) == ["i02", "i04", "i06"]  # i00 was bought in the training data
    assert body["model_version"] == "v1-checkerboard"
    assert body["fallback"] is False and body["degraded"] is False
    assert len(body["request_id"]) == 32
    assert all(i["source"] == "model" and i["reason"] for i in body["items"])


def test_k_defaults_to_the_setting(client: TestClient) -> None:
    assert len(recommended(client.get("/v1/customers/u0/recommendations"))) == 10


def test_unknown_customers_get_popular_items_for_their_channel(client: TestClient) -> None:
    response = client.get(
        "/v1/customers/new-visitor/recommendations", params={"k": 2, "channel": "store"}
    )
    assert recommended(response) == ["i18", "i16"]
    assert response.json()["fallback"] is True


def test_category_and_exclude_filters(client: TestClient) -> None:
    params = {"k": 2, "category": "odd", "exclude": ["i01", "i03"]}
    assert recommended(client.get("/v1/customers/u1/recommendations", params=params)) == [
        "i05",
        "i07",
    ]


def test_a_purchase_posted_now_is_excluded_from_the_very_next_recommendation(
    client: TestClient,
) -> None:
    before = recommended(client.get("/v1/customers/u0/recommendations", params={"k": 3}))
    assert before[0] == "i02"
    response = client.post("/v1/events", json=purchase("u0", "i02"))
    assert response.status_code == 202, response.text
    after = recommended(client.get("/v1/customers/u0/recommendations", params={"k": 3}))
    assert "i02" not in after
    assert after == ["i04", "i06", "i08"]


def test_events_are_accepted_one_or_in_a_batch(client: TestClient) -> None:
    one = client.post(
        "/v1/events", json={**purchase("u5", "i01"), "timestamp": "2026-11-01T10:00:00Z"}
    )
    assert one.status_code == 202 and one.json()["accepted"] == 1
    batch = client.post(
        "/v1/events", json=[purchase("u5", "i03"), {**purchase("u5", "i05"), "event_type": "view"}]
    )
    assert batch.status_code == 202
    assert batch.json()["accepted"] == 2 and len(set(batch.json()["ids"])) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([purchase("u1", "i1"), {**purchase("u1", "i1"), "channel": "fax"}], "$[1].channel"),
        ({**purchase("u1", "i1"), "quantity": -3}, "$.quantity"),
        ({**purchase("u1", "i1"), "timestamp": "last tuesday"}, "$.timestamp"),
        ({"event_type": "view", "channel": "web", "item_id": "i1"}, "$"),
        ({**purchase("u1", "i1"), "timestamp": "0001-01-01T00:00:00Z"}, "$.timestamp"),
        (
            [purchase("u1", "i1"), {**purchase("u1", "i1"), "timestamp": "9999-12-31T23:59:59Z"}],
            "$[1].timestamp",
        ),
    ],
)
def test_invalid_events_get_a_problem_naming_the_field_and_nothing_is_stored(
    client: TestClient, body: object, field: str
) -> None:
    response = client.post("/v1/events", json=body)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["type"].endswith(":validation")
    assert problem["errors"][0]["field"] == field
    # The valid first event of an invalid batch was not stored either.
    after = recommended(client.get("/v1/customers/u1/recommendations", params={"k": 1}))
    assert after == ["i03"]  # u1 bought i01 in training; nothing new


def test_an_overflowing_purchase_value_is_a_400_and_nothing_of_the_batch_is_recorded(
    client: TestClient, redis_url: str, key_prefix: str
) -> None:
    view = {"customer_id": "pzinf1", "item_id": "i01", "event_type": "view", "channel": "web"}
    huge = {**purchase("pzinf1", "i02", "web"), "quantity": 1e308, "price": 10}
    response = client.post("/v1/events", json=[view, huge])
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["errors"][0]["field"] == "$[1].quantity"
    raw = redis.Redis.from_url(redis_url)
    assert raw.xlen(f"{key_prefix}:events") == 0
    assert not list(raw.scan_iter(match=f"{key_prefix}:*pzinf1*"))


@pytest.mark.parametrize(
    ("timestamp", "accepted"),
    [
        ("1969-12-31T23:59:59Z", False),
        ("1970-01-01T00:00:00Z", True),
        (datetime.now(UTC) + timedelta(hours=23), True),  # producers' clocks run ahead a little
        (datetime.now(UTC) + timedelta(hours=25), False),
    ],
)
def test_event_times_must_be_after_1970_and_at_most_a_day_ahead(
    client: TestClient, redis_url: str, key_prefix: str, timestamp: object, accepted: bool
) -> None:
    when = timestamp.isoformat() if isinstance(timestamp, datetime) else timestamp
    view = {"customer_id": "t1", "item_id": "i01", "event_type": "view", "channel": "web"}
    response = client.post("/v1/events", json=[view, {**view, "timestamp": when}])
    stream = redis.Redis.from_url(redis_url).xlen(f"{key_prefix}:events")
    if accepted:
        assert response.status_code == 202, response.text
        assert stream == 2
    else:
        assert response.status_code == 400
        [error] = response.json()["errors"]
        assert error["field"] == "$[1].timestamp"
        assert "1970" in error["message"] or "future" in error["message"]
        assert stream == 0  # the batch is all or nothing


def test_malformed_json_empty_and_oversized_batches_are_400(
    client: TestClient, settings: Settings
) -> None:
    assert (
        client.post(
            "/v1/events", content=b"{nope", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    empty = client.post("/v1/events", json=[])
    assert empty.status_code == 400 and "no event" in empty.json()["detail"]
    too_many = client.post(
        "/v1/events", json=[purchase("u1", "i01")] * (settings.max_batch_events + 1)
    )
    assert too_many.status_code == 400 and "at most" in too_many.json()["detail"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"k": 0}, "query.k"),
        ({"k": 1000}, "query.k"),
        ({"k": "ten"}, "query.k"),
        ({"channel": "fax"}, "query.channel"),
    ],
)
def test_bad_query_parameters_are_400_with_the_parameter(
    client: TestClient, params: dict, field: str
) -> None:  # type: ignore[type-arg]
    response = client.get("/v1/customers/u0/recommendations", params=params)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field


def test_an_unknown_category_is_400(client: TestClient) -> None:
    response = client.get("/v1/customers/u0/recommendations", params={"category": "shoes"})
    assert response.status_code == 400
    assert response.json()["type"].endswith(":invalid-request")


def test_similar_items(client: TestClient) -> None:
    response = client.get("/v1/items/i03/similar", params={"k": 3})
    items = recommended(response)
    assert len(items) == 3 and "i03" not in items
    assert all(int(i[1:]) % 2 == 1 for i in items)
    assert response.json()["item_id"] == "i03"


def test_similar_items_of_an_unknown_item_is_404(client: TestClient) -> None:
    response = client.get("/v1/items/i404/similar")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == "urn:omnireco:problem:unknown-item"
    assert "i404" in response.json()["detail"]


ROUTES = [
    ("GET", "/v1/customers/u0/recommendations", "recommend"),
    ("GET", "/v1/items/i00/similar", "recommend"),
    ("POST", "/v1/events", "events"),
    ("GET", "/v1/models", "admin"),
    ("POST", "/v1/models/reload", "admin"),
]
KEYS = {"recommend": STOREFRONT_KEY, "events": EVENTS_KEY, "admin": ADMIN_KEY}


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
def test_every_v1_route_needs_a_key_with_its_scope(
    client: TestClient, method: str, path: str, scope: str
) -> None:
    body = purchase("u0", "i02") if method == "POST" and path == "/v1/events" else None

    def call(headers: dict[str, str]) -> int:
        client.headers.pop("Authorization", None)
        return client.request(method, path, json=body, headers=headers).status_code

    assert call({}) == 401
    assert call({"Authorization": "Bearer wrong"}) == 401
    wrong_scope = STOREFRONT_KEY if scope != "recommend" else EVENTS_KEY
    assert call({"Authorization": f"Bearer {wrong_scope}"}) == 403
    assert call({"Authorization": f"Bearer {KEYS[scope]}"}) in (200, 202)
    assert call({"X-API-Key": KEYS[scope]}) in (200, 202)


def test_auth_failures_are_problem_details(client: TestClient) -> None:
    client.headers.pop("Authorization")
    response = client.get("/v1/customers/u0/recommendations")
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["type"] == "urn:omnireco:problem:unauthorized"


def test_health_needs_no_key(client: TestClient) -> None:
    client.headers.pop("Authorization")
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["model_version"] == "v1-checkerboard"
    # Checkers that send HEAD (some load balancers) get the same status, without a body.
    for path in ("/health/live", "/health/ready"):
        answer = client.head(path)
        assert answer.status_code == 200 and answer.content == b""


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/schema/openapi.json").json()
    assert "/v1/customers/{customer_id}/recommendations" in spec["paths"]
    assert "/v1/events" in spec["paths"]


def test_the_live_model_and_a_reload_to_a_new_version(client: TestClient, model_dir: Path) -> None:
    assert client.get("/v1/models").json()["model_version"] == "v1-checkerboard"
    checkerboard_artifact(model_dir, version="v2-checkerboard")
    reload = client.post("/v1/models/reload").json()
    assert reload == {
        "swapped": True,
        "model_version": "v2-checkerboard",
        "error": None,
        "announced": True,
    }
    response = client.get("/v1/customers/u0/recommendations")
    assert response.json()["model_version"] == "v2-checkerboard"


def test_a_reload_asked_of_one_worker_reaches_the_others(
    settings: Settings, model_dir: Path
) -> None:
    """Two workers (apps) on one Redis and model folder, polling off: a reload posted to one
    makes the other serve the new version too."""
    with client_for(settings) as asked, client_for(settings) as other:
        for c in (asked, other):
            c.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        time.sleep(1.2)  # the other worker has read the reload count once
        checkerboard_artifact(model_dir, version="v2-checkerboard")
        assert asked.post("/v1/models/reload").json()["announced"] is True
        version = other.get("/v1/models").json()["model_version"]
        deadline = time.monotonic() + 5
        while version != "v2-checkerboard" and time.monotonic() < deadline:
            time.sleep(0.1)
            version = other.get("/v1/models").json()["model_version"]
        assert version == "v2-checkerboard"
        assert other.get("/v1/customers/u0/recommendations").json()["model_version"] == version


def test_a_reload_without_redis_loads_here_and_says_the_others_were_not_told(
    settings: Settings, model_dir: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = f"redis://127.0.0.1:{s.getsockname()[1]}/0"  # nothing listens there
    down = replace(settings, redis_url=nobody, redis_timeout_seconds=0.2)
    with client_for(down) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        checkerboard_artifact(model_dir, version="v2-checkerboard")
        reload = client.post("/v1/models/reload")
        assert reload.status_code == 200
        assert reload.json()["announced"] is False
        assert reload.json()["model_version"] == "v2-checkerboard"


def test_a_corrupted_new_version_is_refused_and_the_old_one_keeps_serving(
    client: TestClient, model_dir: Path
) -> None:
    path = checkerboard_artifact(model_dir, version="v2-broken")
    (path / "item_factors.npy").write_bytes(b"garbage")
    reload = client.post("/v1/models/reload").json()
    assert reload["swapped"] is False and "checksum mismatch" in reload["error"]
    assert (
        client.get("/v1/customers/u0/recommendations").json()["model_version"] == "v1-checkerboard"
    )
    ready = client.get("/health/ready").json()
    assert ready["status"] == "ok" and "checksum" in ready["checks"]["model_refresh"]


def test_a_version_repaired_in_place_is_loaded_by_a_reload(
    client: TestClient, model_dir: Path
) -> None:
    path = checkerboard_artifact(model_dir, version="v2-broken")
    good = (path / "item_factors.npy").read_bytes()
    (path / "item_factors.npy").write_bytes(b"garbage")
    assert client.post("/v1/models/reload").json()["swapped"] is False
    (path / "item_factors.npy").write_bytes(good)
    reload = client.post("/v1/models/reload").json()
    assert reload["swapped"] is True and reload["error"] is None
    assert reload["model_version"] == "v2-broken"
    assert "model_refresh" not in client.get("/health/ready").json()["checks"]


def test_rolling_latest_back_to_the_served_version_clears_the_refresh_error(
    client: TestClient, model_dir: Path
) -> None:
    path = checkerboard_artifact(model_dir, version="v2-broken")
    (path / "item_factors.npy").write_bytes(b"garbage")
    assert "checksum" in client.post("/v1/models/reload").json()["error"]
    artifact.set_latest(model_dir, "v1-checkerboard")
    reload = client.post("/v1/models/reload").json()
    assert reload["swapped"] is False and reload["error"] is None
    assert reload["model_version"] == "v1-checkerboard"
    ready = client.get("/health/ready").json()
    assert ready["status"] == "ok" and "model_refresh" not in ready["checks"]


class _CountingLiveModel(LiveModel):
    """A live model that counts the versions it reads."""

    loads = 0

    def _load(self, version: str) -> FactorModel:
        self.loads += 1
        return super()._load(version)


def test_polling_loads_a_failed_version_again_only_once_its_files_change(
    model_dir: Path,
) -> None:
    live = _CountingLiveModel(model_dir)
    assert asyncio.run(live.refresh()) is True
    path = checkerboard_artifact(model_dir, version="v2-broken")
    good = (path / "item_factors.npy").read_bytes()
    (path / "item_factors.npy").write_bytes(b"garbage")
    assert asyncio.run(live.refresh()) is False and live.error is not None
    assert live.loads == 2
    # Unchanged files: polls do not read and checksum the broken version again.
    for _ in range(3):
        assert asyncio.run(live.refresh()) is False
    assert live.loads == 2 and "checksum" in (live.error or "")
    (path / "item_factors.npy").write_bytes(good)
    assert asyncio.run(live.refresh()) is True
    assert live.version == "v2-broken" and live.error is None and live.loads == 3


def test_a_worker_started_while_latest_is_broken_serves_the_newest_version_that_loads(
    settings: Settings, model_dir: Path
) -> None:
    """A worker replacing one that died (or a new replica) has no old model to keep serving:
    it serves what its siblings serve, not 503s."""
    checkerboard_artifact(
        model_dir, version="v0-older", created_at=datetime(2025, 6, 1, tzinfo=UTC)
    )
    newest = datetime(2026, 6, 1, tzinfo=UTC)
    broken = checkerboard_artifact(model_dir, version="v2-broken", created_at=newest)
    (broken / "item_factors.npy").write_bytes(b"garbage")  # LATEST names it now
    with client_for(settings) as fresh:
        fresh.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        answer = fresh.get("/v1/customers/u0/recommendations")
        assert answer.status_code == 200
        assert answer.json()["model_version"] == "v1-checkerboard"
        ready = fresh.get("/health/ready").json()
        assert ready["status"] == "ok" and ready["model_version"] == "v1-checkerboard"
        assert "v2-broken" in ready["checks"]["model_refresh"]
        assert "serving v1-checkerboard" in ready["checks"]["model_refresh"]


def test_readiness_warns_when_the_served_versions_folder_is_gone(
    client: TestClient, model_dir: Path
) -> None:
    assert "model_files" not in client.get("/health/ready").json()["checks"]
    shutil.rmtree(model_dir / "v1-checkerboard")
    ready = client.get("/health/ready").json()
    assert ready["status"] == "ok" and "is gone" in ready["checks"]["model_files"]
    assert client.get("/v1/customers/u0/recommendations").status_code == 200  # from memory


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_without_a_usable_model_the_service_runs_but_is_not_ready(
    settings: Settings, tmp_path: Path, damage: str
) -> None:
    model_dir = tmp_path / "other-models"
    if damage == "corrupt":
        path = checkerboard_artifact(model_dir)
        (path / "manifest.json").write_text("{")
    with client_for(replace(settings, model_dir=str(model_dir))) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["model"] != "ok"
        assert client.head("/health/ready").status_code == 503
        assert client.head("/health/live").status_code == 200
        response = client.get("/v1/customers/u0/recommendations")
        assert response.status_code == 503
        assert response.json()["type"] == "urn:omnireco:problem:model-unavailable"
        assert client.get("/health/live").status_code == 200
        # Events are still accepted: they do not need a model.
        assert client.post("/v1/events", json=purchase("u0", "i02")).status_code == 202
        # Once a good model is published, a reload makes the service ready.
        shutil.rmtree(model_dir, ignore_errors=True)
        checkerboard_artifact(model_dir, version="v3")
        assert client.post("/v1/models/reload").json()["model_version"] == "v3"
        assert client.get("/health/ready").status_code == 200


def test_the_model_watcher_picks_up_a_new_latest(settings: Settings, model_dir: Path) -> None:
    import time

    with client_for(replace(settings, model_poll_seconds=0.05)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        checkerboard_artifact(model_dir, version="v9")
        deadline = time.monotonic() + 5
        while client.get("/v1/models").json()["model_version"] != "v9":
            assert time.monotonic() < deadline, "new model not picked up"
            time.sleep(0.05)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_when_redis_is_down_recommendations_degrade_and_events_are_refused(
    settings: Settings,
) -> None:
    down = replace(
        settings, redis_url=f"redis://127.0.0.1:{_closed_port()}/0", redis_timeout_seconds=0.2
    )
    with client_for(down) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        response = client.get("/v1/customers/u0/recommendations", params={"k": 2})
        assert response.status_code == 200
        assert response.json()["degraded"] is True
        assert recommended(response) == ["i02", "i04"]  # training purchases still excluded
        refused = client.post("/v1/events", json=purchase("u0", "i02"))
        assert refused.status_code == 503
        assert refused.json()["type"] == "urn:omnireco:problem:store-unavailable"
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "unreachable"


def test_unknown_routes_are_problem_details(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)


def test_model_versions_listed_by_the_admin_endpoint_match_the_artifact(
    client: TestClient, model_dir: Path
) -> None:
    manifest = client.get("/v1/models").json()
    assert (
        manifest["files"].keys() == artifact.load(artifact.resolve(model_dir)).manifest.files.keys()
    )


def test_the_ann_setting_reaches_the_served_model(settings: Settings) -> None:
    # RECO_ANN=on: the checkerboard's 20 items get an index built at load; answers stay the same.
    with client_for(replace(settings, ann="on", ann_nprobe=2)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        assert client.app.state.live_model.get().index is not None
        response = client.get("/v1/customers/u0/recommendations", params={"k": 3})
        assert recommended(response) == ["i02", "i04", "i06"]
        params = {"k": 2, "category": "odd", "exclude": ["i01", "i03"]}
        response = client.get("/v1/customers/u1/recommendations", params=params)
        assert recommended(response) == ["i05", "i07"]
        assert len(recommended(client.get("/v1/items/i03/similar", params={"k": 8}))) == 8
    with client_for(replace(settings, ann="off")) as client:
        assert client.app.state.live_model.get().index is None


def test_what_startup_built_is_frozen_out_of_the_collectors_view(settings: Settings) -> None:
    """Full collections no longer traverse the app, the routes and the model (a 32 ms pause per
    pass under load before); stopping the app hands them back to the collector."""
    gc.unfreeze()
    with client_for(settings) as c:
        assert gc.get_freeze_count() > 10_000
        assert c.get("/health/live").status_code == 200
    assert gc.get_freeze_count() == 0


def test_bought_items_may_be_shown_again_when_the_operator_allows_it(settings: Settings) -> None:
    # RECO_EXCLUDE_BOUGHT=false: the model's own ranking, training purchases and purchases
    # since included (repeat buying: groceries); the cart and `exclude` are still left out.
    with client_for(replace(settings, exclude_bought=False)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        shown = recommended(client.get("/v1/customers/u0/recommendations", params={"k": 4}))
        assert shown[0] == "i00"  # bought in the training data, the model's best
        assert client.post("/v1/events", json=purchase("u0", "i02")).status_code == 202
        again = recommended(client.get("/v1/customers/u0/recommendations", params={"k": 4}))
        assert again == shown and "i02" in again
        cart = {**purchase("u0", "i02"), "event_type": "add_to_cart", "channel": "web"}
        assert client.post("/v1/events", json=cart).status_code == 202
        params = {"k": 4, "exclude": ["i04"]}
        left = recommended(client.get("/v1/customers/u0/recommendations", params=params))
        assert "i02" not in left and "i04" not in left and left[0] == "i00"


def test_an_id_ending_in_a_newline_is_refused_everywhere(client: TestClient) -> None:
    """A pattern's ``$`` matches before a final newline: ``"u1\\n"`` passed the id rule."""
    response = client.post("/v1/events", json=purchase("u1\n", "i02"))
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "$.customer_id"
    response = client.get("/v1/customers/u1%0A/recommendations")
    assert response.status_code == 400, response.text
    assert client.get("/v1/customers/u1/recommendations").status_code == 200
