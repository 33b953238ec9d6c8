"""Linking an identifier merges its anonymous customer into the customer: all of it, atomically.

Over HTTP against a real Redis and the checkerboard model.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from litestar.testing import AsyncTestClient, TestClient
from redis.asyncio import Redis

from service import identity
from service.app import create_app
from service.events import Event, event_msgpack_decoder
from service.resolution import resolve_events
from service.settings import Settings
from service.state import Consent, linked_consent
from service.store import Store
from service.store.keys import Keys
from tests.conftest import ADMIN_KEY
from tests.test_omnichannel import event, post, recs

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url)
    yield r
    r.close()


def link(client: TestClient, customer: str, *identifiers: str) -> dict:  # type: ignore[type-arg]
    response = client.post(
        "/v1/identities/link", json={"customer_id": customer, "identifiers": list(identifiers)}
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_events_recorded_while_linking_all_reach_the_customers_state(
    redis_url: str, key_prefix: str, raw: redis.Redis
) -> None:
    """15 events under the customer id and 15 under the cookie, as ``POST /v1/events`` records
    them (resolve, then record), and the link, all at once, 15 times: none is lost."""
    keys, kinds, spread = Keys(key_prefix), identity.kinds(), random.Random(7)

    async def trial(store: Store, n: int) -> set[str]:
        customer, cookie, now = f"cc{n}", f"cookie:cc{n}", datetime.now(UTC)

        async def send(e: Event) -> str:
            await asyncio.sleep(spread.uniform(0, 0.004))  # some before the link, some during
            assert await store.record(await resolve_events(store, kinds, [e]))
            return str(e.event_id)

        async def linked() -> None:
            await asyncio.sleep(0.002)
            await store.link(customer, [cookie])

        views = [
            Event(identifier=cookie, item_id="i01", event_type="view", channel="web",
                  timestamp=now, event_id=f"{n}-anon-{j}")
            for j in range(15)
        ] + [
            Event(customer_id=customer, item_id="i02", event_type="view", channel="app",
                  timestamp=now, event_id=f"{n}-own-{j}")
            for j in range(15)
        ]  # fmt: skip
        *acknowledged, _ = await asyncio.gather(*(send(e) for e in views), linked())
        return set(acknowledged)

    async def trials() -> None:
        store = Store(Redis.from_url(redis_url), prefix=key_prefix)
        try:
            for n in range(15):
                acknowledged = await trial(store, n)
                held = raw.lrange(keys.recent(f"cc{n}"), 0, -1)
                kept = {event_msgpack_decoder.decode(e).event_id for e in held}
                assert kept == acknowledged, f"trial {n}: lost {acknowledged - kept}"
                assert not raw.exists(keys.recent(f"cookie:cc{n}"), keys.stats(f"cookie:cc{n}"))
                stats = raw.hgetall(keys.stats(f"cc{n}"))
                assert (int(stats[b"ev:web"]), int(stats[b"ev:app"])) == (15, 15)
        finally:
            await store.aclose()

    asyncio.run(trials())


def test_events_posted_while_linking_all_reach_the_customers_state(settings: Settings) -> None:
    """The same over HTTP: every event acknowledged is in the customer's recent events."""

    async def main() -> None:
        async with AsyncTestClient(app=create_app(settings)) as http:

            async def send(body: dict[str, object]) -> str:
                response = await http.post("/v1/events", json=body, headers=HEADERS)
                assert response.status_code == 202, response.text
                return str(body["event_id"])

            async def linked() -> None:
                body = {"customer_id": "hc", "identifiers": ["cookie:hc"]}
                response = await http.post("/v1/identities/link", json=body, headers=HEADERS)
                assert response.status_code == 200, response.text

            cookie = {"identifier": "cookie:hc", "channel": "web", "event_type": "view"}
            sends = [send({**cookie, "item_id": "i01", "event_id": f"a{j}"}) for j in range(15)]
            sends += [send(event("hc", "i02", event_id=f"o{j}")) for j in range(15)]
            *acknowledged, _ = await asyncio.gather(*sends[:20], linked(), *sends[20:])
            response = await http.get("/v1/customers/hc/profile", headers=HEADERS)
            assert sum(c["events"] for c in response.json()["channel_mix"]) == 30
            recent = await http.get("/v1/customers/hc/recommendations", headers=HEADERS,
                                    params={"k": 1})  # fmt: skip
            assert recent.json()["recent_events_used"] == len(acknowledged) == 30

    asyncio.run(main())


def test_a_link_merges_the_anonymous_lifetime_figures(client: TestClient) -> None:
    """Spend, orders, channel mix and activity times of the anonymous customer add up."""
    now = datetime.now(UTC)
    earlier = (now - timedelta(days=3)).isoformat()
    post(client, event("mrgcust1", "i02", "purchase", "app", price=4, timestamp=now.isoformat()))
    cookie = {"identifier": "cookie:mrg1", "channel": "web", "timestamp": earlier}
    post(
        client,
        {**cookie, "item_id": "i12", "event_type": "purchase", "price": 3, "session_id": "b1"},
        {**cookie, "item_id": "i14", "event_type": "purchase", "price": 2, "session_id": "b1"},
    )
    assert link(client, "mrgcust1", "cookie:mrg1")["merged_events"] == 2
    view = client.get("/v1/customers/mrgcust1/profile").json()
    assert view["lifetime_value"] == 9.0
    assert view["order_count"] == 2  # the app order, and the anonymous web basket once
    mix = {c["channel"]: (c["events"], c["spend"], c["orders"]) for c in view["channel_mix"]}
    assert mix == {"app": (1, 4.0, 1), "web": (2, 5.0, 1)}
    assert datetime.fromisoformat(view["first_seen"]) < now - timedelta(days=2)
    assert datetime.fromisoformat(view["last_seen"]) > now - timedelta(minutes=1)
    assert {p["item_id"] for p in view["recent_purchases"]["web"]} == {"i12", "i14"}


def test_a_withdrawn_consent_of_the_anonymous_identifier_survives_the_link(
    client: TestClient,
) -> None:
    put = client.put("/v1/customers/cookie:nocons1/consent", json={"personalisation": False})
    assert put.status_code == 200, put.text
    post(client, *({"identifier": "cookie:nocons1", "item_id": i, "event_type": "view",
                    "channel": "web"} for i in ("i03", "i05")))  # fmt: skip
    link(client, "newcust77", "cookie:nocons1")
    for reference in ("cookie:nocons1", "newcust77"):
        body = recs(client, reference)
        assert body["fallback"] is True, body
        assert body["fallback_reason"] == "no consent to personalisation"
        assert body["recent_events_used"] == 0
        assert client.get(f"/v1/customers/{reference}/consent").json()["personalisation"] is False


def test_the_customers_own_consent_wins_over_the_anonymous_one(client: TestClient) -> None:
    client.put("/v1/customers/u3/consent", json={"personalisation": True})
    client.put(
        "/v1/customers/cookie:c3/consent",
        json={"personalisation": False, "marketing": {"email": True, "app": False}},
    )
    link(client, "u3", "cookie:c3")
    consent = client.get("/v1/customers/u3/consent").json()
    assert consent["personalisation"] is True
    assert consent["marketing"] == {"email": True, "app": False}
    assert recs(client, "u3")["fallback"] is False


@pytest.mark.parametrize(
    ("anonymous", "customer", "merged"),
    [
        (Consent(personalisation=False), Consent(), Consent(personalisation=False)),
        (
            Consent(personalisation=False),
            Consent(personalisation=True),
            Consent(personalisation=True),
        ),
        (
            Consent(personalisation=True),
            Consent(personalisation=False),
            Consent(personalisation=False),
        ),
        (Consent(), Consent(personalisation=False), Consent(personalisation=False)),
        (
            Consent(marketing={"email": False, "app": True}),
            Consent(marketing={"email": True}),
            Consent(marketing={"email": True, "app": True}),
        ),
    ],
)
def test_linked_consent_keeps_what_the_customer_stated_and_fills_in_the_rest(
    anonymous: Consent, customer: Consent, merged: Consent
) -> None:
    assert linked_consent(anonymous, customer) == merged


def test_an_event_resolved_before_the_link_and_recorded_after_it_goes_to_the_customer(
    redis_url: str, key_prefix: str, raw: redis.Redis
) -> None:
    """The link merged the cookie's state already; a late event must not land behind it."""
    keys = Keys(key_prefix)

    async def main() -> None:
        store = Store(Redis.from_url(redis_url), prefix=key_prefix)
        try:
            view = Event(identifier="cookie:late", item_id="i01", event_type="view", channel="web")
            resolved = await resolve_events(store, identity.kinds(), [view])
            assert resolved[0].customer_id == "cookie:late"  # unlinked when it was resolved
            await store.link("latecust", ["cookie:late"])
            await store.record(resolved)
        finally:
            await store.aclose()

    asyncio.run(main())
    assert raw.llen(keys.recent("latecust")) == 1
    assert not raw.exists(*keys.customer_keys("cookie:late"))


def test_a_link_merges_the_offers_presented_and_redeemed(
    client: TestClient, raw: redis.Redis, key_prefix: str
) -> None:
    """An offer capped at one, made to the cookie, is not made again to the customer it is
    linked to; the cookie's later redemption blocks for the customer, the latest one kept."""
    keys, now = Keys(key_prefix), datetime.now(UTC)
    capped = {"title": "t", "kind": "free_delivery", "channels": ["web"], "value": 10,
              "caps": [{"max": 1, "period_days": 7}]}  # fmt: skip
    assert client.put("/v1/offers/lc1", json=capped).status_code == 201
    assert client.put("/v1/offers/rd1", json={**capped, "caps": []}).status_code == 201
    for who in ("cookie:lc1", "lcust1"):
        body = {"marketing": {"web": True}}
        assert client.put(f"/v1/customers/{who}/consent", json=body).status_code == 200
    shown = client.get("/v1/customers/cookie:lc1/offers", params={"channel": "web", "k": 1})
    assert [o["offer_id"] for o in shown.json()["offers"]] == ["lc1"]

    def redeem(who: str, days_ago: float) -> None:
        at = (now - timedelta(days=days_ago)).isoformat()
        post(client, {**event(None, None, "offer_redeemed", "store", offer_id="rd1",
                              timestamp=at), "identifier": who})  # fmt: skip

    redeem("cookie:lc1", 10)  # within redeemed_block_days (365)
    post(client, event("lcust1", None, "offer_redeemed", "store", offer_id="rd1",
                       timestamp=(now - timedelta(days=400)).isoformat()))  # fmt: skip
    ttl_before = raw.pttl(keys.offer_contacts("cookie:lc1"))
    link(client, "lcust1", "cookie:lc1")
    offered = client.get("/v1/customers/lcust1/offers", params={"channel": "web"}).json()
    assert offered["offers"] == []  # lc1 capped, rd1 redeemed ten days ago
    assert raw.zcard(keys.offer_contacts("lcust1")) == 1
    assert 0 < raw.pttl(keys.offer_contacts("lcust1")) <= ttl_before
    assert not raw.exists(keys.offer_contacts("cookie:lc1"), keys.offer_redemptions("cookie:lc1"))
    when = raw.hget(keys.offer_redemptions("lcust1"), "rd1")
    assert when is not None
    assert datetime.fromisoformat(when.decode()) > now - timedelta(days=11)
