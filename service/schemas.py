"""HTTP wire types of the v1 API (msgspec Structs; Litestar validates and documents them)."""

from __future__ import annotations

from typing import Literal

import msgspec

from service.events import Channel

Source = Literal["model", "popular"]


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
    items: list[RecommendedItem]
    fallback: bool = False
    fallback_reason: str | None = None
    degraded: bool = False
    # The A/B test and variant this answer was served under (None: no experiment running).
    experiment: str | None = None
    variant: str | None = None


class SimilarItemsResponse(msgspec.Struct, frozen=True, kw_only=True):
    """Items similar to one item."""

    request_id: str
    model_version: str
    item_id: str
    channel: Channel
    items: list[RecommendedItem]


class EventsAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """Events durably stored: their count and their ids in the event stream, in order."""

    accepted: int
    ids: list[str]


class Health(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Readiness: ``ok`` only when a model is loaded and Redis answers."""

    status: Literal["ok", "unavailable"]
    model_version: str | None = None
    checks: dict[str, str] = {}
