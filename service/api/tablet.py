"""The store tablet's API (scope ``customers``): look a customer up, see their profile, present."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import JSONBody, QueryParameter
from litestar.static_files import create_static_files_router

from service import identity, offer_service, profile, recommend
from service.api.params import ID_RULES, PathId
from service.api.responses import problems
from service.availability import Availability
from service.errors import InvalidRequest, UnknownCustomer
from service.events import Event, Id, stream_payload
from service.live_model import LiveModel
from service.offer_scoring import ScoredOffer
from service.offload import off_loop_if_heavy
from service.ranking import FactorModel
from service.resolution import customer_for
from service.settings import Settings
from service.store import Store

Lookup = Annotated[str | None, QueryParameter(max_length=256)]
StoreId = Annotated[
    str | None, QueryParameter(description="The store the tablet is in", **ID_RULES)
]


class LookupResult(msgspec.Struct, frozen=True, kw_only=True):
    """The customer found, and the (masked) identifier used."""

    customer_id: str
    identifier: str


class Presentation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An offer the staff member presented to the customer."""

    offer_id: Id
    store_id: Id | None = None


class Presented(msgspec.Struct, frozen=True, kw_only=True):
    """The presentation was recorded (as a ``tablet`` event every channel sees)."""

    event_id: str


class TabletController(Controller):
    """What the store tablet calls."""

    path = "/v1/customers"
    opt = {"scope": "customers"}  # noqa: RUF012
    tags = ["tablet"]  # noqa: RUF012

    @get("/lookup", operation_id="lookupCustomer", responses=problems(400, 404))
    async def lookup(
        self,
        store: NamedDependency[Store],
        settings: NamedDependency[Settings],
        loyalty: Lookup = None,
        email: Lookup = None,
        phone: Lookup = None,
        store_id: StoreId = None,
    ) -> LookupResult:
        """Find a customer by loyalty card, email or phone (normalised); 404 when no one has it.

        Give exactly one of ``loyalty``, ``email`` or ``phone``, with a value (a phone with a
        digit): else a 400.

        The look-up is recorded as a ``store_visit`` event on the ``tablet`` channel.
        """
        given = [(k, v) for k, v in (("loyalty", loyalty), ("email", email), ("phone", phone)) if v]
        if len(given) != 1:
            raise InvalidRequest("give exactly one of loyalty, email or phone")
        kind, value = given[0]
        normalised = identity.normalise(f"{kind}:{value}", settings.identifier_kinds_set)
        customer_id = (await store.resolve([normalised]))[normalised]
        if customer_id is None:
            raise UnknownCustomer(
                f"no customer has {kind} {identity.mask(normalised).split(':', 1)[1]}"
            )
        visit = Event(
            customer_id=customer_id,
            event_type="store_visit",
            channel="tablet",
            timestamp=datetime.now(UTC),
            store_id=store_id,
        )
        await store.record([visit])
        return LookupResult(customer_id=customer_id, identifier=identity.mask(normalised))

    @get("/{customer_id:str}/profile", operation_id="customerProfile", responses=problems(400, 404))
    async def profile(
        self,
        customer_id: PathId,
        store: NamedDependency[Store],
        settings: NamedDependency[Settings],
        live_model: NamedDependency[LiveModel],
        availability: NamedDependency[Availability],
        store_id: StoreId = None,
        k: Annotated[int, QueryParameter(ge=1, le=50)] = 6,
    ) -> profile.Profile:
        """The customer at a glance, with recommendations in stock in this store."""
        resolved = await customer_for(store, settings.identifier_kinds_set, customer_id)
        state, stats, identifiers = await store.profile_facts(resolved)
        model = live_model.current
        # A customer of the training data is known before any event reaches the service.
        known = stats or identifiers or state.recent
        if not known and (
            model is None
            or state.stranger_to(model.erasures_as_of)
            or model.user_row(resolved) is None
        ):
            raise UnknownCustomer(f"no customer {customer_id!r} is known to the service")
        now = datetime.now(UTC)
        view = profile.build(resolved, state, stats, identifiers, model, now)
        if model is None:
            return view
        query = recommend.Query(channel="tablet", k=k, store_id=store_id)
        ctx = recommend.Context(
            now=now,
            state=state,
            personalise=state.consent.allows_personalisation(settings.default_personalisation),
            exclude_bought=settings.exclude_bought,
            available=await availability.mask(model, "tablet", store_id),
        )
        ranked = await off_loop_if_heavy(
            settings.inline_scoring_max_items, recommend.for_customer, model, resolved, query, ctx
        )
        return msgspec.structs.replace(
            view,
            recommendations=ranked.items,
            store_id=store_id,
            model_version=model.version,
            best_offer=await _best_offer(model, store, settings, resolved, now),
        )

    @post(
        "/{customer_id:str}/presentations",
        status_code=202,
        operation_id="offerPresented",
        responses=problems(400, 404, 413),
    )
    async def presented(
        self,
        customer_id: PathId,
        data: JSONBody[Presentation],
        store: NamedDependency[Store],
        settings: NamedDependency[Settings],
    ) -> Presented:
        """Record that staff presented an offer.

        It goes into the contact history every channel's caps and "already shown elsewhere" rules
        use, and is a ``tablet`` event. An unknown offer is a 404.
        """
        if await store.get_offer(data.offer_id) is None:
            raise NotFoundException(detail=f"no offer {data.offer_id!r}")
        resolved = await customer_for(store, settings.identifier_kinds_set, customer_id)
        now = datetime.now(UTC)
        event = Event(
            customer_id=resolved,
            event_type="offer_presented",
            channel="tablet",
            timestamp=now,
            store_id=data.store_id,
            offer_id=data.offer_id,
        )
        stream_payload(event)  # an event that cannot be stored must not count as a contact either
        _, _, rules = await store.offer_catalogue()
        await store.record_contacts([(resolved, data.offer_id)], "tablet", now, rules)
        (entry_id,) = await store.record([event])
        return Presented(event_id=entry_id)


async def _best_offer(
    model: FactorModel, store: Store, settings: Settings, customer_id: str, now: datetime
) -> ScoredOffer | None:
    """The tablet channel's best offer, previewed: it is recorded only when staff present it."""
    chooser = offer_service.Chooser(
        model=model,
        store=store,
        settings=settings,
        catalogue=await offer_service.load_catalogue(store, model),
        channel="tablet",
        k_offers=1,
        record=False,
    )
    [choice] = await offer_service.choose(chooser, [customer_id], now)
    return choice.offers[0] if choice.offers else None


# The tablet page: static HTML, CSS and JS, no build step. It calls the API above with the
# tablet's key, which the staff member enters once per session.
tablet_page = create_static_files_router(
    path="/tablet",
    directories=[Path(__file__).resolve().parent.parent / "static" / "tablet"],
    html_mode=True,
    include_in_schema=False,
    name="tablet",
)
