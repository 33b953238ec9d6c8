"""HTTP wire types of the v1 API (msgspec Structs; Litestar validates and documents them)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from service.events import Channel, Id, Placement
from service.store.inventory import StockUpdate

Source = Literal["model", "popular"]

# The most items an answer may hold (``k``).
MAX_K = 200
# Bounds on the ids a request may bring, so its cost stays bounded: each id is looked up, and
# the index's candidates are checked against them (at a million items, 5,000 session items cost
# 38 ms on the event loop; 200 of each cost what a plain answer does). A 400 names the field.
MAX_EXCLUDE = 500
MAX_CONTEXT_ITEMS = 200


class RecommendedItem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One recommended item, with where it came from and why."""

    item_id: str
    score: float
    source: Source
    category: str | None = None
    reason: str | None = None


class RecommendationResponse(msgspec.Struct, frozen=True, kw_only=True):
    """Items for one customer on one channel.

    ``fallback`` is true when the list is not personalised (an unknown or cold customer) and
    ``fallback_reason`` says why; ``degraded`` is true when real-time state could not be read, so
    only what the model knows was used.
    """

    request_id: str
    model_version: str
    customer_id: str
    channel: Channel
    # The request's placement, as it was given (None: none given).
    placement: str | None = None
    items: list[RecommendedItem]
    fallback: bool = False
    fallback_reason: str | None = None
    degraded: bool = False
    # Events newer than the model that were folded into the customer's vector for this answer.
    recent_events_used: int = 0
    store_id: str | None = None
    # The A/B test and variant this answer was served under (None: no experiment running).
    experiment: str | None = None
    variant: str | None = None


ContextItems = Annotated[list[Id], msgspec.Meta(max_length=MAX_CONTEXT_ITEMS)]


class SessionContext(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the visitor is doing now: items in the cart and items viewed in this session."""

    # At most MAX_CONTEXT_ITEMS each: each is folded in.
    cart: ContextItems = msgspec.field(default_factory=list)
    viewed: ContextItems = msgspec.field(default_factory=list)


class RecommendationRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/recommendations``: a known customer, an identifier, or only a session."""

    customer_id: Id | None = None
    identifier: Id | None = None
    channel: Channel = "web"
    # Where the answer is shown (``home``, ``cart``...): echoed, counted, and matched against
    # experiments limited to placements.
    placement: Placement | None = None
    k: Annotated[int, msgspec.Meta(ge=1, le=MAX_K)] | None = None
    category: str | None = None
    store_id: Id | None = None
    exclude: Annotated[list[Id], msgspec.Meta(max_length=MAX_EXCLUDE)] = msgspec.field(
        default_factory=list
    )
    context: SessionContext = msgspec.field(default_factory=SessionContext)


class LinkRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Link identifiers (``cookie:…``, ``email:…``) to one customer."""

    customer_id: Id
    identifiers: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=50)]


class ConsentRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Consent to personalisation, and to marketing per channel (``{"email": true}``)."""

    personalisation: bool | None = None
    # Keyed by channel: consent for a channel that does not exist would never be asked for.
    marketing: dict[Channel, bool] = msgspec.field(default_factory=dict)


class InventoryRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Availability changes, e.g. ``{"items": [{"item_id": "i1", "stores": {"s1": false}}]}``."""

    items: Annotated[list[StockUpdate], msgspec.Meta(min_length=1, max_length=10_000)]


class InventoryAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """Inventory stored; recommendations follow within ``RECO_STOCK_REFRESH_SECONDS``."""

    updated: int
    stock_version: int


class SimilarItemsResponse(msgspec.Struct, frozen=True, kw_only=True):
    """Items similar to one item."""

    request_id: str
    model_version: str
    item_id: str
    channel: Channel
    placement: str | None = None
    items: list[RecommendedItem]


class EventsAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """Events durably stored: their count and their ids in the event stream, in order."""

    accepted: int
    ids: list[str]


class Health(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Readiness: ``ok`` only when a model is loaded and Redis answers."""

    status: Literal["ok", "unavailable"]
    model_version: str | None = None
    checks: dict[str, str] = msgspec.field(default_factory=dict)
