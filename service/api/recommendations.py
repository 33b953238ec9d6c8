"""Personalised and item-to-item recommendations (scope ``recommend``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter

from service import recommend
from service.api.params import (
    Category,
    ChannelParam,
    Exclude,
    K,
    PathId,
    PlacementParam,
    new_request_id,
)
from service.api.responses import problems
from service.errors import StoreUnavailable, UnknownItem
from service.events import Event
from service.offload import off_loop_if_heavy
from service.resolution import customer_for
from service.runtime import Runtime, runtime
from service.schemas import RecommendationRequest, RecommendationResponse, SimilarItemsResponse
from service.state import CustomerState
from service.tracking import rank_for_variant

StoreId = Annotated[str | None, QueryParameter(description="Only items in stock in this store")]


class RecommendationController(Controller):
    """Personalised and item-to-item recommendations (scope ``recommend``)."""

    path = "/v1"
    opt = {"scope": "recommend"}  # noqa: RUF012 (Litestar reads it as a class attribute)
    tags = ["recommendations"]  # noqa: RUF012

    @get(
        "/customers/{customer_id:str}/recommendations",
        operation_id="recommendForCustomer",
        responses=problems(400),
    )
    async def for_customer(
        self,
        customer_id: PathId,
        state: State,
        channel: ChannelParam = "web",
        k: K = None,
        category: Category = None,
        exclude: Exclude = None,
        store_id: StoreId = None,
        placement: PlacementParam = None,
    ) -> RecommendationResponse:
        """Items for a customer (a customer id or an identifier such as ``email:…``).

        Bought and carted items are excluded; recent events on any channel shape the answer;
        customers the model cannot place get the channel's popular items (``fallback``). A
        customer in a running experiment gets their variant's model and ranking, and the response
        names the experiment and variant. A ``category`` the live model does not know, or an
        identifier that is not ``kind:value`` with a known kind and a value, is a 400.
        """
        rt = runtime(state)
        query = recommend.Query(
            channel=channel,
            k=k or rt.settings.default_k,
            category=category,
            exclude=tuple(exclude or ()),
            store_id=store_id,
            placement=placement,
        )
        return await answer(rt, customer_id, query)

    @post(
        "/recommendations",
        status_code=200,
        operation_id="recommendForSession",
        responses=problems(400, 413),
    )
    async def for_session(
        self, data: JSONBody[RecommendationRequest], state: State
    ) -> RecommendationResponse:
        """Items for an anonymous visitor or a session: the cart and viewed items are folded in.

        A ``category`` the live model does not know, or an ``identifier`` that is not
        ``kind:value`` with a known kind and a value, is a 400.
        """
        return await answer_session(runtime(state), data)

    @get("/items/{item_id:str}/similar", operation_id="similarItems", responses=problems(400, 404))
    async def similar(
        self,
        item_id: PathId,
        state: State,
        channel: ChannelParam = "web",
        k: K = None,
        category: Category = None,
        exclude: Exclude = None,
        store_id: StoreId = None,
        placement: PlacementParam = None,
    ) -> SimilarItemsResponse:
        """Items similar to one item (cosine of item factors), in stock for the channel.

        An item the live model does not know is a 404; a ``category`` it does not know a 400.
        """
        rt = runtime(state)
        query = recommend.Query(
            channel=channel,
            k=k or rt.settings.default_k,
            category=category,
            exclude=tuple(exclude or ()),
            store_id=store_id,
            placement=placement,
        )
        return await similar_items(rt, item_id, query)


async def answer_session(rt: Runtime, data: RecommendationRequest) -> RecommendationResponse:
    """``POST /v1/recommendations``: the request's cart and viewed items folded in like recent
    events of the customer (or identifier) it names, if any."""
    query = recommend.Query(
        channel=data.channel,
        k=data.k or rt.settings.default_k,
        category=data.category,
        exclude=tuple(data.exclude),
        store_id=data.store_id,
        placement=data.placement,
    )
    reference = data.customer_id or data.identifier
    now = datetime.now(UTC)
    session = [
        Event(
            customer_id="session",
            item_id=i,
            event_type=kind,
            channel=data.channel,
            timestamp=now,
        )
        for kind, items in (("add_to_cart", data.context.cart), ("view", data.context.viewed))
        for i in items
    ]
    return await answer(rt, reference, query, session=session)


async def similar_items(rt: Runtime, item_id: str, query: recommend.Query) -> SimilarItemsResponse:
    """Items similar to ``item_id`` under ``query``'s filters.

    Raises:
        UnknownItem: the live model does not know the item (a 404).
    """
    settings, model = rt.settings, rt.live_model.get()
    row = model.item_row(item_id)
    if row is None:
        raise UnknownItem(f"item {item_id!r} is not in model {model.version}")
    available = await rt.availability.mask(model, query.channel, query.store_id)
    items = await off_loop_if_heavy(
        settings.inline_scoring_max_items,
        recommend.similar_to_item,
        model,
        row,
        query,
        available,
    )
    rt.tracking.similar_served(query.channel, query.placement)
    return SimilarItemsResponse(
        request_id=new_request_id(),
        model_version=model.version,
        item_id=item_id,
        channel=query.channel,  # type: ignore[arg-type]
        placement=query.placement,
        items=items,
    )


async def answer(
    rt: Runtime,
    reference: str | None,
    query: recommend.Query,
    *,
    session: list[Event] | None = None,
) -> RecommendationResponse:
    """Resolve the customer, read their state (one round trip), rank, and build the response."""
    settings, store, tracking, live = rt.settings, rt.store, rt.tracking, rt.live_model.get()
    kinds = settings.identifier_kinds_set
    degraded = False
    customer_id = None
    state = CustomerState()
    try:
        if reference is not None:
            customer_id = await customer_for(store, kinds, reference)
            state = await store.customer_state(customer_id, recent=settings.fold_in_events)
    except StoreUnavailable:
        # Answer from the model alone rather than fail the storefront's slot.
        degraded = True
    # Measurement (issue 7): the customer's experiment variant picks the model and the ranking.
    assignment = (
        tracking.assignment(query.channel, customer_id, query.placement) if customer_id else None
    )
    model = await tracking.model_for(assignment, live)
    ctx = recommend.Context(
        now=datetime.now(UTC),
        state=state,
        session=session or [],
        personalise=state.consent.allows_personalisation(settings.default_personalisation),
        exclude_bought=settings.exclude_bought,
        available=await rt.availability.mask(model, query.channel, query.store_id),
    )
    ranked = await off_loop_if_heavy(
        settings.inline_scoring_max_items,
        rank_for_variant,
        model,
        customer_id,
        query,
        ctx,
        assignment,
    )
    tracking.served(query, model.version, assignment, ranked.items, ranked.fallback)
    return RecommendationResponse(
        request_id=new_request_id(),
        model_version=model.version,
        customer_id=customer_id or reference or "",
        channel=query.channel,  # type: ignore[arg-type]
        placement=query.placement,
        items=ranked.items,
        fallback=ranked.fallback,
        fallback_reason=ranked.fallback_reason,
        degraded=degraded,
        recent_events_used=ranked.recent_events_used,
        store_id=query.store_id,
        experiment=assignment.experiment_id if assignment else None,
        variant=assignment.variant.name if assignment else None,
    )
