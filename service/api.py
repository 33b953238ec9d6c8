"""HTTP handlers of the v1 API and the health checks; thin, the work is in recommend/store."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.response import Response
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE

from service import recommend
from service.errors import InvalidRequest, StoreUnavailable, UnknownItem
from service.events import Channel, Event
from service.live_model import LiveModel
from service.schemas import (
    EventsAccepted,
    Health,
    RecommendationResponse,
    SimilarItemsResponse,
)
from service.settings import Settings
from service.store import CustomerState, Store

log = logging.getLogger(__name__)

MAX_K = 200
K = Annotated[int | None, QueryParameter(ge=1, le=MAX_K, description="How many items (default 10)")]
ChannelParam = Annotated[Channel, QueryParameter(description="The channel asking")]
Category = Annotated[str | None, QueryParameter(description="Only items of this category")]
Exclude = Annotated[
    list[str] | None, QueryParameter(description="Item ids never to return (repeat the parameter)")
]
PathId = Annotated[str, PathParameter(min_length=1, max_length=256)]


def _request_id() -> str:
    return uuid.uuid4().hex


class RecommendationController(Controller):
    """Personalised and item-to-item recommendations (scope ``recommend``)."""

    path = "/v1"
    opt = {"scope": "recommend"}  # noqa: RUF012 (Litestar reads it as a class attribute)
    tags = ["recommendations"]  # noqa: RUF012

    @get("/customers/{customer_id:str}/recommendations", operation_id="recommendForCustomer")
    async def for_customer(
        self,
        customer_id: PathId,
        live_model: NamedDependency[LiveModel],
        store: NamedDependency[Store],
        settings: NamedDependency[Settings],
        channel: ChannelParam = "web",
        k: K = None,
        category: Category = None,
        exclude: Exclude = None,
    ) -> RecommendationResponse:
        """Items for a customer: already-bought items excluded, cold customers get popular items."""
        model = live_model.get()
        degraded = False
        try:
            state = await store.customer_state(customer_id)
        except StoreUnavailable:
            # Answer from the model alone rather than fail the storefront's slot.
            state, degraded = CustomerState(), True
        query = recommend.Query(
            channel=channel,
            k=k or settings.default_k,
            category=category,
            exclude=tuple(exclude or ()),
        )
        ranked = recommend.for_customer(model, customer_id, state, query)
        return RecommendationResponse(
            request_id=_request_id(),
            model_version=model.version,
            customer_id=customer_id,
            channel=channel,
            items=ranked.items,
            fallback=ranked.fallback,
            fallback_reason=ranked.fallback_reason,
            degraded=degraded,
        )

    @get("/items/{item_id:str}/similar", operation_id="similarItems")
    async def similar(
        self,
        item_id: PathId,
        live_model: NamedDependency[LiveModel],
        settings: NamedDependency[Settings],
        channel: ChannelParam = "web",
        k: K = None,
        category: Category = None,
        exclude: Exclude = None,
    ) -> SimilarItemsResponse:
        """Items similar to one item (cosine of the model's item factors)."""
        model = live_model.get()
        row = model.item_row(item_id)
        if row is None:
            raise UnknownItem(f"item {item_id!r} is not in model {model.version}")
        query = recommend.Query(
            channel=channel,
            k=k or settings.default_k,
            category=category,
            exclude=tuple(exclude or ()),
        )
        return SimilarItemsResponse(
            request_id=_request_id(),
            model_version=model.version,
            item_id=item_id,
            channel=channel,
            items=recommend.similar_to_item(model, row, query),
        )


class EventController(Controller):
    """Real-time events (scope ``events``)."""

    path = "/v1"
    opt = {"scope": "events"}  # noqa: RUF012
    tags = ["events"]  # noqa: RUF012

    @post("/events", status_code=HTTP_202_ACCEPTED, operation_id="postEvents")
    async def post_events(
        self,
        data: JSONBody[Event | list[Event]],
        store: NamedDependency[Store],
        settings: NamedDependency[Settings],
    ) -> EventsAccepted:
        """Store one event or a batch durably; 202 only once every event is in the stream.

        Events without a ``timestamp`` get the time they were received. A purchase is excluded
        from the customer's very next recommendations.
        """
        events = data if isinstance(data, list) else [data]
        if not events:
            raise InvalidRequest("the batch holds no event")
        if len(events) > settings.max_batch_events:
            raise InvalidRequest(
                f"the batch holds {len(events)} events; at most {settings.max_batch_events} allowed"
            )
        now = datetime.now(UTC)
        stamped = [e if e.timestamp else msgspec.structs.replace(e, timestamp=now) for e in events]
        ids = await store.record(stamped)
        return EventsAccepted(accepted=len(ids), ids=ids)


class AdminModelController(Controller):
    """The live model (scope ``admin``)."""

    path = "/v1/models"
    opt = {"scope": "admin"}  # noqa: RUF012
    tags = ["admin"]  # noqa: RUF012

    @get("/", operation_id="liveModel")
    async def live(self, live_model: NamedDependency[LiveModel]) -> dict[str, Any]:
        """The live model's manifest (version, parameters, data window, counts, metrics)."""
        model = live_model.get()
        return msgspec.to_builtins(model.artifact.manifest)  # type: ignore[no-any-return]

    @post("/reload", status_code=200, operation_id="reloadModel")
    async def reload(self, live_model: NamedDependency[LiveModel]) -> dict[str, Any]:
        """Load the version ``LATEST`` names now (workers also poll for it)."""
        swapped = await live_model.refresh()
        return {
            "swapped": swapped,
            "model_version": live_model.current.version if live_model.current else None,
            "error": live_model.error,
        }


@get("/health/live", operation_id="live", tags=["health"])
async def health_live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@get("/health/ready", operation_id="ready", tags=["health"])
async def health_ready(
    live_model: NamedDependency[LiveModel], store: NamedDependency[Store]
) -> Response[Health]:
    """200 when a model is loaded and Redis answers, else 503 with the reason per check."""
    model_ok = live_model.current is not None
    redis_ok = await store.ping()
    checks = {
        "model": "ok" if model_ok else (live_model.error or "not loaded"),
        "redis": "ok" if redis_ok else "unreachable",
    }
    if model_ok and live_model.error:
        checks["model_refresh"] = live_model.error  # serving the old one; the new one failed
    ready = model_ok and redis_ok
    body = Health(
        status="ok" if ready else "unavailable",
        model_version=live_model.current.version if live_model.current else None,
        checks=checks,
    )
    return Response(body, status_code=200 if ready else HTTP_503_SERVICE_UNAVAILABLE)


ROUTES = [
    RecommendationController,
    EventController,
    AdminModelController,
    health_live,
    health_ready,
]
