"""Query and path parameter types shared by the v1 routes."""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter

from service.events import Channel
from service.logs import current_request_id, new_id

MAX_K = 200
K = Annotated[int | None, QueryParameter(ge=1, le=MAX_K, description="How many items (default 10)")]
ChannelParam = Annotated[Channel, QueryParameter(description="The channel asking")]
Category = Annotated[str | None, QueryParameter(description="Only items of this category")]
Exclude = Annotated[
    list[str] | None, QueryParameter(description="Item ids never to return (repeat the parameter)")
]
PathId = Annotated[str, PathParameter(min_length=1, max_length=256)]


def new_request_id() -> str:
    """The request's id (in its logs and ``x-request-id`` too), echoed on impressions and clicks."""
    return current_request_id() or new_id()
