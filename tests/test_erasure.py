"""Erasure over HTTP against a real Redis: exactly the customer's data goes, nobody else's.

Checkerboard reminder: u0 bought i00 in the training data (tests/builders.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import redis
from litestar.testing import TestClient

from service.events import Event, event_msgpack_decoder
from service.settings import Settings
from service.store.keys import Keys
from tests.test_offers import consent, offers, put_offer
from tests.test_omnichannel import event, post


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url)
    yield r
    r.close()


def path(customer: str) -> str:
    return quote(customer, safe="")


def profile_status(client: TestClient, customer: str) -> int:
    return client.get(f"/v1/customers/{path(customer)}/profile").status_code


def erase(client: TestClient, customer: str) -> dict:  # type: ignore[type-arg]
    response = client.delete(f"/v1/customers/{path(customer)}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def keys_of(raw: redis.Redis, keys: Keys, customer: str) -> set[str]:
    """The keys Redis holds for ``customer`` (never another customer's, whatever the ids)."""
    start = keys.customer_prefix(customer)
    found = set()
    for key in raw.scan_iter(count=1000):
        name = key.decode()
        if name.startswith(start) and "}" not in name[len(start) :]:
            found.add(name)
    return found


@pytest.mark.parametrize(
    ("erased", "others"),
    [
        ("vic1", ["vic1}:x", "vic1x", "vic1}"]),
        ("*", ["a", "vic1", "*x"]),
        ("a*", ["a", "ab", "a*}:x"]),
        ("a?", ["ab", "a?b"]),
        ("[ab]", ["a", "b"]),
        ("a\\", ["a\\b", "a"]),
    ],
)
def test_erasing_a_customer_leaves_customers_with_lookalike_ids_intact(
    client: TestClient, erased: str, others: list[str]
) -> None:
    """Ids may hold "}" and glob characters; erasure must not treat them as patterns."""
    for customer in [erased, *others]:
        post(client, event(customer, "i05", "purchase", "web", price=5))
        assert profile_status(client, customer) == 200
    report = erase(client, erased)
    assert report["keys_deleted"] > 0 and report["stream_events_deleted"] == 1
    assert profile_status(client, erased) == 404
    for customer in others:
        view = client.get(f"/v1/customers/{path(customer)}/profile")
        assert view.status_code == 200, (customer, view.text)
        assert view.json()["lifetime_value"] == 5.0


def test_every_key_the_service_writes_for_a_customer_is_erased(
    client: TestClient, settings: Settings, raw: redis.Redis
) -> None:
    """Events of every kind, consent, links, offers presented and redeemed, touches: all go."""
    keys = Keys(settings.key_prefix)
    customer, neighbour = "ann}x", "ann}x}:y"
    link = {"customer_id": customer, "identifiers": ["email:ann@x.org", "cookie:ann1"]}
    post(client, {"identifier": "cookie:ann1", "item_id": "i03", "event_type": "add_to_cart",
                  "channel": "web"})  # fmt: skip
    assert client.post("/v1/identities/link", json=link).status_code == 200
    consent(client, customer)
    put_offer(client, "o1", kind="free_delivery", amount=None, target={}, value=4.0)
    post(
        client,
        event(customer, "i02", "purchase", "store", price=3, session_id="s1"),
        event(customer, "i04", "add_to_cart", "web"),
        event(customer, "i06", "impression", "web", request_id="r1"),
        event(customer, "i06", "click", "web", request_id="r1"),
        event(neighbour, "i02", "purchase", "web", price=1),
        {"identifier": "cookie:ann2", "item_id": "i01", "event_type": "view", "channel": "web"},
    )
    assert offers(client, customer)["offers"]  # recorded as a contact
    post(client, event(customer, None, "offer_redeemed", "store", offer_id="o1"))
    written = keys_of(raw, keys, customer)
    # The test drives every kind of key there is, and the service writes no kind erasure
    # does not know.
    assert written == set(keys.customer_keys(customer))
    neighbours = keys_of(raw, keys, neighbour) | keys_of(raw, keys, "cookie:ann2")
    assert neighbours
    report = erase(client, customer)
    assert report["identifiers_removed"] == 2
    left = {k.decode() for k in raw.scan_iter(match=f"{settings.key_prefix}:*", count=1000)}
    assert not written & left
    assert not {keys.identifier("email:ann@x.org"), keys.identifier("cookie:ann1")} & left
    assert neighbours <= left


def stream_events(raw: redis.Redis, keys: Keys) -> list[Event]:
    return [event_msgpack_decoder.decode(f[b"e"]) for _, f in raw.xrange(keys.events)]


def test_erasure_keeps_another_customers_event_that_carries_the_erased_identifier(
    client: TestClient, settings: Settings, raw: redis.Redis
) -> None:
    """An event names its customer by ``customer_id``; its identifier does not make it another's."""
    keys = Keys(settings.key_prefix)
    link = {"customer_id": "victim2", "identifiers": ["email:victim2@x.com"]}
    assert client.post("/v1/identities/link", json=link).status_code == 200
    post(client, event("victim2", "i03", "view", "web"))
    post(
        client,
        event("bystander2", "i01", "purchase", "web", price=10, identifier="Email:Victim2@X.com"),
    )
    report = erase(client, "victim2")
    assert report["stream_events_deleted"] == 1  # victim2's view only
    [kept] = stream_events(raw, keys)
    assert (kept.customer_id, kept.item_id) == ("bystander2", "i01")
    assert kept.identifier == "email:victim2@x.com"  # normalised like every identifier
    assert client.get("/v1/customers/bystander2/profile").json()["lifetime_value"] == 10.0


@pytest.mark.parametrize("identifier", ["email:", "fax:123", "email: "])
def test_an_invalid_identifier_is_400_also_beside_a_customer_id(
    client: TestClient, settings: Settings, raw: redis.Redis, identifier: str
) -> None:
    batch = [event("c1", "i01", "view", "web"), event("c1", "i02", identifier=identifier)]
    response = client.post("/v1/events", json=batch)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:omnireco:problem:invalid-identifier"
    assert raw.xlen(Keys(settings.key_prefix).events) == 0  # nothing of the batch recorded


def recs(client: TestClient, customer: str, **params: object) -> dict:  # type: ignore[type-arg]
    response = client.get(f"/v1/customers/{customer}/recommendations", params={"k": 4, **params})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def reasons(body: dict) -> list[str]:  # type: ignore[type-arg]
    return [i["reason"] or "" for i in body["items"]]


def test_an_erased_customer_of_the_model_is_a_stranger_to_it_at_once(client: TestClient) -> None:
    """Not at the next training: their training-data row and purchases are not used any more."""
    before = recs(client, "u0")
    assert before["fallback"] is False
    assert any(r.startswith("because you bought") for r in reasons(before))
    assert client.get("/v1/customers/u0/profile").json()["favourite_categories"] == ["even"]
    erase(client, "u0")
    after = recs(client, "u0")
    assert after["fallback"] is True
    assert after["fallback_reason"] == "customer unknown to the model"
    assert not any("because you" in r for r in reasons(after))
    assert "i00" in [i["item_id"] for i in recs(client, "u0", k=20)["items"]]  # not "bought"
    assert client.get("/v1/customers/u0/profile").status_code == 404
    # Events that come later are a new customer's, starting from them alone.
    post(client, event("u0", "i03", "view", "web"))
    again = recs(client, "u0")
    assert again["fallback"] is False and again["recent_events_used"] == 1
    assert all(r == "because you viewed i03 online" for r in reasons(again) if r)
    view = client.get("/v1/customers/u0/profile").json()
    assert view["favourite_categories"] == ["odd"]


def test_an_erased_customer_is_gone_from_the_tablet(client: TestClient) -> None:
    link = {"customer_id": "u0", "identifiers": ["loyalty:L0000042"]}
    assert client.post("/v1/identities/link", json=link).status_code == 200
    assert client.get("/v1/customers/lookup", params={"loyalty": "L0000042"}).status_code == 200
    profile = client.get("/v1/customers/u0/profile")
    assert profile.status_code == 200 and profile.json()["favourite_categories"] == ["even"]
    erase(client, "u0")
    assert client.get("/v1/customers/lookup", params={"loyalty": "L0000042"}).status_code == 404
    gone = client.get("/v1/customers/u0/profile")
    assert gone.status_code == 404
    assert gone.json()["type"] == "urn:omnireco:problem:unknown-customer"


def test_an_erased_customer_leaves_the_models_offer_audience(client: TestClient) -> None:
    put_offer(client, "o1", kind="free_delivery", amount=None, target={}, value=4.0)
    for customer in ("u0", "u2"):
        consent(client, customer, email=True)
    everyone = client.post("/v1/exports/offers", json={"channel": "email", "record": False})
    assert {"u0", "u2"} <= {json.loads(line)["customer_id"] for line in everyone.text.splitlines()}
    erase(client, "u0")
    consent(client, "u0", email=True)  # a new customer under the old id
    after = client.post("/v1/exports/offers", json={"channel": "email", "record": False})
    exported = {json.loads(line)["customer_id"] for line in after.text.splitlines()}
    assert "u2" in exported and "u0" not in exported
