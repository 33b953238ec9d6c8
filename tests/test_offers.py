"""Offers over HTTP against a real Redis and the checkerboard model.

Checkerboard reminder: even customers (u0, u2...) like even items, odd customers odd items;
categories are "even" and "odd"; u0 bought i00 and u1 bought i01 in the training data, whose
window ends 2026-01-01 (so training-only customers have been quiet for a long time).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
import redis
from litestar.testing import TestClient
from redis.asyncio import Redis

from benchmarks.offers_export import make_offers
from service import artifact, offer_service
from service.offers import Offer
from service.ranking import FactorModel
from service.store import Store
from tests.test_omnichannel import event, post

NOW = datetime.now(UTC)


def ago(**delta: float) -> str:
    return (NOW - timedelta(**delta)).isoformat()


def offer(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "title": "10% off even things",
        "kind": "percent_off",
        "amount": 10,
        "target": {"categories": ["even"]},
        "channels": ["email", "app", "web", "tablet"],
        "value": 10.0,
        "cost": 1.0,
    }
    return {**body, **changes}


def put_offer(client: TestClient, offer_id: str, **changes: object) -> None:
    response = client.put(f"/v1/offers/{offer_id}", json=offer(**changes))
    assert response.status_code in (200, 201), response.text


def consent(client: TestClient, customer: str, **channels: bool) -> None:
    body = {"marketing": channels or {"email": True, "app": True, "web": True, "tablet": True}}
    response = client.put(f"/v1/customers/{customer}/consent", json=body)
    assert response.status_code == 200, response.text


def offers(client: TestClient, customer: str, channel: str = "email", **params: object) -> dict:  # type: ignore[type-arg]
    response = client.get(f"/v1/customers/{customer}/offers", params={"channel": channel, **params})
    assert response.status_code == 200, response.text
    return response.json()


def offer_ids(body: dict) -> list[str]:  # type: ignore[type-arg]
    return [o["offer_id"] for o in body["offers"]]


def set_rules(client: TestClient, **rules: object) -> None:
    response = client.put("/v1/offer-rules", json=rules)
    assert response.status_code == 200, response.text


def export(client: TestClient, **body: object) -> list[dict]:  # type: ignore[type-arg]
    response = client.post("/v1/exports/offers", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line]


def test_the_catalogue_creates_reads_replaces_lists_and_deletes(client: TestClient) -> None:
    assert client.put("/v1/offers/o1", json=offer()).status_code == 201
    assert client.put("/v1/offers/o1", json=offer(priority=3)).status_code == 200
    got = client.get("/v1/offers/o1").json()
    assert got["offer_id"] == "o1"
    assert got["priority"] == 3
    assert [o["offer_id"] for o in client.get("/v1/offers").json()] == ["o1"]
    assert client.delete("/v1/offers/o1").status_code == 204
    assert client.get("/v1/offers/o1").status_code == 404
    assert client.delete("/v1/offers/o1").status_code == 404


def test_the_catalogue_needs_the_admin_scope(client: TestClient) -> None:
    client.headers["Authorization"] = "Bearer test-storefront-key"
    assert client.put("/v1/offers/o1", json=offer()).status_code == 403
    assert client.get("/v1/customers/u0/offers").status_code == 403


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "half_price"}, "$.kind"),
        ({"channels": ["email", "fax"]}, "$.channels[1]"),
        ({"channels": []}, "$.channels"),
        ({"amount": 150}, "$.amount"),
        ({"kind": "amount_off", "amount": None}, "$.amount"),
        ({"target": {}}, "$.target"),
        ({"kind": "bundle", "target": {"items": ["i00"]}}, "$.target.items"),
        ({"value": -1}, "$.value"),
        ({"valid_from": ago(days=1), "valid_until": ago(days=2)}, "$.valid_until"),
        ({"valid_until": "2026-01-01T00:00:00"}, "$.valid_until"),
        ({"caps": [{"max": 0, "period_days": 7}]}, "$.caps[0].max"),
        (
            {"eligibility": {"min_days_since_purchase": 9, "max_days_since_purchase": 3}},
            "$.eligibility.max_days_since_purchase",
        ),
        ({"eligibility": {"trigger": "birthday"}}, "$.eligibility.trigger"),
        ({"colour": "red"}, "$"),
        ({"offer_id": "other"}, "$.offer_id"),
    ],
)
def test_invalid_offers_are_rejected_with_the_field_at_fault(
    client: TestClient, changes: dict[str, object], field: str
) -> None:
    response = client.put("/v1/offers/o1", json=offer(**changes))
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"] == "urn:omnireco:problem:validation"
    assert problem["errors"][0]["field"] == field
    assert client.get("/v1/offers/o1").status_code == 404


def test_invalid_rules_are_rejected_with_the_field_at_fault(client: TestClient) -> None:
    response = client.put(
        "/v1/offer-rules", json={"segments": [{"name": "x", "ltv_bands": ["gold"]}]}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "$.segments[0].ltv_bands"


@pytest.mark.parametrize(
    ("changes", "customer", "channel", "offered"),
    [
        ({}, "u0", "email", True),
        ({"valid_until": ago(days=1)}, "u0", "email", False),
        ({"valid_from": ago(days=-1)}, "u0", "email", False),
        ({"valid_from": ago(days=1), "valid_until": ago(days=-1)}, "u0", "email", True),
        ({"channels": ["app"]}, "u0", "email", False),
        ({"channels": ["app"]}, "u0", "app", True),
        ({"eligibility": {"segments": ["new"]}}, "u0", "email", False),  # u0 bought before
        ({"eligibility": {"segments": ["new"]}}, "u4", "email", True),  # u4 never bought
        ({"eligibility": {"segments": ["quiet"]}}, "u0", "email", True),  # silent since training
        ({"eligibility": {"ltv_bands": ["high"]}}, "u0", "email", False),
        ({"eligibility": {"ltv_bands": ["low"]}}, "u0", "email", True),
        ({"eligibility": {"bought_categories": ["even"]}}, "u0", "email", True),
        ({"eligibility": {"bought_categories": ["even"]}}, "u2", "email", False),
        ({"eligibility": {"not_bought_categories": ["even"]}}, "u0", "email", False),
        ({"eligibility": {"min_days_since_purchase": 30}}, "u0", "email", True),
        ({"eligibility": {"max_days_since_purchase": 30}}, "u0", "email", False),
        ({}, "u8", "email", False),  # no marketing consent
    ],
)
def test_eligibility_table(
    client: TestClient,
    changes: dict[str, object],
    customer: str,
    channel: str,
    offered: bool,
) -> None:
    for c in ("u0", "u2", "u4"):
        consent(client, c)
    put_offer(client, "o1", **changes)
    body = offers(client, customer, channel)
    assert ("o1" in offer_ids(body)) is offered
    if customer == "u8":
        assert body["skipped"] == "no marketing consent"


def test_offers_rank_by_affinity_times_value_minus_cost_with_a_reason(client: TestClient) -> None:
    consent(client, "u2")
    put_offer(client, "even", value=10.0, cost=1.0)
    put_offer(client, "odd", target={"categories": ["odd"]}, value=10.0, cost=1.0)
    put_offer(client, "delivery", kind="free_delivery", amount=None, target={}, value=4.0)
    post(client, *(event("u2", "i04", "view", "app") for _ in range(2)))
    body = offers(client, "u2", record="false")
    assert offer_ids(body)[0] == "even"
    top = body["offers"][0]
    assert top["expected_value"] == pytest.approx(top["affinity"] * 10.0 - 1.0, abs=1e-5)
    assert top["affinity"] > 0
    assert top["reason"] == "you viewed i04 twice on the app"
    # Odd items mean nothing to an even customer: expected value 0 - cost, not made.
    assert "odd" not in offer_ids(body)


def test_a_store_purchase_in_the_category_is_the_reason(client: TestClient) -> None:
    consent(client, "u2")
    put_offer(client, "even")
    post(client, event("u2", "i06", "purchase", "store", store_id="s1", price=20.0))
    assert offers(client, "u2", record="false")["offers"][0]["reason"] == (
        "bought in this category in store"
    )


def test_no_personalisation_consent_still_gets_offers_without_model_affinity(
    client: TestClient,
) -> None:
    response = client.put(
        "/v1/customers/u2/consent", json={"personalisation": False, "marketing": {"email": True}}
    )
    assert response.status_code == 200
    put_offer(client, "even", value=100.0, cost=1.0)
    [top] = offers(client, "u2", record="false")["offers"]
    assert top["affinity"] == pytest.approx(0.1)  # the configured default affinity
    assert top["reason"] == "available to you now"


def test_caps_count_presentations_across_channels(client: TestClient) -> None:
    consent(client, "u2")
    set_rules(client, suppress_elsewhere_hours=0)
    put_offer(client, "o1", caps=[{"max": 2, "period_days": 7}])
    assert offer_ids(offers(client, "u2", "app")) == ["o1"]
    assert offer_ids(offers(client, "u2", "web")) == ["o1"]
    assert offer_ids(offers(client, "u2", "email")) == []
    assert offer_ids(offers(client, "u2", "tablet")) == []


def test_an_offer_shown_on_the_tablet_is_not_repeated_by_email(client: TestClient) -> None:
    consent(client, "u2")
    put_offer(client, "o1")
    assert offer_ids(offers(client, "u2", "tablet")) == ["o1"]
    assert offer_ids(offers(client, "u2", "email")) == []
    assert offer_ids(offers(client, "u2", "tablet")) == ["o1"]  # same channel: the cap decides
    lines = export(client, channel="email", audience={"customer_ids": ["u2"]})
    assert lines[0]["offers"] == []


def test_previews_are_not_recorded(client: TestClient) -> None:
    consent(client, "u2")
    put_offer(client, "o1", caps=[{"max": 1, "period_days": 1}])
    for _ in range(3):
        assert offer_ids(offers(client, "u2", record="false")) == ["o1"]


def test_the_abandoned_cart_becomes_the_email_offer_until_it_is_bought(
    client: TestClient,
) -> None:
    consent(client, "u3")
    put_offer(client, "odd", target={"categories": ["odd"]}, value=50.0, cost=1.0)
    put_offer(
        client,
        "cart",
        title="5 off what you left behind",
        kind="amount_off",
        amount=5,
        target={"items": ["i07"]},
        value=2.0,
        cost=1.5,
        eligibility={"trigger": "abandoned_cart"},
    )
    assert offer_ids(offers(client, "u3", record="false")) == ["odd"]  # nothing left behind yet
    post(client, event("u3", "i07", "add_to_cart", "web", timestamp=ago(hours=3)))
    body = offers(client, "u3", "email", record="false")
    assert offer_ids(body) == ["cart", "odd"]  # top although its expected value is lower
    assert body["offers"][0]["reason"] == "you left i07 in your cart online"
    assert body["offers"][0]["trigger"] == "abandoned_cart"
    assert offer_ids(offers(client, "u3", "app", record="false"))[0] == "cart"
    assert offer_ids(offers(client, "u3", "web", record="false"))[0] == "odd"  # not a cart channel
    post(client, event("u3", "i07", "purchase", "store", store_id="s1"))
    assert offer_ids(offers(client, "u3", "email", record="false")) == ["odd"]


def test_a_cart_offer_below_the_minimum_value_is_made_only_on_the_cart_channels(
    client: TestClient,
) -> None:
    """The trigger lifts the expected value's floor only where it puts the offer first."""
    consent(client, "u3")
    put_offer(client, "cart", target={"items": ["i07"]}, value=0.0, cost=1.0,
              eligibility={"trigger": "abandoned_cart"})  # fmt: skip
    post(client, event("u3", "i07", "add_to_cart", "web", timestamp=ago(hours=3)))
    assert offer_ids(offers(client, "u3", "email", record="false")) == ["cart"]
    assert offer_ids(offers(client, "u3", "web", record="false")) == []


def test_a_cart_item_added_moments_ago_is_not_abandoned(client: TestClient) -> None:
    consent(client, "u3")
    put_offer(client, "cart", target={"items": ["i07"]}, eligibility={"trigger": "abandoned_cart"})
    post(client, event("u3", "i07", "add_to_cart", "app"))
    assert offer_ids(offers(client, "u3", record="false")) == []
    set_rules(client, abandoned_cart={"after_minutes": 0})
    assert offer_ids(offers(client, "u3", record="false")) == ["cart"]


@pytest.mark.parametrize(
    ("purchase_days_ago", "eligible"),
    [
        ((80, 70, 60), True),  # buys every 10 days, silent for 60
        ((20, 10, 1), False),  # buys every ~10 days, bought yesterday
        ((), False),  # never bought: nothing to win back
    ],
)
def test_win_back_offers_go_to_customers_in_a_moment_of_silence(
    client: TestClient, purchase_days_ago: tuple[int, ...], eligible: bool
) -> None:
    consent(client, "c1")
    put_offer(
        client,
        "wb",
        kind="loyalty_points",
        amount=500,
        target={},
        eligibility={"trigger": "win_back"},
        value=5.0,
    )
    for days in purchase_days_ago:
        post(client, event("c1", "i02", "purchase", "web", timestamp=ago(days=days), price=30.0))
    body = offers(client, "c1", record="false")
    assert ("wb" in offer_ids(body)) is eligible
    if eligible:
        assert body["offers"][0]["reason"] == "we have not seen you for 60 days"


def test_win_back_uses_the_configured_silence(client: TestClient) -> None:
    consent(client, "c1")
    put_offer(
        client,
        "wb",
        kind="free_delivery",
        amount=None,
        target={},
        eligibility={"trigger": "win_back"},
    )
    for days in (80, 70, 60):
        post(client, event("c1", "i02", "purchase", "web", timestamp=ago(days=days)))
    set_rules(client, win_back={"factor": 10})
    assert offer_ids(offers(client, "c1", record="false")) == []


def test_a_redeemed_offer_is_not_made_again(client: TestClient) -> None:
    consent(client, "u2")
    put_offer(client, "o1")
    assert offer_ids(offers(client, "u2", record="false")) == ["o1"]
    post(client, event("u2", None, "offer_redeemed", "store", offer_id="o1"))
    assert offer_ids(offers(client, "u2", record="false")) == []


def test_the_export_matches_the_single_customer_endpoint(client: TestClient) -> None:
    for c in ("u0", "u1", "u2", "u3", "newbie"):
        consent(client, c, email=True)
    put_offer(client, "even")
    put_offer(client, "odd", target={"categories": ["odd"]})
    put_offer(client, "delivery", kind="free_delivery", amount=None, target={}, value=3.0)
    post(client, event("u2", "i03", "add_to_cart", "app"), event("newbie", "i05", "view", "web"))
    audience = ["u0", "u1", "u2", "u3", "u4", "newbie"]  # u4 has no marketing consent
    single = {c: offers(client, c, "email", k=2, items=3, record="false") for c in audience}
    lines = export(client, channel="email", audience={"customer_ids": audience}, offers=2, items=3)
    assert [line["customer_id"] for line in lines] == ["u0", "u1", "u2", "u3", "newbie"]
    for line in lines:
        expected = single[line["customer_id"]]
        assert line["offers"] == expected["offers"]
        assert line["items"] == expected["items"]
        assert len(line["items"]) == 3
        recs = client.get(
            f"/v1/customers/{line['customer_id']}/recommendations",
            params={"channel": "email", "k": 3},
        ).json()
        assert line["items"] == recs["items"]  # the same items as the recommendations endpoint


def test_an_export_is_recorded_in_the_shared_contact_history(client: TestClient) -> None:
    consent(client, "u0")
    put_offer(client, "o1", caps=[{"max": 1, "period_days": 30}])
    [line] = export(client, channel="email", audience={"customer_ids": ["u0"]})
    assert [o["offer_id"] for o in line["offers"]] == ["o1"]
    assert offer_ids(offers(client, "u0", "app")) == []


def test_a_segment_audience_exports_the_segment_only(client: TestClient) -> None:
    for i in range(10):
        consent(client, f"u{i}", email=True)
    put_offer(client, "o1", target={}, kind="free_delivery", amount=None)
    lines = export(client, channel="email", audience={"segment": "new"}, items=0, record=False)
    assert [line["customer_id"] for line in lines] == [f"u{i}" for i in range(2, 10)]
    everyone = export(client, channel="email", items=0, record=False)
    assert len(everyone) == 10


@pytest.mark.parametrize(
    "body",
    [
        {"audience": {"segment": "gold"}},
        {"audience": {"segment": "new", "customer_ids": ["u1"]}},
        {"channel": "fax"},
        {"offers": 0},
    ],
)
def test_bad_export_requests_are_refused(client: TestClient, body: dict[str, object]) -> None:
    assert client.post("/v1/exports/offers", json=body).status_code == 400


def test_an_export_with_an_invalid_identifier_is_refused_before_any_line_or_contact(
    client: TestClient,
) -> None:
    consenting = [f"u{i}" for i in range(6)]
    for c in consenting:
        consent(client, c, email=True)
    caps = [{"max": 1, "period_days": 30}]
    put_offer(client, "o1", target={}, kind="free_delivery", amount=None, caps=caps)
    fillers = [f"nobody{i}" for i in range(300)]  # past the first chunk of 256
    audience = {"customer_ids": [*consenting, *fillers, "email:"]}
    response = client.post("/v1/exports/offers", json={"audience": audience, "record": True})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:omnireco:problem:invalid-identifier"
    # No contact was recorded: under a cap of one, each customer still gets the offer.
    lines = export(client, audience={"customer_ids": consenting})
    assert [(line["customer_id"], offer_ids(line)) for line in lines] == [
        (c, ["o1"]) for c in consenting
    ]


def test_a_chunk_scored_in_a_thread_matches_the_endpoints(client: TestClient) -> None:
    audience = [f"u{i}" for i in range(10)] + ["newbie"]  # more than one slice: a thread
    for c in audience:
        consent(client, c, email=True)
    put_offer(client, "even")
    put_offer(client, "odd", target={"categories": ["odd"]})
    post(client, event("newbie", "i05", "view", "web"), event("u4", "i01", "view", "app"))
    single = {c: offers(client, c, "email", k=2, items=4, record="false") for c in audience}
    lines = export(client, audience={"customer_ids": audience}, offers=2, items=4, record=False)
    assert [line["customer_id"] for line in lines] == audience
    for line in lines:
        assert line["offers"] == single[line["customer_id"]]["offers"]
        assert line["items"] == single[line["customer_id"]]["items"]


def test_erasure_removes_the_contact_history(client: TestClient, redis_url: str) -> None:
    consent(client, "u2")
    put_offer(client, "o1")
    assert offer_ids(offers(client, "u2")) == ["o1"]
    post(client, event("u2", None, "offer_redeemed", "store", offer_id="o1"))
    prefix = client.app.state.settings.key_prefix
    r = redis.Redis.from_url(redis_url)
    try:
        assert r.exists(f"{prefix}:{{c:u2}}:offers:contacts", f"{prefix}:{{c:u2}}:offers:redeemed")
        assert client.delete("/v1/customers/u2").status_code in (200, 204)
        assert not r.exists(f"{prefix}:{{c:u2}}:offers:contacts")
        assert not r.exists(f"{prefix}:{{c:u2}}:offers:redeemed")
    finally:
        r.close()


@pytest.mark.parametrize("categories", [["shoes", "bags"], []])
def test_the_benchmarks_offers_are_valid_with_and_without_categories(categories: list[str]) -> None:
    # The serving benchmark stores these for any catalogue, trained ones without categories too.
    offers = [
        msgspec.convert(o, Offer) for o in make_offers(20, categories, ["i1", "i2", "i3"], seed=3)
    ]
    assert len(offers) == 20
    targeted = {c for o in offers for c in (o.target.categories or [])}
    assert targeted <= set(categories) and bool(targeted) == bool(categories)


@pytest.mark.parametrize(
    ("others_waiting", "idles"), [(lambda: True, True), (None, True), (lambda: False, False)]
)
def test_an_export_idles_for_other_requests_only_while_there_are_some(
    others_waiting: Callable[[], bool] | None, idles: bool
) -> None:
    """Half the loop (share 0.5): after each slice of work the export idles as long as it
    worked while others wait (or nobody can tell), and only yields a turn when none do."""

    async def work_a_while() -> float:
        pace = offer_service._Pace(0.5, others_waiting)
        for _ in range(5):
            busy_until = time.perf_counter() + 2 * offer_service.TIME_SLICE
            while time.perf_counter() < busy_until:
                pass
            await pace.tick()
        return pace.idled

    idled = asyncio.run(work_a_while())
    # Five slices of at least 2 ms each: at least 10 ms idled at half the loop.
    assert (idled >= 5 * 2 * offer_service.TIME_SLICE) if idles else idled == 0.0


def test_requests_arriving_while_the_plan_is_built_share_one_build(
    client: TestClient, redis_url: str, key_prefix: str, model_dir: Path
) -> None:
    # After a deploy or a change to the offers, each worker's first requests all find no plan:
    # one builds it, the others wait for that build instead of starting their own (at 100k items
    # and 20 offers, 32 builds at once made the first seconds' p99 395 ms against 48).
    put_offer(client, "even")
    put_offer(client, "odd", target={"categories": ["odd"]})
    model = FactorModel(artifact.load(artifact.resolve(model_dir)))

    async def at_once() -> list[offer_service.Catalogue]:
        store = Store(Redis.from_url(redis_url), prefix=key_prefix)
        try:
            return await asyncio.gather(
                *(offer_service.load_catalogue(store, model) for _ in range(8))
            )
        finally:
            await store.aclose()

    catalogues = asyncio.run(at_once())
    assert len({id(c.plan) for c in catalogues}) == 1
    assert [o.offer_id for o in catalogues[0].plan.offers] == ["even", "odd"]
    # A later request finds the plan built.
    assert asyncio.run(at_once())[0].plan is catalogues[0].plan
