"""The references for the serving benchmark: bare Litestar JSON routes, served like the service.

``uvicorn --factory benchmarks.bare_app:create_app`` with the service's loop and HTTP parser.

- ``/bare/{customer_id}``: the issue's reference, a fixed answer of a 10-item recommendation's
  shape and size, built without any work; the ratio of the service's requests/s to this route's
  is what our own code costs.
- ``/shaped/{customer_id}``: the same answer behind the recommendations route's signature (the
  same query parameters, validated the same way, and ``State``) and the service's API-key
  middleware. What this costs beyond ``/bare`` is the framework's price of that signature, which
  no change to scoring can remove.
- ``/state/{customer_id}?prefix=...``: ``/shaped`` plus the one read every personalised answer
  starts with: the customer's real-time state (recent events, purchases, cart, consent) from
  Redis, through the service's own ``Store`` (one round trip, shared pipeline), under the key
  prefix the benchmark seeded (``REDIS_URL``; default the local server's database 15). What it
  costs beyond ``/shaped`` is the price of real-time state; ranking comes on top.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.params import QueryParameter
from redis.asyncio import Redis

from service.api.params import Category, ChannelParam, Exclude, K, PathId
from service.api.recommendations import StoreId
from service.app import settle_heap
from service.auth import ApiKeys, require_scope
from service.settings import Settings
from service.store import Store

API_KEY = "bench-key"  # the serving benchmark's key (benchmarks/serving.py)


class Item(msgspec.Struct, frozen=True, kw_only=True):
    item_id: str
    score: float
    source: str


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    customer_id: str
    items: list[Item]


ITEMS = [Item(item_id=f"i{j:07d}", score=1.0 / (j + 1), source="model") for j in range(10)]


@get("/bare/{customer_id:str}")
async def bare(customer_id: str) -> Answer:
    """A fixed answer for any customer."""
    return Answer(request_id=uuid.uuid4().hex, customer_id=customer_id, items=ITEMS)


@get("/shaped/{customer_id:str}", opt={"scope": "recommend"})
async def shaped(
    customer_id: PathId,
    state: State,
    channel: ChannelParam = "web",
    k: K = None,
    category: Category = None,
    exclude: Exclude = None,
    store_id: StoreId = None,
) -> Answer:
    """The same fixed answer behind the recommendations route's parameters and API-key check."""
    return Answer(request_id=uuid.uuid4().hex, customer_id=customer_id, items=ITEMS)


# As many recent events as the service reads for a recommendation.
RECENT = Settings().fold_in_events


@get("/state/{customer_id:str}", opt={"scope": "recommend"})
async def state_read(
    customer_id: PathId,
    state: State,
    prefix: Annotated[str, QueryParameter(description="the seeded keys' prefix")],
    channel: ChannelParam = "web",
    k: K = None,
    category: Category = None,
    exclude: Exclude = None,
    store_id: StoreId = None,
) -> Answer:
    """``/shaped`` after reading the customer's state as the recommendations route reads it."""
    stores: dict[str, Store] = state.stores
    store = stores.get(prefix) or stores.setdefault(prefix, Store(state.redis, prefix=prefix))
    await store.customer_state(customer_id, recent=RECENT)
    return Answer(request_id=uuid.uuid4().hex, customer_id=customer_id, items=ITEMS)


@contextlib.asynccontextmanager
async def _redis(app: Litestar) -> AsyncIterator[None]:
    # Created in the server's own event loop, as the service creates its client.
    app.state.redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"))
    app.state.stores = {}
    # As the service settles its heap after startup. Without it the references' full collections
    # (tens of ms each, traversing everything startup built) were the state-read reference's p99:
    # 16-46 ms against a p50 of 3 ms at 32 connections; 4.7-5.2 ms with it.
    settle_heap()
    try:
        yield
    finally:
        await app.state.redis.aclose()


def create_app() -> Litestar:
    """The app: no OpenAPI work per request; the service's API-key middleware for ``/shaped``
    and ``/state``."""
    return Litestar(
        route_handlers=[bare, shaped, state_read],
        lifespan=[_redis],
        openapi_config=None,
        middleware=[require_scope],
        state=State({"api_keys": ApiKeys({API_KEY: frozenset({"recommend"})})}),
    )
