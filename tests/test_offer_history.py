"""The contact history and redemptions hold under late events, duplicates and concurrency.

Over HTTP against a real Redis and the checkerboard model (see tests/test_offers.py).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import httpx
import redis
import redis.asyncio
from litestar.testing import TestClient

from service.app import create_app
from service.offers import ContactCap, OfferRules
from service.settings import Settings
from service.store import Store
from service.store.keys import Keys
from tests.conftest import ADMIN_KEY
from tests.test_offers import consent, export, offer, offer_ids, offers, put_offer
from tests.test_omnichannel import event, post

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


def redeemed(client: TestClient, customer: str, offer_id: str, at: datetime) -> None:
    post(client, event(customer, None, "offer_redeemed", "store", offer_id=offer_id,
                       timestamp=at.isoformat()))  # fmt: skip


def test_a_late_older_redemption_does_not_shorten_the_block(client: TestClient) -> None:
    """Redeemed ten days ago, then an event about a redemption 400 days ago arrives: the offer
    stays blocked (redeemed_block_days 365), whatever the offsets the times are written in."""
    now = datetime.now(UTC)
    consent(client, "u2")
    put_offer(client, "rd2")
    put_offer(client, "rd3")
    redeemed(client, "u2", "rd2", now - timedelta(days=10))
    redeemed(client, "u2", "rd2", now - timedelta(days=400))
    # The newer one in +02:00, the older one in UTC: still the newer kept.
    plus_two = timezone(timedelta(hours=2))
    redeemed(client, "u2", "rd3", (now - timedelta(days=10)).astimezone(plus_two))
    redeemed(client, "u2", "rd3", now - timedelta(days=400))
    assert offer_ids(offers(client, "u2", record="false")) == []
    # And a later redemption still replaces an earlier one.
    put_offer(client, "rd4")
    redeemed(client, "u2", "rd4", now - timedelta(days=400))
    assert offer_ids(offers(client, "u2", record="false")) == ["rd4"]
    redeemed(client, "u2", "rd4", now - timedelta(days=1))
    assert offer_ids(offers(client, "u2", record="false")) == []


def contacts(redis_url: str, key_prefix: str, customer: str) -> int:
    return sum(recorded(redis_url, key_prefix, customer).values())


def recorded(redis_url: str, key_prefix: str, customer: str) -> Counter[str]:
    """The customer's recorded contacts, counted per offer."""
    r = redis.Redis.from_url(redis_url)
    try:
        members = r.zrange(Keys(key_prefix).offer_contacts(customer), 0, -1)
    finally:
        r.close()
    return Counter(m.split(b"\x1f")[0].decode() for m in members)


def concurrently(settings: Settings, *requests: tuple[str, str, dict[str, object]]) -> list[dict]:  # type: ignore[type-arg]
    """Send ``requests`` (method, path, params or body) to one app all at once, on its event
    loop (the test clients' transport answers one request at a time); their JSON answers (an
    export's: ``{"lines": [...]}``)."""

    async def main() -> list[dict]:  # type: ignore[type-arg]
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.lifespan(),
            httpx.AsyncClient(transport=transport, base_url="http://t") as http,
        ):

            async def one(method: str, path: str, data: dict[str, object]) -> dict:  # type: ignore[type-arg]
                if method == "GET":
                    response = await http.get(path, params=data, headers=HEADERS)
                else:
                    response = await http.post(path, json=data, headers=HEADERS)
                assert response.status_code == 200, response.text
                if method == "GET":
                    return response.json()  # type: ignore[no-any-return]
                return {"lines": [json.loads(line) for line in response.text.splitlines()]}

            return await asyncio.gather(*(one(*r) for r in requests))

    return asyncio.run(main())


def test_a_cap_holds_under_concurrent_requests(
    client: TestClient, settings: Settings, redis_url: str, key_prefix: str
) -> None:
    """50 requests for the same customer at once under a cap of one: one presents the offer
    (each read the cap as not reached; the write checks it again)."""
    consent(client, "c11", email=True)
    put_offer(client, "cap1", caps=[{"max": 1, "period_days": 7}])
    put_offer(client, "cap2", target={}, kind="free_delivery", amount=None, value=1.0, cost=0,
              caps=[{"max": 3, "period_days": 7}])  # fmt: skip
    path = "/v1/customers/c11/offers"
    answers = concurrently(settings, *[("GET", path, {"channel": "email", "k": 2})] * 50)
    presented = [o["offer_id"] for a in answers for o in a["offers"]]
    assert presented.count("cap1") == 1
    assert presented.count("cap2") == 3
    assert contacts(redis_url, key_prefix, "c11") == 4


def test_a_cap_holds_between_an_export_and_the_endpoint(
    client: TestClient, settings: Settings, redis_url: str, key_prefix: str
) -> None:
    consent(client, "c12", email=True)
    put_offer(client, "cap1", caps=[{"max": 1, "period_days": 7}])
    export = ("POST", "/v1/exports/offers", {"audience": {"customer_ids": ["c12"]}, "items": 0})
    one = ("GET", "/v1/customers/c12/offers", {"channel": "email"})
    concurrently(settings, export, one, export, one)
    assert contacts(redis_url, key_prefix, "c12") == 1


def test_a_capped_offer_taken_meanwhile_gives_way_to_the_next(
    client: TestClient, settings: Settings, redis_url: str, key_prefix: str
) -> None:
    """50 requests for one offer at once, the best (a) under a cap of one: the one that presents
    a takes its last contact; every other answer holds the next offer (b), not an empty slot,
    and the contacts recorded are exactly the offers answered."""
    consent(client, "c14", email=True)
    put_offer(client, "a", value=20.0, cost=0, caps=[{"max": 1, "period_days": 7}])
    put_offer(client, "b", value=10.0, cost=0, caps=[{"max": 100, "period_days": 7}])
    path = "/v1/customers/c14/offers"
    answers = concurrently(settings, *[("GET", path, {"channel": "email", "k": 1})] * 50)
    assert [len(a["offers"]) for a in answers] == [1] * 50
    presented = Counter(o for a in answers for o in offer_ids(a))
    assert presented == {"a": 1, "b": 49}
    assert recorded(redis_url, key_prefix, "c14") == presented
    # The offer swapped in is scored as it would be at the top: same value, reason and fields.
    [b] = offers(client, "c14", k=2, record="false")["offers"]
    assert all(a["offers"] == [b] for a in answers if offer_ids(a) == ["b"])


def test_an_export_line_gets_the_next_offer_when_the_best_was_taken_meanwhile(
    client: TestClient, settings: Settings, redis_url: str, key_prefix: str
) -> None:
    """The export records through the same script: a line whose best offer a concurrent
    request took holds the next one."""
    consent(client, "c15", email=True)
    put_offer(client, "a", value=20.0, cost=0, caps=[{"max": 1, "period_days": 7}])
    put_offer(client, "b", value=10.0, cost=0)
    export = ("POST", "/v1/exports/offers", {"audience": {"customer_ids": ["c15"]}, "items": 0})
    one = ("GET", "/v1/customers/c15/offers", {"channel": "email", "k": 1})
    answers = concurrently(settings, export, *[one] * 4, export, *[one] * 4)  # two export slots
    lists = [offer_ids(a) for a in answers if "offers" in a]
    lists += [offer_ids(line) for a in answers for line in a.get("lines", [])]
    assert sorted(lists) == [["a"]] + [["b"]] * 9
    assert recorded(redis_url, key_prefix, "c15") == {"a": 1, "b": 9}


def test_an_offer_shown_on_another_channel_meanwhile_is_not_presented(
    client: TestClient, settings: Settings, redis_url: str, key_prefix: str
) -> None:
    """Suppression across channels is checked at the write too: web and app at the same
    instant present the offer once."""
    consent(client, "c13")
    client.put("/v1/offers/o1", json=offer(cost=0))
    client.put("/v1/offers/o2", json=offer(value=5.0, cost=0))  # ranked below o1
    path = "/v1/customers/c13/offers"
    answers = concurrently(
        settings, *[("GET", path, {"channel": ch, "k": 1}) for ch in ("web", "app") * 10]
    )
    presented = {a["channel"] for a in answers if offer_ids(a) == ["o1"]}
    assert len(presented) == 1
    # The other channel's answers hold the next offer instead of an empty slot.
    assert [len(a["offers"]) for a in answers] == [1] * 20


def test_each_cap_is_checked_over_its_own_period_at_the_write(
    redis_url: str, key_prefix: str
) -> None:
    now, rules = datetime.now(UTC), OfferRules()
    caps = [ContactCap(max=1, period_days=7), ContactCap(max=2, period_days=30)]

    async def use() -> list[list[list[int]]]:
        store = Store(redis.asyncio.Redis.from_url(redis_url), prefix=key_prefix)
        try:
            await store.record_contacts([("c1", "o")], "email", now - timedelta(days=10), rules)
            return [
                # One in 30 days, none in 7: presented; with the uncapped offer after it.
                await store.present_within_caps(
                    [("c1", [("o", caps), ("free", [])])], 2, "email", now, rules
                ),
                # One in 7 days now: refused, the next candidate presented in its place (k=1);
                # a customer twice in one call: the second call finds the cap reached.
                await store.present_within_caps(
                    [
                        ("c1", [("o", caps), ("free", []), ("more", [])]),
                        ("c2", [("o", caps), ("free", [])]),
                        ("c2", [("o", caps)]),
                    ],
                    1,
                    "email",
                    now,
                    rules,
                ),
            ]
        finally:
            await store.aclose()

    first, second = asyncio.run(use())
    assert first == [[0, 1]]
    assert second == [[1], [0], []]
    assert recorded(redis_url, key_prefix, "c1") == {"o": 2, "free": 2}
    assert recorded(redis_url, key_prefix, "c2") == {"o": 1}


def test_a_customer_listed_twice_gets_one_export_line(
    client: TestClient, redis_url: str, key_prefix: str
) -> None:
    """Twice by id, once more by an identifier of theirs, and again past the first chunk of
    256: one line, one contact, the cap kept."""
    for c in ("u0", "u1"):
        consent(client, c, email=True)
    put_offer(client, "cap1", target={}, kind="free_delivery", amount=None, cost=0,
              caps=[{"max": 1, "period_days": 7}])  # fmt: skip
    link = {"customer_id": "u0", "identifiers": ["email:ann@example.com"]}
    assert client.post("/v1/identities/link", json=link).status_code == 200
    fillers = [f"nobody{i}" for i in range(300)]
    audience = ["u0", "u0", "email:Ann@Example.com", "u1", *fillers, "u0", "u1"]
    lines = export(client, audience={"customer_ids": audience}, items=0)
    assert [(line["customer_id"], offer_ids(line)) for line in lines] == [
        ("u0", ["cap1"]),
        ("u1", ["cap1"]),
    ]
    assert contacts(redis_url, key_prefix, "u0") == 1
