"""The store tablet's API: look-up, profile figures on a hand-built history, scopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from litestar.testing import TestClient

from service.profile import StageRules, stage
from tests.conftest import STOREFRONT_KEY

NOW = datetime.now(UTC)


def at(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat()


def line(
    item: str, price: float, qty: float, channel: str, days_ago: float, **extra: object
) -> dict[str, object]:
    return {
        "customer_id": "u2",
        "item_id": item,
        "event_type": "purchase",
        "channel": channel,
        "price": price,
        "quantity": qty,
        "timestamp": at(days_ago),
        **extra,
    }


HISTORY = [
    # Order 1, web, 60 days ago: 2 x 10 + 5 = 25
    line("i04", 10.0, 2, "web", 60, session_id="o1"),
    line("i06", 5.0, 1, "web", 60, session_id="o1"),
    # Order 2, in store s1, 30 days ago (no session: same time and store = one receipt): 15 + 5 = 20
    line("i08", 7.5, 2, "store", 30, store_id="s1"),
    line("i10", 5.0, 1, "store", 30, store_id="s1"),
    # Order 3, app, 10 days ago: 40
    line("i12", 40.0, 1, "app", 10, session_id="o3"),
    # A return on the web: -10
    {**line("i04", 10.0, 1, "web", 5), "event_type": "return"},
    # Browsing on the app, the last activity 3 days ago
    {
        "customer_id": "u2",
        "item_id": "i14",
        "event_type": "view",
        "channel": "app",
        "timestamp": at(4),
    },
    {
        "customer_id": "u2",
        "item_id": "i16",
        "event_type": "view",
        "channel": "app",
        "timestamp": at(3.5),
    },
    {
        "customer_id": "u2",
        "item_id": "i18",
        "event_type": "view",
        "channel": "app",
        "timestamp": at(3),
    },
]


@pytest.fixture
def tablet(client: TestClient) -> TestClient:
    assert client.post("/v1/events", json=HISTORY).status_code == 202
    link = {
        "customer_id": "u2",
        "identifiers": ["loyalty:L0000042", "email:Ann@Example.com", "phone:+44 7700 900042"],
    }
    assert client.post("/v1/identities/link", json=link).status_code == 200
    return client


@pytest.mark.parametrize(
    "params",
    [
        {"loyalty": " l000 0042 "},
        {"email": "ANN@example.COM"},
        {"phone": "0044 (7700) 900-042"},
        {"phone": "+447700900042"},
    ],
)
def test_lookup_normalises_the_identifier(tablet: TestClient, params: dict[str, str]) -> None:
    response = tablet.get("/v1/customers/lookup", params=params)
    assert response.status_code == 200, response.text
    assert response.json()["customer_id"] == "u2"
    assert "*" in response.json()["identifier"]  # masked, never echoed in full


def test_an_unknown_identifier_is_a_404_with_a_clear_message(tablet: TestClient) -> None:
    response = tablet.get("/v1/customers/lookup", params={"loyalty": "L999"})
    assert response.status_code == 404
    assert response.json()["type"] == "urn:omnireco:problem:unknown-customer"
    assert "no customer has loyalty" in response.json()["detail"]


@pytest.mark.parametrize("params", [{}, {"loyalty": "L1", "email": "a@b.c"}])
def test_lookup_needs_exactly_one_identifier(tablet: TestClient, params: dict[str, str]) -> None:
    assert tablet.get("/v1/customers/lookup", params=params).status_code == 400


def test_the_profile_figures_match_the_history(tablet: TestClient) -> None:
    p = tablet.get("/v1/customers/u2/profile").json()
    assert p["lifetime_value"] == pytest.approx(75.0)
    assert p["order_count"] == 3
    assert p["average_order_value"] == pytest.approx(25.0)
    assert p["usual_purchase_interval_days"] == pytest.approx(25.0, abs=0.1)
    assert p["days_since_last_activity"] == pytest.approx(3.0, abs=0.1)
    assert p["churn_risk"] is False
    assert p["stage"] == "active"
    mix = {m["channel"]: m for m in p["channel_mix"]}
    assert {c: m["events"] for c, m in mix.items()} == {"app": 4, "store": 2, "web": 3}
    assert mix["web"]["spend"] == pytest.approx(15.0)
    assert mix["app"]["spend_share"] == pytest.approx(40 / 75, abs=1e-3)
    assert {c: m["orders"] for c, m in mix.items()} == {"app": 1, "store": 1, "web": 1}
    assert sum(m["spend"] for m in p["spend_by_month"]) == pytest.approx(75.0)
    store_lines = p["recent_purchases"]["store"]
    assert [x["item_id"] for x in store_lines] == ["i10", "i08"] or [
        x["item_id"] for x in store_lines
    ] == ["i08", "i10"]
    assert all(x["store_id"] == "s1" for x in store_lines)
    assert p["favourite_categories"][0] == "even"
    assert len(p["identifiers"]) == 3
    assert not any("Ann@Example.com".lower() in i for i in p["identifiers"])
    assert all("*" in i for i in p["identifiers"])


def test_an_event_at_the_epoch_is_a_first_activity_not_a_missing_one(client: TestClient) -> None:
    epoch = {**line("i04", 10.0, 1, "web", 0), "customer_id": "u9"}
    epoch["timestamp"] = "1970-01-01T00:00:00Z"
    assert client.post("/v1/events", json=epoch).status_code == 202
    p = client.get("/v1/customers/u9/profile").json()
    assert p["first_seen"].startswith("1970-01-01") and p["last_seen"].startswith("1970-01-01")
    assert p["days_since_last_activity"] > 20_000


def test_the_profile_recommends_what_this_store_has(tablet: TestClient) -> None:
    tablet.put(
        "/v1/inventory",
        json={"items": [{"item_id": i, "stores": {"s1": True}} for i in ("i00", "i02", "i19")]},
    )
    p = tablet.get("/v1/customers/u2/profile", params={"store_id": "s1"}).json()
    assert {r["item_id"] for r in p["recommendations"]} <= {"i00", "i02", "i19"}
    assert p["recommendations"]
    assert p["store_id"] == "s1"


def test_lookup_and_presentations_are_recorded_as_tablet_events(tablet: TestClient) -> None:
    offer = {"title": "Free delivery", "kind": "free_delivery", "channels": ["tablet"], "value": 5}
    assert tablet.put("/v1/offers/spring-10", json=offer).status_code == 201
    tablet.get("/v1/customers/lookup", params={"loyalty": "L0000042", "store_id": "s1"})
    presented = tablet.post(
        "/v1/customers/u2/presentations", json={"offer_id": "spring-10", "store_id": "s1"}
    )
    assert presented.status_code == 202, presented.text
    mix = {
        m["channel"]: m["events"]
        for m in tablet.get("/v1/customers/u2/profile").json()["channel_mix"]
    }
    assert mix["tablet"] == 2


def keys_under(redis_url: str, key_prefix: str) -> set[bytes]:
    return set(redis.Redis.from_url(redis_url).scan_iter(match=f"{key_prefix}:*"))


@pytest.mark.parametrize("store_id", ["a\nb", "s" * 300])
def test_a_lookup_from_a_store_id_the_event_contract_refuses_is_a_400_and_records_nothing(
    tablet: TestClient, redis_url: str, key_prefix: str, store_id: str
) -> None:
    before = keys_under(redis_url, key_prefix)
    stream = redis.Redis.from_url(redis_url).xlen(f"{key_prefix}:events")
    response = tablet.get(
        "/v1/customers/lookup", params={"loyalty": "L0000042", "store_id": store_id}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "query.store_id"
    assert keys_under(redis_url, key_prefix) == before
    assert redis.Redis.from_url(redis_url).xlen(f"{key_prefix}:events") == stream


@pytest.mark.parametrize(
    ("customer", "kind"),
    [
        ("pr%0Aes", "validation"),  # refused with the path parameter
        # Normalising lowers "İ" into two characters: 512 of them, over the contract's 256. The
        # event is refused where it is written, before the contact is counted.
        ("email:" + "İ" * 250, "invalid-event"),
    ],
)
def test_a_presentation_the_event_contract_refuses_is_a_400_and_records_nothing(
    tablet: TestClient, redis_url: str, key_prefix: str, customer: str, kind: str
) -> None:
    offer = {"title": "Free delivery", "kind": "free_delivery", "channels": ["tablet"], "value": 5}
    assert tablet.put("/v1/offers/spring-10", json=offer).status_code == 201
    before = keys_under(redis_url, key_prefix)
    response = tablet.post(
        f"/v1/customers/{customer}/presentations", json={"offer_id": "spring-10"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["type"] == f"urn:omnireco:problem:{kind}"
    assert keys_under(redis_url, key_prefix) == before  # no event, no contact


def test_presenting_an_unknown_offer_is_a_404(tablet: TestClient) -> None:
    response = tablet.post("/v1/customers/u2/presentations", json={"offer_id": "nope"})
    assert response.status_code == 404


def test_a_storefront_key_cannot_read_profiles(tablet: TestClient) -> None:
    tablet.headers.pop("Authorization")
    for path in ("/v1/customers/u2/profile", "/v1/customers/lookup?loyalty=L0000042"):
        assert tablet.get(path, headers={"X-API-Key": STOREFRONT_KEY}).status_code == 403


def test_an_unknown_customer_has_no_profile(tablet: TestClient) -> None:
    assert tablet.get("/v1/customers/nobody/profile").status_code == 404


def test_a_customer_of_the_training_data_has_a_profile_before_any_event(
    client: TestClient,
) -> None:
    # u0 bought i00 in the model's training data; the service has seen nothing of u0 since.
    response = client.get("/v1/customers/u0/profile")
    assert response.status_code == 200, response.text
    p = response.json()
    assert p["favourite_categories"] == ["even"]
    assert p["recommendations"]
    assert "i00" not in {r["item_id"] for r in p["recommendations"]}


def test_the_tablet_page_is_served_without_a_key(tablet: TestClient) -> None:
    tablet.headers.pop("Authorization")
    page = tablet.get("/tablet/")
    assert page.status_code == 200
    assert "Customer at the till" in page.text
    assert tablet.get("/tablet/tablet.js").status_code == 200


RULES = StageRules()


@pytest.mark.parametrize(
    ("first_days", "idle", "interval", "orders", "expected"),
    [
        (None, None, None, 0, "new"),
        (10, 2, None, 1, "new"),
        (100, 2, None, 1, "active"),
        (300, 5, 20, 6, "loyal"),
        (300, 25, 20, 6, "lapsing"),  # quiet for longer than their usual 20 days
        (300, 10, 5, 3, "active"),  # 10 days quiet, usual 5, but under the 14-day floor
        (300, 50, None, 1, "lapsing"),  # no interval yet: 45 days of silence
        (400, 130, 20, 6, "lapsed"),  # > 3 x 20 and > 120 days
        (400, 100, 40, 6, "lapsing"),  # > 40 but < 3 x 40 = 120
    ],
)
def test_journey_stages(
    first_days: float | None, idle: float | None, interval: float | None, orders: int, expected: str
) -> None:
    first = NOW - timedelta(days=first_days) if first_days is not None else None
    assert stage(first, idle, interval, orders, NOW, RULES) == expected
