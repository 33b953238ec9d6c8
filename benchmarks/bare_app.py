"""The reference for the serving benchmark: a bare Litestar JSON route, served like the service.

``uvicorn --factory benchmarks.bare_app:create_app`` with the service's loop and HTTP parser. The
answer has the shape and size of a 10-item recommendation, built without any work, so the ratio
of the service's requests/s to this route's is what our own code costs.
"""

from __future__ import annotations

import uuid

import msgspec
from litestar import Litestar, get


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


def create_app() -> Litestar:
    """The app (nothing else: no middleware, no guards, no OpenAPI work per request)."""
    return Litestar(route_handlers=[bare], openapi_config=None)
