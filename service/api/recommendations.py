"""Personalised and item-to-item recommendations (scope ``recommend``)."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency

from service import recommend
from service.api.params import Category, ChannelParam, Exclude, K, PathId, new_request_id
from service.errors import StoreUnavailable, UnknownItem
from service.live_model import LiveModel
from service.schemas import RecommendationResponse, SimilarItemsResponse
from service.settings import Settings
from service.store import CustomerState, Store
from service.tracking import Tracking, rank_for_variant


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
        tracking: NamedDependency[Tracking],
        channel: ChannelParam = "web",
        k: K = None,
        category: Category = None,
        exclude: Exclude = None,
    ) -> RecommendationResponse:
        """Items for a customer: already-bought items excluded, cold customers get popular items.

        A customer in a running experiment gets their variant's model and ranking, and the
        response names the experiment and variant.
        """
        assignment = tracking.assignment(channel, customer_id)  # measurement (issue 7)
        model = await tracking.model_for(assignment, live_model.get())
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
        ranked = rank_for_variant(model, customer_id, state, query, assignment)
        tracking.served(channel, model.version, assignment, ranked.items, ranked.fallback)
        return RecommendationResponse(
            request_id=new_request_id(),
            model_version=model.version,
            customer_id=customer_id,
            channel=channel,
            items=ranked.items,
            fallback=ranked.fallback,
            fallback_reason=ranked.fallback_reason,
            degraded=degraded,
            experiment=assignment.experiment_id if assignment else None,
            variant=assignment.variant.name if assignment else None,
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
            request_id=new_request_id(),
            model_version=model.version,
            item_id=item_id,
            channel=channel,
            items=recommend.similar_to_item(model, row, query),
        )
