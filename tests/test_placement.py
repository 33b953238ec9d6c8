"""Placements (where an answer is shown) over HTTP and a real Redis: accepted, refused, echoed,
counted per placement with bounded names, and targeted by experiments."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import redis
from litestar.testing import TestClient

from service.settings import Settings
from tests.conftest import ADMIN_KEY, client_for, replace

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def event(kind: str, customer: str, item: str, **more: Any) -> dict[str, Any]:
    return {
        "customer_id": customer,
        "item_id": item,
        "event_type": kind,
        "channel": "web",
        "timestamp": NOW.isoformat(),
        **more,
    }


def post(client: TestClient, *events: dict[str, Any]) -> None:  # type: ignore[type-arg]
    response = client.post("/v1/events", json=list(events))
    assert response.status_code == 202, response.text


def flush(client: TestClient) -> None:  # type: ignore[type-arg]
    """Write the served counters now (the background flush runs once a second)."""
    client.blocking_portal.call(client.app.state.runtime.tracking.flush)


def by_placement(client: TestClient) -> dict[str, dict[str, dict[str, Any]]]:  # type: ignore[type-arg]
    response = client.get("/v1/dashboard", params={"days": 2})
    assert response.status_code == 200, response.text
    return {
        p["placement"]: {c["channel"]: c["figures"] for c in p["channels"]}
        for p in response.json()["placements"]
    }


def test_every_recommendation_route_echoes_its_placement(client: TestClient) -> None:  # type: ignore[type-arg]
    cart = client.get("/v1/customers/u0/recommendations", params={"placement": "cart", "k": 2})
    assert cart.status_code == 200 and cart.json()["placement"] == "cart"
    plain = client.get("/v1/customers/u0/recommendations", params={"k": 2}).json()
    assert plain["placement"] is None
    # A placement does not change the ranking by itself.
    assert cart.json()["items"] == plain["items"]
    session = {"identifier": "cookie:p1", "placement": "mini-cart_2", "k": 2}
    assert client.post("/v1/recommendations", json=session).json()["placement"] == "mini-cart_2"
    similar = client.get("/v1/items/i00/similar", params={"placement": "product"}).json()
    assert similar["placement"] == "product"
    assert client.get("/v1/items/i00/similar").json()["placement"] is None


BAD = ["Cart", "cart\n", "9slot", "a b", "caf\u00e9", "x" * 33, ""]


@pytest.mark.parametrize("value", BAD)
def test_a_placement_outside_the_rule_is_a_400_naming_the_field(
    client: TestClient,  # type: ignore[type-arg]
    value: str,
) -> None:
    for path in ("/v1/customers/u0/recommendations", "/v1/items/i00/similar"):
        response = client.get(path, params={"placement": value})
        assert response.status_code == 400, (path, value)
        assert response.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in response.json()["errors"]] == ["query.placement"]
    response = client.post("/v1/recommendations", json={"placement": value})
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["$.placement"]
    response = client.post("/v1/events", json=[event("impression", "u0", "i02", placement=value)])
    assert response.status_code == 400
    assert "$[0].placement" in response.json()["detail"]


def test_the_openapi_documents_placement(client: TestClient) -> None:  # type: ignore[type-arg]
    spec = client.get("/schema/openapi.json").json()
    for path in ("/v1/customers/{customer_id}/recommendations", "/v1/items/{item_id}/similar"):
        [param] = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == "placement"]
        assert param["in"] == "query" and param["required"] is False
        pattern = param["schema"]["pattern"]
        assert re.match(pattern, "cart") and not re.match(pattern, "Cart")
        assert param["schema"]["maxLength"] == 32
    schemas = spec["components"]["schemas"]
    assert "pattern" in schemas["RecommendationRequest"]["properties"]["placement"]
    assert "placement" in schemas["RecommendationResponse"]["properties"]
    assert "placement" in schemas["SimilarItemsResponse"]["properties"]
    assert "placement" in schemas["Event"]["properties"]
    assert "placements" in schemas["ExperimentConfig"]["properties"]


def test_answers_impressions_clicks_and_purchases_are_counted_per_placement(
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    for _ in range(3):
        client.get("/v1/customers/u0/recommendations", params={"placement": "cart"})
    client.get("/v1/customers/u1/recommendations", params={"placement": "home"})
    client.get("/v1/customers/u1/recommendations")  # no placement: counted under "all" only
    flush(client)
    post(
        client,
        event("impression", "u0", "i02", placement="cart", request_id="r1"),
        event("impression", "u0", "i04", placement="cart", request_id="r1"),
        event("click", "u0", "i02", placement="cart", request_id="r1"),
        event("impression", "u1", "i03", placement="home", request_id="r2"),
        event("impression", "u1", "i05", request_id="r3"),  # no placement
    )
    later = (NOW + timedelta(minutes=5)).isoformat()
    post(client, event("purchase", "u0", "i02", channel="store", timestamp=later, price=12.0))
    placed = by_placement(client)
    assert sorted(placed) == ["cart", "home"]
    cart, home = placed["cart"]["web"], placed["home"]["web"]
    assert (cart["requests"], cart["impressions"], cart["clicks"], cart["conversions"]) == (
        3,
        2,
        1,
        1,
    )
    assert cart["revenue"] == pytest.approx(12.0) and cart["ctr"]["value"] == pytest.approx(0.5)
    assert (home["requests"], home["impressions"], home["clicks"]) == (1, 1, 0)
    assert placed["cart"]["all"]["impressions"] == 2
    totals = {c["channel"]: c["figures"] for c in client.get("/v1/dashboard").json()[
        "channel_figures"
    ]}  # fmt: skip
    assert (totals["web"]["requests"], totals["web"]["impressions"]) == (5, 4)
    metrics = client.get("/metrics").text
    answers = 'reco_placement_answers_total{channel="web",endpoint="recommendations",placement='
    assert answers + '"cart"} 3.0' in metrics and answers + '"none"} 1.0' in metrics
    assert (
        'reco_placement_events_total{channel="web",event_type="impression",placement="cart"} 2.0'
        in metrics
    )


def test_placements_not_configured_are_counted_as_other_and_labels_stay_bounded(
    settings: Settings,
) -> None:
    with client_for(replace(settings, placements="home, cart")) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        for n in range(40):
            slot = f"slot-{n}"
            answer = client.get("/v1/customers/u2/recommendations", params={"placement": slot})
            assert answer.json()["placement"] == slot  # echoed as given
            client.get("/v1/items/i01/similar", params={"placement": slot})
            post(client, event("impression", "u2", "i01", placement=slot))
        client.get("/v1/customers/u2/recommendations", params={"placement": "cart"})
        flush(client)
        placed = by_placement(client)
        assert sorted(placed) == ["cart", "other"]
        assert placed["other"]["web"]["requests"] == 40
        assert placed["other"]["web"]["impressions"] == 40
        labels = set(re.findall(r'placement="([^"]*)"', client.get("/metrics").text))
        assert labels == {"cart", "other"}


def test_a_bad_placements_setting_is_refused_before_the_service_starts() -> None:
    from service.settings import SettingsError
    from service.startup_checks import check

    for spec, message in (
        ("home,Cart", "RECO_PLACEMENTS='home,Cart': placement 'Cart' must be"),
        ("home,other", "RECO_PLACEMENTS='home,other': placement 'other' is reserved"),
        (",".join(f"p{n}" for n in range(33)), "RECO_PLACEMENTS='p0,"),
    ):
        env = {"RECO_PLACEMENTS": spec}
        with pytest.raises(SettingsError) as refused:
            check(Settings.from_env(env), env)
        assert str(refused.value).startswith(message)


CART_TEST = {
    "variants": [{"name": "control"}, {"name": "popular", "ranking": "popular"}],
    "placements": ["cart"],
}


def test_an_experiment_limited_to_a_placement_applies_there_only(
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    assert client.put("/v1/experiments/a-cart", json=CART_TEST).status_code == 200
    everywhere = {"variants": [{"name": "x"}, {"name": "y"}]}
    assert client.put("/v1/experiments/b-all", json=everywhere).status_code == 200
    path = "/v1/customers/u0/recommendations"
    assert client.get(path, params={"placement": "cart"}).json()["experiment"] == "a-cart"
    assert client.get(path, params={"placement": "home"}).json()["experiment"] == "b-all"
    assert client.get(path).json()["experiment"] == "b-all"
    session = {"customer_id": "u0", "placement": "cart"}
    assert client.post("/v1/recommendations", json=session).json()["experiment"] == "a-cart"
    # Offers name no placement: a test limited to the cart slot leaves them alone.
    offers = client.get("/v1/customers/u0/offers", params={"record": "false"}).json()
    assert offers["experiment"] == "b-all"
    assert client.delete("/v1/experiments/b-all").status_code == 204
    assert client.get(path, params={"placement": "home"}).json()["experiment"] is None


def test_only_the_targeted_placements_touches_count_in_its_results(
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    assert client.put("/v1/experiments/a-cart", json=CART_TEST).status_code == 200
    answer = client.get("/v1/customers/u3/recommendations", params={"placement": "cart"})
    variant = answer.json()["variant"]
    post(
        client,
        event("impression", "u3", "i01", placement="cart"),
        event("impression", "u3", "i03", placement="home"),
        event("impression", "u3", "i05"),
    )
    result = client.get("/v1/experiments/a-cart/results").json()
    [web] = [c for c in result["channels"] if c["channel"] == "web"]
    figures = {v["variant"]: v["figures"] for v in web["variants"]}
    assert figures[variant]["impressions"] == 1
    assert sum(f["impressions"] for f in figures.values()) == 1


@pytest.mark.parametrize(
    "placements", [["Cart"], ["cart\n"], [""], ["cart"] * 33, "cart"], ids=repr
)
def test_an_experiment_with_invalid_placements_is_a_400(
    client: TestClient,  # type: ignore[type-arg]
    placements: Any,
) -> None:
    response = client.put("/v1/experiments/bad", json={**CART_TEST, "placements": placements})
    assert response.status_code == 400
    assert "placements" in response.json()["detail"]
    assert client.get("/v1/experiments/bad").status_code == 404


def test_touches_stored_before_placements_existed_still_win_purchases(
    client: TestClient,  # type: ignore[type-arg]
    redis_url: str,
) -> None:
    """A touch as the previous version stored it (seven fields, no placement) is still read."""
    old = msgspec.msgpack.encode(["i07", "web", NOW.timestamp(), "click", "r0", None, None])
    key = client.app.state.runtime.store.keys.touches("u5")
    with redis.Redis.from_url(redis_url) as raw:
        raw.lpush(key, old)
    later = (NOW + timedelta(hours=1)).isoformat()
    post(client, event("purchase", "u5", "i07", channel="store", timestamp=later, price=3.0))
    figures = {c["channel"]: c["figures"] for c in client.get("/v1/dashboard").json()[
        "channel_figures"
    ]}  # fmt: skip
    assert figures["web"]["conversions"] == 1
    assert by_placement(client) == {}
