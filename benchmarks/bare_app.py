"""The references for the serving benchmark: bare Litestar JSON routes, served like the service.

``uvicorn --factory benchmarks.bare_app:create_app`` with the service's loop and HTTP parser.

- ``/bare/{customer_id}``: the issue's reference, a fixed answer of a 10-item recommendation's
  shape and size, built without any work; the ratio of the service's requests/s to this route's
  is what our own code costs.
- ``/shaped/{customer_id}``: the same answer behind the recommendations route's signature (the
  same query parameters, validated the same way, and three injected dependencies) and an async
  guard. What this costs beyond ``/bare`` is the framework's price of that signature, which no
  change to scoring can remove.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from service.api.params import Category, ChannelParam, Exclude, K, PathId


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


async def _guard(connection: Any, handler: Any) -> None:
    handler.opt.get("scope")


@get("/shaped/{customer_id:str}", opt={"scope": "recommend"}, guards=[_guard])
async def shaped(
    customer_id: PathId,
    live_model: NamedDependency[object],
    store: NamedDependency[object],
    settings: NamedDependency[object],
    channel: ChannelParam = "web",
    k: K = None,
    category: Category = None,
    exclude: Exclude = None,
) -> Answer:
    """The same fixed answer behind the recommendations route's parameters and dependencies."""
    return Answer(request_id=uuid.uuid4().hex, customer_id=customer_id, items=ITEMS)


def _provide_live_model(state: State) -> object:
    return state.thing


def _provide_store(state: State) -> object:
    return state.thing


def _provide_settings(state: State) -> object:
    return state.thing


def create_app() -> Litestar:
    """The app: no middleware, no OpenAPI work per request."""
    return Litestar(
        route_handlers=[bare, shaped],
        openapi_config=None,
        state=State({"thing": object()}),
        dependencies={
            "live_model": Provide(_provide_live_model, sync_to_thread=False),
            "store": Provide(_provide_store, sync_to_thread=False),
            "settings": Provide(_provide_settings, sync_to_thread=False),
        },
    )
