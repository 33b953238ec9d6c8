"""Query and path parameter types shared by the v1 routes."""

from __future__ import annotations

from typing import Annotated, Any, get_args

from litestar.params import PathParameter, QueryParameter

from service.events import PLACEMENT_PATTERN, PLACEMENT_RULE, Channel, Id
from service.logs import current_request_id, new_id
from service.schemas import MAX_EXCLUDE, MAX_K

K = Annotated[int | None, QueryParameter(ge=1, le=MAX_K, description="How many items (default 10)")]
ChannelParam = Annotated[Channel, QueryParameter(description="The channel asking")]
Category = Annotated[str | None, QueryParameter(description="Only items of this category")]
PlacementParam = Annotated[
    str | None,
    QueryParameter(
        description=(
            "Where the answer is shown (home, product, cart...): echoed, counted per placement, "
            f"matched by experiments limited to placements; {PLACEMENT_RULE}"
        ),
        min_length=1,
        max_length=32,
        pattern=PLACEMENT_PATTERN,
    ),
]
Exclude = Annotated[
    list[str] | None,
    QueryParameter(
        description=f"Item ids never to return (repeat the parameter; at most {MAX_EXCLUDE})",
        max_items=MAX_EXCLUDE,
    ),
]
# The constraints of the Event contract's ids, so an id taken from a path or query and written
# into an event is refused here (400 naming the parameter), never by the stream's readers.
_ID_META = get_args(Id)[1]
ID_RULES: dict[str, Any] = {
    "min_length": _ID_META.min_length,
    "max_length": _ID_META.max_length,
    "pattern": _ID_META.pattern,
}
PathId = Annotated[str, PathParameter(**ID_RULES)]


def new_request_id() -> str:
    """The request's id (in its logs and ``x-request-id`` too), echoed on impressions and clicks."""
    return current_request_id() or new_id()
