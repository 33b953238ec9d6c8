"""Choosing offers for customers: one code path for the online endpoint and the audience export.

Reads state and offer history for a chunk of customers in one round trip, scores the chunk
against every offer with one matrix product (``offer_scoring.Plan``), adds the recommended items
exactly as ``GET /v1/customers/{id}/recommendations`` would, and records what was presented in the
one contact history all channels share. Between small slices of work it yields to the event loop,
so an export of a whole audience never starves the online endpoints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import msgspec
import numpy as np
from numpy.typing import NDArray

from service import identity, recommend
from service.offer_facts import customer_facts
from service.offer_scoring import Candidate, Plan, ScoredOffer, rank
from service.offers import Offer, OfferRules
from service.ranking import FactorModel, Mask
from service.realtime import customer_vector
from service.schemas import RecommendedItem
from service.settings import Settings
from service.store import Store

# Customers read from Redis per round trip, and scored per slice between yields to the loop.
CHUNK = 256
SLICE = 16
# Longest stretch of work (seconds) before the export yields to online requests.
TIME_SLICE = 0.002
_PLANS: dict[tuple[str, str, int], Plan] = {}


class Catalogue(msgspec.Struct, frozen=True, kw_only=True):
    """The offers and rules in force, and their plan for the live model."""

    version: int
    offers: list[Offer]
    rules: OfferRules
    plan: Plan


class Choice(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What one customer gets on one channel; ``skipped`` says why nothing may be sent."""

    customer_id: str
    offers: list[ScoredOffer]
    items: list[RecommendedItem] = msgspec.field(default_factory=list)
    skipped: str | None = None


class Chooser(msgspec.Struct, frozen=True, kw_only=True):
    """Everything fixed for one request or one export."""

    model: FactorModel
    store: Store
    settings: Settings
    catalogue: Catalogue
    channel: str
    k_offers: int
    k_items: int = 0
    available: Mask | None = None
    record: bool = True
    # Only customers in this segment (an export's audience); None: everyone asked for.
    segment: str | None = None


async def load_catalogue(store: Store, model: FactorModel) -> Catalogue:
    """The catalogue and rules (one round trip) with a plan cached per model and version."""
    version, offers, rules = await store.offer_catalogue()
    key = (store.keys.prefix, model.version, version)
    plan = _PLANS.get(key)
    if plan is None or plan.model is not model:
        if len(_PLANS) > 16:
            _PLANS.clear()  # a handful of live versions at most; never grow without bound
        plan = _PLANS[key] = Plan(model, offers)
    return Catalogue(version=version, offers=offers, rules=rules, plan=plan)


async def choose(chooser: Chooser, customer_ids: Sequence[str], now: datetime) -> list[Choice]:
    """Offers (and items) for each customer, in order; presented offers are recorded."""
    rules = chooser.catalogue.rules
    pairs = await chooser.store.offer_states(customer_ids, rules, now)
    choices: list[Choice] = []
    started = time.perf_counter()
    for lo in range(0, len(customer_ids), SLICE):
        ids = customer_ids[lo : lo + SLICE]
        choices += _choose_slice(chooser, ids, pairs[lo : lo + SLICE], now)
        if time.perf_counter() - started > TIME_SLICE:
            await asyncio.sleep(0)  # let online requests in
            started = time.perf_counter()
    if chooser.record:
        presented = [(c.customer_id, o.offer_id) for c in choices for o in c.offers]
        await chooser.store.record_contacts(presented, chooser.channel, now, rules)
    return choices


def _choose_slice(
    chooser: Chooser, ids: Sequence[str], pairs: Sequence[tuple], now: datetime
) -> list[Choice]:
    model, settings, rules = chooser.model, chooser.settings, chooser.catalogue.rules
    cands: list[Candidate] = []
    vectors: list[NDArray[np.float32] | None] = []
    out: list[Choice | None] = []
    for customer_id, (state, history) in zip(ids, pairs, strict=True):
        if not state.consent.allows_marketing(chooser.channel, settings.default_marketing):
            out.append(Choice(customer_id=customer_id, offers=[], skipped="no marketing consent"))
            continue
        facts = customer_facts(model, customer_id, state, rules, now)
        if chooser.segment is not None and chooser.segment not in facts.segments:
            out.append(Choice(customer_id=customer_id, offers=[], skipped="not in the segment"))
            continue
        personal = state.consent.allows_personalisation(settings.default_personalisation)
        found = customer_vector(model, customer_id, state.recent, now) if personal else None
        vectors.append(found.vector if found else None)
        cands.append(
            Candidate(
                customer_id=customer_id,
                channel=chooser.channel,
                now=now,
                state=state,
                facts=facts,
                history=history,
            )
        )
        out.append(None)
    ranked = iter(rank(chooser.catalogue.plan, cands, vectors, rules, chooser.k_offers))
    cand_iter = iter(cands)
    return [c if c is not None else _full(chooser, next(cand_iter), next(ranked)) for c in out]


def _full(chooser: Chooser, cand: Candidate, offers: list[ScoredOffer]) -> Choice:
    items: list[RecommendedItem] = []
    if chooser.k_items:
        ctx = recommend.Context(
            now=cand.now,
            state=cand.state,
            personalise=cand.state.consent.allows_personalisation(
                chooser.settings.default_personalisation
            ),
            available=chooser.available,
        )
        query = recommend.Query(channel=chooser.channel, k=chooser.k_items)
        items = recommend.for_customer(chooser.model, cand.customer_id, query, ctx).items
    return Choice(customer_id=cand.customer_id, offers=offers, items=items)


async def resolve(store: Store, kinds: frozenset[str], references: Sequence[str]) -> list[str]:
    """Customer ids for ids or identifiers (``email:…``), resolving in one round trip."""
    wanted = sorted(
        {identity.normalise(r, kinds) for r in references if identity.is_identifier(r, kinds)}
    )
    owners = await store.resolve(wanted) if wanted else {}
    out = []
    for r in references:
        if identity.is_identifier(r, kinds):
            n = identity.normalise(r, kinds)
            r = owners.get(n) or n
        out.append(r)
    return out


async def export(
    chooser: Chooser,
    now: datetime,
    *,
    customer_ids: Sequence[str] | None = None,
) -> AsyncIterator[Choice]:
    """Yield the choice of every customer of the audience who may be contacted on the channel.

    The audience is ``customer_ids`` (ids or identifiers) or every customer of the model's
    training data, restricted to ``chooser.segment`` when it names one. Customers are read and
    scored ``CHUNK`` at a time; the loop yields between slices so online requests go on.
    """
    kinds = chooser.settings.identifier_kinds_set
    for lo in range(0, _audience_size(chooser.model, customer_ids), CHUNK):
        if customer_ids is not None:
            ids = await resolve(chooser.store, kinds, customer_ids[lo : lo + CHUNK])
        else:
            ids = _model_customers(chooser.model, lo, lo + CHUNK)
        for choice in await choose(chooser, ids, now):
            if choice.skipped is None:
                yield choice
        await asyncio.sleep(0)


def _audience_size(model: FactorModel, customer_ids: Sequence[str] | None) -> int:
    return len(model.user_ids) if customer_ids is None else len(customer_ids)


def _model_customers(model: FactorModel, lo: int, hi: int) -> list[str]:
    return [bytes(u).decode("utf-8") for u in model.user_ids[lo:hi]]
