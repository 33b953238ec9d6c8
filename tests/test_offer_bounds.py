"""Every duration and figure of offers and rules is bounded, so none can break a request later.

Over HTTP against a real Redis and the checkerboard model (see tests/test_offers.py).
"""

from __future__ import annotations

import pytest
import redis
from litestar.testing import TestClient

from service.store.keys import Keys
from tests.test_offers import consent, export, offer, offer_ids, offers, put_offer, set_rules
from tests.test_omnichannel import event, post


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ({"contact_history_days": 740000}, "$.contact_history_days"),
        ({"contact_history_days": 1e9}, "$.contact_history_days"),
        ({"suppress_elsewhere_hours": 1e9}, "$.suppress_elsewhere_hours"),
        ({"redeemed_block_days": 1e9}, "$.redeemed_block_days"),
        ({"abandoned_cart": {"after_minutes": 1e12}}, "$.abandoned_cart.after_minutes"),
        ({"win_back": {"default_interval_days": 1e9}}, "$.win_back.default_interval_days"),
        ({"win_back": {"min_interval_days": 1e9}}, "$.win_back.min_interval_days"),
        ({"win_back": {"factor": 1e300}}, "$.win_back.factor"),
        ({"min_expected_value": -1e300}, "$.min_expected_value"),
        ({"ltv_bands": [{"name": "x", "min_value": 1e300}]}, "$.ltv_bands[0].min_value"),
        (
            {"segments": [{"name": "x", "max_days_since_purchase": 1e9}]},
            "$.segments[0].max_days_since_purchase",
        ),
    ],
)
def test_rules_out_of_range_are_a_400_naming_the_field(
    client: TestClient, rules: dict[str, object], field: str
) -> None:
    response = client.put("/v1/offer-rules", json=rules)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == field
    assert client.get("/v1/offer-rules").json()["contact_history_days"] == 90.0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"caps": [{"max": 5, "period_days": 800000}]}, "$.caps[0].period_days"),
        ({"caps": [{"max": 10**7, "period_days": 7}]}, "$.caps[0].max"),
        ({"caps": [{"max": 1, "period_days": 7}] * 11}, "$.caps"),
        ({"value": 1e300}, "$.value"),
        ({"cost": 1e300}, "$.cost"),
        ({"kind": "amount_off", "amount": 1e300}, "$.amount"),
        ({"priority": 10**12}, "$.priority"),
        (
            {"eligibility": {"min_days_since_purchase": 1e9}},
            "$.eligibility.min_days_since_purchase",
        ),
    ],
)
def test_offers_out_of_range_are_a_400_naming_the_field(
    client: TestClient, changes: dict[str, object], field: str
) -> None:
    response = client.put("/v1/offers/o2", json=offer(**changes))
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == field
    assert client.get("/v1/offers/o2").status_code == 404


def test_the_longest_durations_allowed_still_answer(client: TestClient) -> None:
    """At every bound, with a contact and a redemption to look back on: offers and the export
    answer (durations past them raised OverflowError, a 500, on the second request)."""
    set_rules(
        client,
        contact_history_days=3650,
        suppress_elsewhere_hours=87600,
        redeemed_block_days=3650,
        abandoned_cart={"after_minutes": 5256000},
        win_back={"default_interval_days": 3650, "min_interval_days": 3650, "factor": 100},
    )
    consent(client, "u0")
    put_offer(client, "o1", caps=[{"max": 5, "period_days": 3650}])
    put_offer(client, "o2", kind="free_delivery", amount=None, target={}, value=5.0)
    assert offer_ids(offers(client, "u0", "email", k=2)) == ["o1", "o2"]
    post(client, event("u0", None, "offer_redeemed", "store", offer_id="o2"))
    assert offer_ids(offers(client, "u0", "email", k=2)) == ["o1"]
    assert offer_ids(offers(client, "u0", "web", k=2)) == []  # shown on email: suppressed
    [line] = export(client, channel="email", audience={"customer_ids": ["u0"]}, items=0)
    assert offer_ids(line) == ["o1"]


def test_stored_rules_that_break_the_bounds_give_way_to_the_defaults(
    client: TestClient, redis_url: str, key_prefix: str
) -> None:
    """Rules stored before the bounds existed: requests answer with the defaults, not a 500."""
    r = redis.Redis.from_url(redis_url)
    try:
        r.set(Keys(key_prefix).offer_rules, b'{"contact_history_days": 740000}')
    finally:
        r.close()
    put_offer(client, "o1")  # bumps the catalogue's version: the rules are read again
    consent(client, "u0")
    assert offer_ids(offers(client, "u0", "email")) == ["o1"]
    assert client.get("/v1/offer-rules").json()["contact_history_days"] == 90.0
