"""Offers: catalogue and rules (scope ``admin``); next-best offers and exports (``offers``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, QueryParameter
from litestar.response import Stream

from service import identity, offer_service
from service.api.bodies import component, json_body
from service.api.params import ChannelParam, PathId, new_request_id
from service.api.responses import problems
from service.availability import Availability
from service.errors import InvalidRequest
from service.events import Channel, Id
from service.export_slots import ExportSlots, SlotStream
from service.live_model import LiveModel
from service.offer_scoring import ScoredOffer
from service.offers import InvalidOffer, Offer, OfferRules, decode_offer, decode_rules
from service.resolution import customer_for
from service.runtime import Runtime, runtime
from service.schemas import RecommendedItem
from service.settings import Settings
from service.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

# Exports running at once per worker; more are refused (429) rather than queued unseen.
EXPORT_SLOTS = 2
# The most of a worker's event loop an export may take: online requests keep the rest.
EXPORT_SHARE = 0.5
_ndjson = msgspec.json.Encoder()
NDJSON = "application/x-ndjson"
OfferK = Annotated[int, QueryParameter(ge=1, le=20, description="How many offers (default 3)")]
ItemsK = Annotated[int, QueryParameter(ge=0, le=50, description="Recommended items to add")]
Record = Annotated[bool, QueryParameter(description="Record the offers as presented")]


class OffersResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Next-best offers for one customer on one channel; ``skipped`` says why there are none."""

    request_id: str
    model_version: str
    customer_id: str
    channel: Channel
    offers: list[ScoredOffer]
    items: list[RecommendedItem] = msgspec.field(default_factory=list)
    skipped: str | None = None
    # The A/B test and variant the customer is in on this channel (None: none running).
    experiment: str | None = None
    variant: str | None = None


class Audience(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who to export: a list of ids (or identifiers), or a segment; neither: every customer."""

    customer_ids: Annotated[list[Id], msgspec.Meta(max_length=1_000_000)] | None = None
    segment: str | None = None


class ExportRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/exports/offers``."""

    channel: Channel = "email"
    audience: Audience = msgspec.field(default_factory=Audience)
    offers: Annotated[int, msgspec.Meta(ge=1, le=20)] = 1
    items: Annotated[int, msgspec.Meta(ge=0, le=50)] = 5
    record: bool = True


class OfferCatalogueController(Controller):
    """The offer catalogue and the rules that choose between offers (scope ``admin``)."""

    path = "/v1"
    opt = {"scope": "admin"}  # noqa: RUF012
    tags = ["offers"]  # noqa: RUF012

    @put(
        "/offers/{offer_id:str}",
        operation_id="putOffer",
        operation_class=json_body(
            component("Offer"), "The offer; its ``offer_id``, if given, must be the path's"
        ),
        responses={201: ResponseSpec(Offer, description="Created"), **problems(400, 413)},
    )
    async def put_offer(
        self, offer_id: PathId, request: Request[Any, Any, Any], store: NamedDependency[Store]
    ) -> Response[Offer]:
        """Create (201) or replace (200) an offer; invalid offers are a 400 naming each field.

        Beyond each field's type and bounds: ``valid_until`` after ``valid_from``, at least one
        channel, an ``offer_id`` in the body equal to the path's, and what each ``kind`` needs
        (``percent_off`` and ``amount_off`` an amount above 0 and a target, ``bundle`` two or
        more target items, ``loyalty_points`` an amount above 0).
        """
        offer = _valid(lambda raw: decode_offer(raw, offer_id), await request.body())
        created = await store.put_offer(offer)
        return Response(offer, status_code=201 if created else 200)

    @get("/offers/{offer_id:str}", operation_id="getOffer", responses=problems(400, 404))
    async def get_offer(self, offer_id: PathId, store: NamedDependency[Store]) -> Offer:
        """One offer."""
        offer = await store.get_offer(offer_id)
        if offer is None:
            raise NotFoundException(detail=f"no offer {offer_id!r}")
        return offer

    @get("/offers", operation_id="listOffers", responses=problems())
    async def list_offers(self, store: NamedDependency[Store]) -> list[Offer]:
        """Every offer, by id."""
        return (await store.offer_catalogue())[1]

    @delete("/offers/{offer_id:str}", operation_id="deleteOffer", responses=problems(400, 404))
    async def delete_offer(self, offer_id: PathId, store: NamedDependency[Store]) -> None:
        """Remove an offer (204); contacts already made still count against caps."""
        if not await store.delete_offer(offer_id):
            raise NotFoundException(detail=f"no offer {offer_id!r}")

    @get("/offer-rules", operation_id="getOfferRules", responses=problems())
    async def get_rules(self, store: NamedDependency[Store]) -> OfferRules:
        """Bands, segments, triggers and suppression in force."""
        return (await store.offer_catalogue())[2]

    @put(
        "/offer-rules",
        operation_id="putOfferRules",
        responses=problems(400, 413),
        operation_class=json_body(component("OfferRules"), "Parts left out take their defaults"),
    )
    async def put_rules(
        self, request: Request[Any, Any, Any], store: NamedDependency[Store]
    ) -> OfferRules:
        """Replace the rules; parts left out take their defaults.

        Beyond each field's type and bounds: band names are unique, a segment names only bands
        that exist, and each maximum is at least its minimum; else a 400 naming the field.
        """
        rules = _valid(decode_rules, await request.body())
        await store.set_offer_rules(rules)
        return rules


class CustomerOffersController(Controller):
    """Next-best offers and audience exports (scope ``offers``)."""

    path = "/v1"
    opt = {"scope": "offers"}  # noqa: RUF012
    tags = ["offers"]  # noqa: RUF012

    @get(
        "/customers/{customer_id:str}/offers",
        operation_id="offersForCustomer",
        responses=problems(400),
    )
    async def for_customer(
        self,
        customer_id: PathId,
        state: State,
        channel: ChannelParam = "web",
        k: OfferK = 3,
        items: ItemsK = 0,
        record: Record = True,
    ) -> OffersResponse:
        """The customer's best eligible offers on ``channel``, by expected value, with reasons.

        Respects marketing consent, validity, segments, triggers, caps and what was presented on
        other channels; the offers returned are recorded as presented unless ``record=false``.
        """
        # One runtime instead of five injected dependencies, each resolved by a task of its own
        # per request (16% of a worker's samples under the offers load).
        return await offers_for(runtime(state), customer_id, channel, k, items, record)

    @post(
        "/exports/offers",
        status_code=200,
        operation_id="exportOffers",
        responses={
            200: ResponseSpec(
                offer_service.Choice,
                media_type=NDJSON,
                description="One ``Choice`` object per line, each line ending in a newline",
                generate_examples=False,
            ),
            **problems(400, 413, 429),
        },
        media_type=NDJSON,  # so the OpenAPI documents the lines, not JSON
    )
    async def export(
        self,
        data: JSONBody[ExportRequest],
        state: State,
        live_model: NamedDependency[LiveModel],
        store: NamedDependency[Store],
        settings: NamedDependency[Settings],
        availability: NamedDependency[Availability],
    ) -> Stream:
        """NDJSON, one line per customer who may be contacted: their offers and items.

        Customers without marketing consent on the channel (or outside the segment) get no
        line. The export works in chunks and yields between them, so online requests go on.
        A ``segment`` the rules do not define, or an invalid identifier among ``customer_ids``,
        is a 400 before any line is sent.
        """
        slots = _slots(state)
        slots.refuse_when_full()  # before reading a million identifiers for nothing
        model = live_model.get()
        catalogue = await offer_service.load_catalogue(store, model)
        segment = data.audience.segment
        if segment is not None and segment not in {s.name for s in catalogue.rules.segments}:
            raise InvalidRequest(f"unknown segment {segment!r}")
        if data.audience.customer_ids is not None and segment is not None:
            raise InvalidRequest("give customer_ids or a segment, not both")
        if data.audience.customer_ids:
            # Before the first line: a stream cut off at a bad identifier has already recorded
            # the contacts of the lines sent, and the client's retry would count them twice. In a
            # thread: a million references take a quarter of a second.
            kinds = settings.identifier_kinds_set
            await asyncio.to_thread(identity.check_all, data.audience.customer_ids, kinds)
        chooser = offer_service.Chooser(
            model=model,
            store=store,
            settings=settings,
            catalogue=catalogue,
            channel=data.channel,
            k_offers=data.offers,
            k_items=data.items,
            available=await availability.mask(model, data.channel, None),
            record=data.record,
            segment=segment,
            share=EXPORT_SHARE,
            others_waiting=_others_waiting(state, settings),
        )
        # Taken here, where a third export is refused, not when the stream starts (then more
        # than two ran at once, the others waiting unseen); given back when the response is
        # over, however it ends.
        release = slots.take()
        lines = _lines(release, chooser, data.audience.customer_ids)
        return SlotStream(lines, release=release, media_type=NDJSON)


async def offers_for(
    rt: Runtime, customer_id: str, channel: Channel, k: int, items: int, record: bool
) -> OffersResponse:
    """The customer's best eligible offers (``GET /v1/customers/{id}/offers``; see
    ``CustomerOffersController.for_customer``)."""
    store, settings, availability = rt.store, rt.settings, rt.availability
    tracking, live_model = rt.tracking, rt.live_model
    resolved = await customer_for(store, settings.identifier_kinds_set, customer_id)
    # The same experiment assignment as the customer's recommendations (issue 7).
    assignment = tracking.assignment(channel, resolved)
    model = await tracking.model_for(assignment, live_model.get())
    chooser = offer_service.Chooser(
        model=model,
        store=store,
        settings=settings,
        catalogue=await offer_service.load_catalogue(store, model),
        channel=channel,
        k_offers=k,
        k_items=items,
        available=await availability.mask(model, channel, None) if items else None,
        record=record,
    )
    [choice] = await offer_service.choose(chooser, [resolved], datetime.now(UTC))
    return OffersResponse(
        request_id=new_request_id(),
        model_version=model.version,
        customer_id=resolved,
        channel=channel,
        offers=choice.offers,
        items=choice.items,
        skipped=choice.skipped,
        experiment=assignment.experiment_id if assignment else None,
        variant=assignment.variant.name if assignment else None,
    )


async def _lines(
    release: Callable[[], None], chooser: offer_service.Chooser, ids: list[str] | None
) -> AsyncIterator[bytes]:
    count = 0
    try:
        async for choice in offer_service.export(chooser, datetime.now(UTC), customer_ids=ids):
            count += 1
            yield _ndjson.encode(choice) + b"\n"
    finally:
        release()  # at once, not after the response: the next export may start
    log.info("offer export on %s: %d customers", chooser.channel, count)


def _others_waiting(state: State, settings: Settings) -> Callable[[], bool] | None:
    """Whether this worker answers requests besides the export's own, from the count the
    metrics middleware keeps (None without it: measurement off)."""
    if not settings.tracking:
        return None
    metrics = runtime(state).tracking.metrics
    return lambda: metrics.in_flight > 1


def _slots(state: State) -> ExportSlots:
    slots = state.get("offer_export_slots")
    if slots is None:
        slots = state["offer_export_slots"] = ExportSlots(EXPORT_SLOTS)
    return slots  # type: ignore[no-any-return]


def _valid(decode: Callable[[bytes], T], raw: bytes) -> T:
    try:
        return decode(raw)
    except InvalidOffer as e:
        extra = [{"key": f, "message": m, "source": "body"} for f, m in e.errors]
        raise ValidationException(detail=str(e), extra=extra) from e
