"""One customer across channels, over HTTP against a real Redis and the checkerboard model.

Checkerboard reminder: even customers (u0, u2...) like even items, odd customers odd items;
u0 bought i00 and u1 bought i01 in the training data; the model's data ends 2026-01-01, so
every event posted now is news to it.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import redis
from litestar.testing import TestClient
from redis.asyncio import Redis

from service import identity
from service.events import CHANNELS
from service.settings import Settings
from service.state import Consent
from service.store import Store
from service.store.erasure import customer_hash
from tests.conftest import ADMIN_KEY, client_for

KINDS = identity.kinds()


def event(
    customer: str | None = None,
    item: str | None = "i01",
    kind: str = "view",
    channel: str = "app",
    **extra: object,
) -> dict[str, object]:
    body: dict[str, object] = {"event_type": kind, "channel": channel, **extra}
    if customer is not None:
        body["customer_id"] = customer
    if item is not None:
        body["item_id"] = item
    return body


def post(client: TestClient, *events: dict[str, object]) -> list[str]:
    response = client.post("/v1/events", json=list(events))
    assert response.status_code == 202, response.text
    return response.json()["ids"]


def recs(client: TestClient, customer: str, **params: object) -> dict:  # type: ignore[type-arg]
    response = client.get(f"/v1/customers/{customer}/recommendations", params={"k": 4, **params})
    assert response.status_code == 200, response.text
    return response.json()


def ids(body: dict) -> list[str]:  # type: ignore[type-arg]
    return [i["item_id"] for i in body["items"]]


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Email: Ann.Lee@Example.COM ", "email:ann.lee@example.com"),
        ("phone:+44 (7700) 900-042", "phone:+447700900042"),
        ("phone:0044 7700 900042", "phone:+447700900042"),
        ("loyalty: l 000 0042", "loyalty:L0000042"),
        ("cookie:AbC", "cookie:AbC"),
    ],
)
def test_identifiers_are_normalised(raw: str, normalised: str) -> None:
    assert identity.normalise(raw, KINDS) == normalised


@pytest.mark.parametrize(
    "raw", ["fax:123", "email:", "no-colon", "ssn:1", "phone:abc", "phone:+", "phone:00"]
)
def test_bad_identifiers_are_refused(raw: str) -> None:
    with pytest.raises(identity.InvalidIdentifier):
        identity.normalise(raw, KINDS)


def test_configured_identifier_kinds_are_accepted() -> None:
    assert identity.normalise("crm:42", identity.kinds(["crm"])) == "crm:42"


def test_app_views_change_the_next_web_answer_within_the_same_second(client: TestClient) -> None:
    """u0 likes even items; a session of odd items on the app brings odd items onto the web."""
    before = recs(client, "u0", channel="web")
    assert all(int(i[1:]) % 2 == 0 for i in ids(before))
    session = [event("u0", f"i{j:02d}", "view", "app") for j in (3, 5, 7, 9, 11) for _ in range(2)]
    post(client, *session, event("u0", "i13", "add_to_cart", "app"))
    after = recs(client, "u0", channel="web")
    assert after["recent_events_used"] == 11
    assert any(int(i[1:]) % 2 == 1 for i in ids(after))
    assert any("on the app" in (i["reason"] or "") for i in after["items"])


def test_a_store_purchase_is_excluded_on_the_web(client: TestClient) -> None:
    top = ids(recs(client, "u2", channel="web"))[0]
    post(client, event("u2", top, "purchase", "store", store_id="s1"))
    assert top not in ids(recs(client, "u2", channel="web"))
    assert top not in ids(recs(client, "u2", channel="app"))


def test_cart_items_are_not_recommended_and_leave_the_cart_when_bought(client: TestClient) -> None:
    first = ids(recs(client, "u4", channel="web"))[0]
    post(client, event("u4", first, "add_to_cart", "web"))
    assert first not in ids(recs(client, "u4"))
    post(client, event("u4", first, "remove_from_cart", "web"))
    assert ids(recs(client, "u4"))[0] == first


def test_an_unknown_customer_with_recent_events_gets_a_folded_in_vector(client: TestClient) -> None:
    post(client, *(event("newbie", f"i{j:02d}", "view", "web") for j in (1, 3, 5)))
    body = recs(client, "newbie")
    assert body["fallback"] is False
    assert body["recent_events_used"] == 3
    assert all(int(i[1:]) % 2 == 1 for i in ids(body))


def test_a_session_without_customer_gets_its_context_folded_in(client: TestClient) -> None:
    response = client.post(
        "/v1/recommendations",
        json={"channel": "web", "k": 3, "context": {"cart": ["i03"], "viewed": ["i05", "i07"]}},
    )
    assert response.status_code == 200, response.text
    items = ids(response.json())
    assert "i03" not in items  # already in the cart
    assert all(int(i[1:]) % 2 == 1 for i in items)
    assert response.json()["fallback"] is False


def test_anonymous_history_is_merged_when_the_cookie_is_linked(client: TestClient) -> None:
    post(
        client,
        {"identifier": "cookie:abc", "item_id": "i05", "event_type": "purchase", "channel": "web"},
    )
    post(
        client,
        {"identifier": "cookie:abc", "item_id": "i07", "event_type": "view", "channel": "web"},
    )
    linked = client.post(
        "/v1/identities/link",
        json={"customer_id": "u6", "identifiers": ["cookie:abc", "Email:U6@Shop.com"]},
    )
    assert linked.status_code == 200, linked.text
    assert linked.json()["merged_events"] == 2
    assert linked.json()["identifiers"] == ["cookie:abc", "email:u6@shop.com"]
    # The purchase made anonymously is now excluded for the customer.
    assert "i05" not in ids(recs(client, "u6", k=10))
    # Events sent later under the cookie go to the customer too.
    post(
        client,
        {"identifier": "cookie:abc", "item_id": "i09", "event_type": "purchase", "channel": "app"},
    )
    assert "i09" not in ids(recs(client, "u6", k=10))
    # The customer can be addressed by any linked identifier.
    assert recs(client, "email:u6@shop.com")["customer_id"] == "u6"


def test_an_identifiers_answer_uses_its_own_state_until_linked_then_the_customers(
    client: TestClient,
) -> None:
    """The anonymous customer's state is read with the look-up; a linked one's after it."""

    def session(identifier: str) -> dict:  # type: ignore[type-arg]
        response = client.post("/v1/recommendations", json={"identifier": identifier, "k": 3})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    cookie = {"identifier": "cookie:xyz", "channel": "web"}
    post(client, *({**cookie, "item_id": f"i{j:02d}", "event_type": "view"} for j in (1, 3, 5)))
    anonymous = session("cookie:xyz")
    assert anonymous["customer_id"] == "cookie:xyz" and anonymous["recent_events_used"] == 3
    assert all(int(i[1:]) % 2 == 1 for i in ids(anonymous))
    linked = client.post(
        "/v1/identities/link", json={"customer_id": "u7", "identifiers": ["cookie:xyz"]}
    )
    assert linked.status_code == 200, linked.text
    best = ids(session("cookie:xyz"))[0]
    post(client, event("u7", best, "purchase", "store"))  # to the customer, not the cookie
    known = session("cookie:xyz")
    assert known["customer_id"] == "u7" and best not in ids(known)


def test_linking_an_identifier_of_another_customer_is_a_conflict(client: TestClient) -> None:
    assert (
        client.post(
            "/v1/identities/link", json={"customer_id": "u1", "identifiers": ["loyalty:L1"]}
        ).status_code
        == 200
    )
    again = client.post(
        "/v1/identities/link", json={"customer_id": "u1", "identifiers": ["loyalty:l1"]}
    )
    assert again.status_code == 200  # the same link twice is fine
    conflict = client.post(
        "/v1/identities/link",
        json={"customer_id": "u3", "identifiers": ["email:x@y.z", "loyalty:L1"]},
    )
    assert conflict.status_code == 409
    assert conflict.json()["type"] == "urn:omnireco:problem:identifier-conflict"
    assert "u1" in conflict.json()["detail"]
    # Nothing of the failed link happened: email:x@y.z is still unlinked.
    assert recs(client, "email:x@y.z")["customer_id"] == "email:x@y.z"


def test_invalid_identifiers_are_400(client: TestClient) -> None:
    response = client.post(
        "/v1/identities/link", json={"customer_id": "u1", "identifiers": ["fax:1"]}
    )
    assert response.status_code == 400
    assert response.json()["type"] == "urn:omnireco:problem:invalid-identifier"


def test_a_retried_event_id_is_not_counted_twice(
    client: TestClient, settings: Settings, redis_url: str
) -> None:
    batch = [
        event("u8", "i02", "purchase", "web", event_id="order-1-line-1"),
        event("u8", "i04", "view", "web", event_id="e-2"),
    ]
    first = post(client, *batch)
    second = post(client, *batch)
    assert first == second
    raw = redis.Redis.from_url(redis_url)
    assert raw.xlen(f"{settings.key_prefix}:events") == 2
    assert raw.llen(f"{settings.key_prefix}:{{c:u8}}:recent") == 2


def test_without_personalisation_consent_answers_are_not_personal(client: TestClient) -> None:
    consent = client.put(
        "/v1/customers/u0/consent", json={"personalisation": False, "marketing": {"email": True}}
    )
    assert consent.status_code == 200, consent.text
    body = recs(client, "u0", channel="store")
    assert body["fallback"] is True
    assert body["fallback_reason"] == "no consent to personalisation"
    assert ids(body) == ["i18", "i16", "i14", "i12"]  # the store's popular items, nothing personal
    assert client.get("/v1/customers/u0/consent").json()["marketing"] == {"email": True}
    client.put("/v1/customers/u0/consent", json={"personalisation": True})
    assert recs(client, "u0")["fallback"] is False


def test_patching_consent_changes_only_the_fields_given(client: TestClient) -> None:
    url = "/v1/customers/u0/consent"
    client.put(url, json={"personalisation": False, "marketing": {"email": True}})
    patched = client.patch(url, json={"marketing": {"app": False}})
    assert patched.status_code == 200, patched.text
    whole = {"personalisation": False, "marketing": {"email": True, "app": False}}
    assert {k: patched.json()[k] for k in whole} == whole
    assert recs(client, "u0")["fallback_reason"] == "no consent to personalisation"
    client.patch(url, json={"personalisation": True, "marketing": {"email": False}})
    held = client.get(url).json()
    assert held["personalisation"] is True
    assert held["marketing"] == {"email": False, "app": False}
    assert recs(client, "u0")["fallback"] is False
    # PUT replaces the record: what it does not give is unstated again.
    client.put(url, json={"marketing": {"app": True}})
    assert "personalisation" not in client.get(url).json()
    assert client.patch(url, json={"marketing": {"pigeon": True}}).status_code == 400


def test_consent_changes_made_at_once_all_hold(redis_url: str, key_prefix: str) -> None:
    """Seven PATCHes of different channels at the same moment: none overwrites another."""

    async def main() -> Consent:
        store = Store(Redis.from_url(redis_url), prefix=key_prefix)
        try:
            await asyncio.gather(
                *(
                    store.update_consent("u5", None, {channel: n % 2 == 0})
                    for n, channel in enumerate(CHANNELS[:7])
                ),
                store.update_consent("u5", False, {}),
            )
            return (await store.customer_state("u5")).consent
        finally:
            await store.aclose()

    consent = asyncio.run(main())
    assert consent.personalisation is False
    assert consent.marketing == {c: n % 2 == 0 for n, c in enumerate(CHANNELS[:7])}


@pytest.mark.parametrize("channel", ["carrier_pigeon", ""])
def test_marketing_consent_is_per_channel_of_the_closed_set(
    client: TestClient, channel: str
) -> None:
    response = client.put("/v1/customers/u0/consent", json={"marketing": {channel: True}})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "$.marketing"
    assert repr(channel) in response.json()["detail"]
    assert client.get("/v1/customers/u0/consent").json().get("marketing", {}) == {}


def test_consent_needs_admin_or_events_scope(client: TestClient) -> None:
    from tests.conftest import EVENTS_KEY, STOREFRONT_KEY

    client.headers.pop("Authorization")
    ok = client.put(
        "/v1/customers/u0/consent",
        json={"personalisation": True},
        headers={"X-API-Key": EVENTS_KEY},
    )
    assert ok.status_code == 200
    denied = client.put(
        "/v1/customers/u0/consent",
        json={"personalisation": True},
        headers={"X-API-Key": STOREFRONT_KEY},
    )
    assert denied.status_code == 403


def test_erasure_leaves_nothing_of_the_customer_in_redis(
    client: TestClient, settings: Settings, redis_url: str
) -> None:
    client.post(
        "/v1/identities/link",
        json={"customer_id": "erase-me", "identifiers": ["email:gone@x.org", "cookie:zz9"]},
    )
    post(
        client,
        event("erase-me", "i02", "purchase", "store"),
        event("erase-me", "i04", "add_to_cart", "web"),
    )
    post(
        client,
        {"identifier": "cookie:zz9", "item_id": "i06", "event_type": "view", "channel": "web"},
    )
    post(client, event("bystander", "i02", "view", "web"))
    client.put("/v1/customers/erase-me/consent", json={"personalisation": True})
    report = client.delete("/v1/customers/erase-me")
    assert report.status_code == 200, report.text
    assert report.json()["identifiers_removed"] == 2
    assert report.json()["stream_events_deleted"] == 3
    raw = redis.Redis.from_url(redis_url)
    traces = []
    for key in raw.scan_iter(match=f"{settings.key_prefix}:*"):
        if raw.type(key) == b"stream":  # deleted entries are gone for every reader of the stream
            dump = key + b"".join(v for _, f in raw.xrange(key) for v in f.values())
        else:
            dump = key + (raw.dump(key) or b"")
        if any(s in dump for s in (b"erase-me", b"gone@x.org", b"zz9")):
            traces.append(key)
    assert traces == []
    assert raw.hexists(f"{settings.key_prefix}:suppressed", customer_hash("erase-me"))
    assert raw.xlen(f"{settings.key_prefix}:events") == 1  # the bystander's event stays
    again = client.delete("/v1/customers/erase-me")
    assert again.status_code == 200
    assert again.json()["keys_deleted"] == 0


def test_stores_show_only_what_they_stock_and_online_what_is_available(client: TestClient) -> None:
    stock = {
        "items": [
            {"item_id": "i02", "online": False},
            {"item_id": "i04", "stores": {"s1": True}},
            {"item_id": "i08", "stores": {"s1": True}},
            {"item_id": "i10", "stores": {"s1": True, "s2": True}},
            {"item_id": "i12", "stores": {"s1": False}},
        ]
    }
    response = client.put("/v1/inventory", json=stock)
    assert response.status_code == 200, response.text
    assert ids(recs(client, "u0", channel="web", k=3)) == ["i04", "i06", "i08"]  # i02 not online
    assert ids(recs(client, "u0", channel="tablet", store_id="s1", k=3)) == ["i04", "i08", "i10"]
    # Popular fallbacks obey the store too.
    assert set(ids(recs(client, "stranger", channel="store", store_id="s1", k=10))) == {
        "i04",
        "i08",
        "i10",
    }
    # A store that never sent inventory is not filtered.
    assert len(recs(client, "u0", channel="tablet", store_id="s9", k=5)["items"]) == 5
    similar = client.get("/v1/items/i00/similar", params={"store_id": "s2", "k": 5}).json()
    assert ids(similar) == ["i10"]


def test_inventory_requires_admin_and_valid_bodies(client: TestClient) -> None:
    from tests.conftest import EVENTS_KEY

    bad = client.put("/v1/inventory", json={"items": [{"item_id": "i1", "online": "maybe"}]})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "$.items[0].online"
    bad_store = client.put(
        "/v1/inventory", json={"items": [{"item_id": "i1", "stores": {"": True}}]}
    )
    assert bad_store.status_code == 400
    assert bad_store.json()["errors"][0]["field"] == "$.items[0].stores"  # a key, with "$."
    client.headers.pop("Authorization")
    denied = client.put(
        "/v1/inventory", json={"items": [{"item_id": "i1"}]}, headers={"X-API-Key": EVENTS_KEY}
    )
    assert denied.status_code == 403


def test_a_change_posted_to_one_worker_shapes_the_next_answer_of_another(
    settings: Settings,
) -> None:
    """Two workers (apps with their own Redis connections and state caches) on one Redis: each
    keeps the customer's state between requests, and a change written through the other must
    reach the very next answer."""
    cached = msgspec.structs.replace(settings, state_cache_customers=1000)
    with client_for(cached) as client, client_for(cached) as other:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        other.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        assert recs(other, "u0")["recent_events_used"] == 0
        for n in range(1, 11):
            post(client, event("u0", f"i{(2 * n + 1) % 20:02d}", "view", "web"))
            assert recs(other, "u0")["recent_events_used"] == n
            assert recs(other, "u0")["recent_events_used"] == n  # kept: the same answer
        client.put("/v1/customers/u0/consent", json={"personalisation": False})
        assert recs(other, "u0")["fallback_reason"] == "no consent to personalisation"
        client.put("/v1/customers/u0/consent", json={"personalisation": True})
        assert recs(other, "u0")["fallback"] is False
        assert client.delete("/v1/customers/u0").status_code in (200, 202)
        assert recs(other, "u0")["recent_events_used"] == 0
        cache = other.app.state.store.state_cache
        assert cache.active and cache.hits >= 10
    with client_for(settings) as default:
        assert default.app.state.store.state_cache is None  # off unless configured
