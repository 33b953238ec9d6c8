"""Failing fast on a hung Redis (service/store/breaker.py), against a Redis server of the test's
own that is stopped (SIGSTOP: it accepts connections and answers nothing) and resumed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis.exceptions
from redis.asyncio import Redis

from service.errors import StoreUnavailable
from service.settings import Settings
from service.store import Store
from service.store.breaker import CircuitOpen
from service.store.connection import SharedConnection
from service.store.wire import Endpoint
from tests.conftest import ADMIN_KEY, client_for, replace
from tests.test_connection import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.resume()
        server.kill()


def test_after_a_timeout_commands_fail_at_once_until_a_probe_finds_redis_back(
    server: RedisServer,
) -> None:
    async def main() -> tuple[float, float, float, list[object]]:
        client = Redis.from_url(f"redis://127.0.0.1:{server.port}/0", socket_timeout=0.3)
        connection = SharedConnection(Endpoint.of(client))
        loop = asyncio.get_running_loop()
        try:
            await connection.execute([("PING",)])
            server.pause()
            began = loop.time()
            with pytest.raises(redis.exceptions.TimeoutError):
                await connection.execute([("PING",)])
            timed_out, began = loop.time() - began, loop.time()
            with pytest.raises(CircuitOpen):
                await connection.execute([("PING",)])
            refused = loop.time() - began
            server.resume()
            began = loop.time()
            while connection.breaker.reason is not None:  # the probe alone, no command sent
                assert loop.time() - began < 2, "the breaker stayed open"
                await asyncio.sleep(0.01)
            return timed_out, refused, loop.time() - began, await connection.execute([("GET", "k")])
        finally:
            await connection.aclose()

    timed_out, refused, back, replies = asyncio.run(main())
    assert 0.3 <= timed_out < 0.6
    assert refused < 0.05  # not another 0.3 s
    assert back < 0.8  # a probe every 0.3 s (min(1 s, the timeout))
    assert replies == [None]


def test_a_read_that_joins_a_hung_connection_fails_with_it(server: RedisServer) -> None:
    """The stock read of a request is sent on the connection the other requests' reads wait on:
    it fails when they do, not a whole timeout of its own later."""

    async def main() -> tuple[float, float]:
        client = Redis.from_url(f"redis://127.0.0.1:{server.port}/0", socket_timeout=0.5)
        store = Store(client, prefix="breaker")
        loop = asyncio.get_running_loop()
        try:
            await store.stock_version()
            server.pause()
            state = asyncio.ensure_future(store.customer_state("c1"))
            await asyncio.sleep(0.3)
            began = loop.time()
            with pytest.raises(StoreUnavailable):
                await store.stock_version()
            joined, began = loop.time() - began, loop.time()
            with pytest.raises(StoreUnavailable):
                await state
            with pytest.raises(StoreUnavailable):  # redis-py's client too: the breaker is open
                await store.model_reloads()
            return joined, loop.time() - began
        finally:
            await store.aclose()

    joined, after = asyncio.run(main())
    assert joined < 0.4  # about 0.2 s: the rest of the state read's timeout
    assert after < 0.05


def test_a_hung_redis_costs_a_request_one_timeout_then_none_until_it_is_back(
    server: RedisServer, settings: Settings
) -> None:
    url = f"redis://127.0.0.1:{server.port}/0"
    with client_for(replace(settings, redis_url=url, redis_timeout_seconds=0.5)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"

        def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
            began = time.perf_counter()
            response = call()
            return response, time.perf_counter() - began

        def recommendations() -> httpx.Response:
            return client.get("/v1/customers/u0/recommendations", params={"k": 3})

        def for_session() -> httpx.Response:
            return client.post("/v1/recommendations", json={"customer_id": "u0", "k": 3})

        def similar() -> httpx.Response:
            return client.get("/v1/items/i02/similar", params={"k": 3})

        def event() -> httpx.Response:
            purchase = {"customer_id": "u0", "item_id": "i06", "event_type": "purchase"}
            return client.post("/v1/events", json={**purchase, "channel": "web"})

        stock = {"items": [{"item_id": "i04", "online": False}]}
        assert client.put("/v1/inventory", json=stock).status_code == 200
        assert recommendations().json()["degraded"] is False
        assert "i04" not in [i["item_id"] for i in similar().json()["items"]]
        server.pause()

        # The state read waits the timeout; the stock read after it does not wait another.
        first, took = timed(recommendations)
        assert first.json()["degraded"] is True
        assert 0.5 <= took < 0.8

        for call in (recommendations, for_session):
            answer, took = timed(call)
            assert answer.json()["degraded"] is True and took < 0.1
        answer, took = timed(similar)
        assert took < 0.1
        assert "i04" not in [i["item_id"] for i in answer.json()["items"]]  # the last known stock
        refused, took = timed(event)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert took < 0.1
        ready, took = timed(lambda: client.get("/health/ready"))
        assert ready.status_code == 503 and took < 0.1
        assert ready.json()["checks"]["redis_breaker"].startswith("open: TimeoutError")

        server.resume()
        began = time.monotonic()
        while recommendations().json()["degraded"]:
            assert time.monotonic() - began < 1.5, "Redis not used again"
            time.sleep(0.02)
        assert event().status_code == 202
        assert client.get("/health/ready").status_code == 200
