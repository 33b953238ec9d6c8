"""The store's commands on the worker's shared connections (service/store/pipelined.py), against
a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
import redis.exceptions
from redis.asyncio import Redis

from service.events import Event
from service.store import Store

T = TypeVar("T")


def run_with_store(url: str, prefix: str, use: Callable[[Store, str], Awaitable[T]]) -> T:
    """``use(store, client_name)`` with a store whose connections carry a name of their own."""
    name = f"pipelined-{uuid.uuid4().hex[:8]}"

    async def main() -> T:
        store = Store(Redis.from_url(url, socket_timeout=2, client_name=name), prefix=prefix)
        try:
            return await use(store, name)
        finally:
            await store.aclose()

    return asyncio.run(main())


async def connections_named(client: Redis, name: str) -> int:
    listed = await client.client_list()
    return sum(1 for c in listed if c.get("name") == name)


def purchase(customer: str, item: str) -> Event:
    return Event(
        customer_id=customer,
        item_id=item,
        event_type="purchase",
        channel="web",  # type: ignore[arg-type]
        timestamp=datetime.now(UTC) - timedelta(minutes=1),
    )


def read_states_at_once(
    redis_url: str,
    key_prefix: str,
    customers: list[str],
    before: Callable[[Store], Awaitable[object]],
) -> tuple[list[set[str]], int]:
    """Each customer's purchases, read all at once on fresh connections after ``before(store)``,
    and how many connections the store then holds."""

    async def use(store: Store, name: str) -> tuple[list[set[str]], int]:
        await store.record([purchase(c, f"item-of-{c}") for c in customers])
        await before(store)
        await store.client.connection_pool.disconnect()
        states = await asyncio.gather(*(store.customer_state(c, recent=5) for c in customers))
        return [set(s.bought) for s in states], await connections_named(store.client, name)

    return run_with_store(redis_url, key_prefix, use)


def test_concurrent_state_reads_share_one_connection_and_each_gets_its_own(
    redis_url: str, key_prefix: str
) -> None:
    customers = [f"c{n}" for n in range(24)]
    # The script loaded first, as on a running service.
    bought, connections = read_states_at_once(
        redis_url, key_prefix, customers, lambda store: store.customer_state(customers[0])
    )
    assert bought == [{f"item-of-{c}"} for c in customers]
    # 24 reads through redis-py's pool would have opened 24 connections. All share one (the
    # other is the pool's, for CLIENT LIST).
    assert connections == 2


def test_one_failing_command_fails_only_its_caller(redis_url: str, key_prefix: str) -> None:
    async def use(store: Store, name: str) -> list[object]:
        key = f"{key_prefix}:a-list"
        await store.client.rpush(key, "x")
        return await asyncio.gather(
            store.pipelined.command("LLEN", key),
            store.pipelined.command("GET", key),  # WRONGTYPE: a list, not a string
            store.pipelined.command("LRANGE", key, 0, -1),
            return_exceptions=True,
        )

    first, second, third = run_with_store(redis_url, key_prefix, use)
    assert first == 1 and third == [b"x"]
    assert isinstance(second, redis.exceptions.ResponseError)
    assert "WRONGTYPE" in str(second)


def test_a_caller_that_gave_up_leaves_the_others_their_replies(
    redis_url: str, key_prefix: str
) -> None:
    async def use(store: Store, name: str) -> tuple[object, object]:
        key = f"{key_prefix}:k"
        await store.client.set(key, "v")
        first = asyncio.ensure_future(store.pipelined.command("GET", key))  # sent at once
        impatient = asyncio.ensure_future(store.pipelined.command("GET", key))
        patient = asyncio.ensure_future(store.pipelined.command("GET", key))
        await asyncio.sleep(0)  # the other two queued; their pipeline is sent after this turn
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        assert await first == b"v"
        return await patient, await store.pipelined.command("GET", key)

    patient, later = run_with_store(redis_url, key_prefix, use)
    assert patient == b"v" and later == b"v"


def test_a_bulk_caller_gets_a_connection_of_its_own(redis_url: str, key_prefix: str) -> None:
    from service.store.pipelined import MAX_BATCH

    async def use(store: Store, name: str) -> tuple[list[object], list[object], int]:
        key = f"{key_prefix}:counter"
        await store.client.set(key, "7")
        bulk, alone = await asyncio.gather(
            store.pipelined.commands([("GET", key)] * (MAX_BATCH * 2 + 3)),
            store.pipelined.commands([("GET", key)]),
        )
        # The shared connection, the bulk one and the pool's for CLIENT LIST.
        return bulk, alone, await connections_named(store.client, name)

    bulk, alone, connections = run_with_store(redis_url, key_prefix, use)
    assert bulk == [b"7"] * (MAX_BATCH * 2 + 3) and alone == [b"7"]
    assert connections == 3


def test_reads_left_on_a_loop_that_stopped_do_not_block_the_next_loop(
    redis_url: str, key_prefix: str
) -> None:
    from service.store.pipelined import Pipelined

    key = f"{key_prefix}:k"
    client = Redis.from_url(redis_url, socket_timeout=2)
    pipelined = Pipelined(client)
    stopped = asyncio.new_event_loop()
    left = [stopped.create_task(pipelined.command("GET", key)) for _ in range(2)]
    # One turn of that loop: both start, and the connection they wait for is opened by a task
    # that does not run while the loop stays stopped.
    stopped.call_soon(stopped.stop)
    stopped.run_forever()
    assert not any(f.done() for f in left)

    async def read() -> object:
        await client.set(key, "v")
        # Two callers still wait (on the stopped loop): this one gets a connection of its own.
        return await asyncio.wait_for(pipelined.command("GET", key), timeout=5)

    try:
        assert asyncio.run(read()) == b"v"
    finally:
        # Let the stopped loop's callers and its connection's set-up end before closing it.
        pending = asyncio.all_tasks(stopped)
        for task in pending:
            task.cancel()
        stopped.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        stopped.close()


def test_callers_that_find_the_script_missing_load_it_again_on_the_shared_connection(
    redis_url: str, key_prefix: str
) -> None:
    customers = [f"c{n}" for n in range(16)]
    # The scripts gone, as after a restart of Redis.
    bought, connections = read_states_at_once(
        redis_url, key_prefix, customers, lambda store: store.client.script_flush()
    )
    assert bought == [{f"item-of-{c}"} for c in customers]
    # Their loads and their retries share the one connection (and CLIENT LIST takes the pool's).
    assert connections == 2
