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
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, cast

import msgspec
import numpy as np
from numpy.typing import NDArray

from service import identity, recommend
from service.neighbours import History
from service.offer_facts import OfferHistory, customer_facts
from service.offer_scoring import Candidate, Plan, Ranked, ScoredOffer, rank
from service.offers import Offer, OfferRules
from service.ranking import FactorModel, Mask, Rows, Scores
from service.realtime import customer_vector
from service.schemas import RecommendedItem
from service.settings import Settings
from service.shared_build import shared
from service.state import CustomerState
from service.store import Store
from service.topk import top_k

# Customers read from Redis per round trip, and scored per slice between yields to the loop.
CHUNK = 256
SLICE = 8
# Longest stretch of work (seconds) before the export yields to online requests.
TIME_SLICE = 0.001
_PLANS: dict[tuple[str, str, int], Plan] = {}
# The plans being built, per event loop (a future belongs to its loop; tests run several), by
# key prefix, model and offers' version.
_BUILDING: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, FactorModel, int], asyncio.Future[Plan]]
] = weakref.WeakKeyDictionary()


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
    # The most of the event loop's time this work may take while other requests are being
    # answered (an export in a serving worker: 0.5).
    share: Annotated[float, msgspec.Meta(gt=0, le=1)] = 1.0
    # Whether other requests are being answered now; None: unknown, so ``share`` always holds.
    others_waiting: Callable[[], bool] | None = None


async def load_catalogue(store: Store, model: FactorModel) -> Catalogue:
    """The catalogue and rules (one round trip) with a plan cached per model and version, built
    once for all the requests that need it meanwhile (service/shared_build.py)."""
    version, offers, rules = await store.offer_catalogue()
    key = (store.keys.prefix, model.version, version)
    plan = _PLANS.get(key)
    if plan is None or plan.model is not model:
        building = _BUILDING.setdefault(asyncio.get_running_loop(), {})
        # In a thread: at a million items, 220 offers' plan held the loop for 290 ms (70 ms with
        # its targets shared), once per worker after every change to the offers.
        plan = await shared(
            building,
            (store.keys.prefix, model, version),
            lambda: asyncio.to_thread(Plan, model, offers),
        )
        if len(_PLANS) > 16:
            _PLANS.clear()  # a handful of live versions at most; never grow without bound
        _PLANS[key] = plan
    return Catalogue(version=version, offers=offers, rules=rules, plan=plan)


async def choose(
    chooser: Chooser,
    customer_ids: Sequence[str],
    now: datetime,
    pairs: Sequence[tuple[CustomerState, OfferHistory]] | None = None,
) -> list[Choice]:
    """Offers (and items) for each customer, in order; presented offers are recorded.

    Python work runs in short slices between yields to the event loop; the chunk's two matrix
    products (offer affinities, item scores) run in a thread, where numpy releases the GIL.
    ``pairs`` are the customers' states and histories when already read (an export reads the
    next chunk while this one is scored).
    """
    rules = chooser.catalogue.rules
    if pairs is None:
        pairs = await chooser.store.offer_states(customer_ids, rules, now)
    pace = _Pace(chooser.share, chooser.others_waiting)
    prepared: list[Choice | _Prepared] = []
    for customer_id, (state, history) in zip(customer_ids, pairs, strict=True):
        prepared.append(_prepare(chooser, customer_id, state, history, now))
        await pace.tick()
    live = [p for p in prepared if isinstance(p, _Prepared)]
    vectors = [p.vector for p in live]
    # The chunk's items by one product over the whole catalogue only where a ranking scores
    # every item anyway (no index). With an index each customer's items come from it, as the
    # recommendations endpoint's do: at a million items the product was a 1 GB matrix per chunk
    # of 256 customers, and an export's first line came after 14 s.
    items = chooser.k_items > 0 and chooser.model.index is None
    products = (chooser.catalogue.plan, vectors, rules.default_affinity, items)
    # Scoring a large catalogue per customer runs off the loop too (service/offload.py).
    limit = chooser.settings.inline_scoring_max_items
    heavy = chooser.k_items > 0 and chooser.model.n_items > limit
    if len(live) > SLICE or (heavy and live):
        affinity, scores = await asyncio.to_thread(_products, *products)
    else:
        affinity, scores = _products(*products)
    personal = [v is not None for v in vectors]
    chosen: list[Choice] = []
    rankings: list[Ranked] = []
    for lo in range(0, len(live), SLICE):
        part = live[lo : lo + SLICE]
        ranked = rank(
            chooser.catalogue.plan,
            [p.cand for p in part],
            affinity[lo : lo + SLICE],
            personal[lo : lo + SLICE],
            rules,
            chooser.k_offers,
        )
        for n, (p, offers) in enumerate(zip(part, ranked, strict=True)):
            row = scores[lo + n] if scores is not None else None
            if heavy:
                chosen.append(await asyncio.to_thread(_full, chooser, p, offers.offers, row))
            else:
                chosen.append(_full(chooser, p, offers.offers, row))
            rankings.append(offers)
            await pace.tick()
    if chooser.record:
        chosen = await _record(chooser, chosen, rankings, now)
    done = iter(chosen)
    return [p if isinstance(p, Choice) else next(done) for p in prepared]


async def _record(
    chooser: Chooser, chosen: list[Choice], rankings: list[Ranked], now: datetime
) -> list[Choice]:
    """Present the offers, each checked again against its caps and the suppression across
    channels as it is written.

    The write gets every eligible offer of each customer, best first, and presents the first
    ``k_offers`` still allowed: an offer that a concurrent request for the same customer
    presented first, reaching its cap (or on another channel, within
    ``suppress_elsewhere_hours``), gives way to the next one, so an answer holds fewer offers
    than asked for only when no more are eligible (an email campaign sends no empty slot).
    """
    candidates = [
        (c.customer_id, [(o.offer_id, o.caps) for o, _, _, _ in r.picks])
        for c, r in zip(chosen, rankings, strict=True)
    ]
    if not any(offers for _, offers in candidates):
        return chosen
    presented = await chooser.store.present_within_caps(
        candidates, chooser.k_offers, chooser.channel, now, chooser.catalogue.rules
    )
    out = []
    for c, r, positions in zip(chosen, rankings, presented, strict=True):
        if positions == list(range(len(c.offers))):  # as ranked: the usual case
            out.append(c)
        else:
            out.append(msgspec.structs.replace(c, offers=r.take(chooser.model, positions)))
    return out


class _Prepared(msgspec.Struct, frozen=True, kw_only=True):
    cand: Candidate
    vector: NDArray[np.float32] | None


class _Pace:
    """Yield to the event loop after every ``TIME_SLICE`` of work, long enough to keep ``share``.

    A share of 1 only lets other tasks take a turn (``sleep(0)``); below 1 the loop also idles
    for a while, so requests that need several turns (read, Redis, write) finish in between. It
    idles only while ``others_waiting()`` says other requests are being answered (always when
    that is unknown): alone in its worker, an export takes all of it.
    """

    def __init__(self, share: float, others_waiting: Callable[[], bool] | None = None) -> None:
        self.share = share
        self.others_waiting = others_waiting
        self.since = time.perf_counter()
        self.idled = 0.0  # seconds given to the loop beyond a turn

    async def tick(self) -> None:
        worked = time.perf_counter() - self.since
        if worked > TIME_SLICE:
            alone = self.others_waiting is not None and not self.others_waiting()
            idle = 0.0 if alone else worked * (1 / self.share - 1)
            self.idled += idle
            await asyncio.sleep(idle)
            self.since = time.perf_counter()


def _prepare(
    chooser: Chooser, customer_id: str, state: CustomerState, history: OfferHistory, now: datetime
) -> Choice | _Prepared:
    model, settings, rules = chooser.model, chooser.settings, chooser.catalogue.rules
    if not state.consent.allows_marketing(chooser.channel, settings.default_marketing):
        return Choice(customer_id=customer_id, offers=[], skipped="no marketing consent")
    facts = customer_facts(model, customer_id, state, rules, now)
    if chooser.segment is not None and chooser.segment not in facts.segments:
        return Choice(customer_id=customer_id, offers=[], skipped="not in the segment")
    personal = state.consent.allows_personalisation(settings.default_personalisation)
    # Erased since the model's erasure list: the model's row is not theirs (recommend._known).
    known = None if state.stranger_to(model.erasures_as_of) else customer_id
    vector = customer_vector(model, known, state.recent, now).vector if personal else None
    cand = Candidate(
        customer_id=customer_id,
        channel=chooser.channel,
        now=now,
        state=state,
        facts=facts,
        history=history,
    )
    return _Prepared(cand=cand, vector=vector)


def _products(
    plan: Plan, vectors: list[NDArray[np.float32] | None], default: float, items: bool
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    return plan.affinities(vectors, default), plan.item_scores(vectors) if items else None


class _Scored:
    """The model, with one customer's item scores already computed by the chunk's product.

    ``recommend.for_customer`` then applies exactly the rules of the recommendations endpoint
    (exclusions, stock, fallbacks, reasons) without scoring the catalogue again.
    """

    def __init__(self, model: FactorModel, scores: NDArray[np.float32]) -> None:
        self._model = model
        self._scores = scores

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def recommend(
        self,
        user_vector: NDArray[np.float32],
        k: int,
        *,
        exclude: Rows | None = None,
        allowed: Mask | None = None,
        history: History | None = None,
    ) -> tuple[Rows, Scores]:
        scores = self._scores.copy()
        component = self._model.neighbours
        if component is not None and history is not None and len(history[0]):
            items, extra = component.scores(*history)  # as FactorModel.recommend adds them
            scores[items] += extra
        return top_k(scores, k, exclude=exclude, allowed=allowed)


def _full(
    chooser: Chooser,
    p: _Prepared,
    offers: list[ScoredOffer],
    scores: NDArray[np.float32] | None,
) -> Choice:
    cand = p.cand
    if not chooser.k_items:
        return Choice(customer_id=cand.customer_id, offers=offers)
    ctx = recommend.Context(
        now=cand.now,
        state=cand.state,
        personalise=cand.state.consent.allows_personalisation(
            chooser.settings.default_personalisation
        ),
        available=chooser.available,
        exclude_bought=chooser.settings.exclude_bought,
    )
    model = chooser.model if scores is None else cast(FactorModel, _Scored(chooser.model, scores))
    query = recommend.Query(channel=chooser.channel, k=chooser.k_items)
    items = recommend.for_customer(model, cand.customer_id, query, ctx).items
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
    training data, restricted to ``chooser.segment`` when it names one. A customer named more
    than once (the same id twice, or two of their identifiers) gets one line. Customers are read
    and scored ``CHUNK`` at a time; the loop yields between slices so online requests go on.
    """
    size = _audience_size(chooser.model, customer_ids)
    seen: set[str] = set()  # chunks are read one after the other, so this is never raced
    pending = asyncio.ensure_future(_read(chooser, customer_ids, 0, now, seen)) if size else None
    try:
        for lo in range(0, size, CHUNK):
            assert pending is not None
            ids, pairs = await pending
            # Read the next chunk from Redis while this one is scored.
            nxt = lo + CHUNK
            pending = (
                asyncio.ensure_future(_read(chooser, customer_ids, nxt, now, seen))
                if nxt < size
                else None
            )
            for choice in await choose(chooser, ids, now, pairs) if ids else []:
                if choice.skipped is None:
                    yield choice
            await asyncio.sleep(0)
    finally:
        if pending is not None:
            pending.cancel()  # the consumer went away mid-export


async def _read(
    chooser: Chooser, customer_ids: Sequence[str] | None, lo: int, now: datetime, seen: set[str]
) -> tuple[list[str], list[tuple[CustomerState, OfferHistory]]]:
    if customer_ids is not None:
        kinds = chooser.settings.identifier_kinds_set
        resolved = await resolve(chooser.store, kinds, customer_ids[lo : lo + CHUNK])
        ids = _unseen(resolved, seen)
    else:
        ids = _model_customers(chooser.model, lo, lo + CHUNK)
    pairs = await chooser.store.offer_states(ids, chooser.catalogue.rules, now)
    if customer_ids is None:
        # The model's audience: customers erased since its erasure list are not in it any more.
        as_of = chooser.model.erasures_as_of
        kept = [(i, p) for i, p in zip(ids, pairs, strict=True) if not p[0].stranger_to(as_of)]
        return [i for i, _ in kept], [p for _, p in kept]
    return ids, pairs


def _unseen(ids: Sequence[str], seen: set[str]) -> list[str]:
    """``ids`` not in ``seen`` (which they join), each once, in order: a customer listed twice
    would otherwise get two lines and two contacts, past their caps."""
    out = []
    for customer_id in ids:
        if customer_id not in seen:
            seen.add(customer_id)
            out.append(customer_id)
    return out


def _audience_size(model: FactorModel, customer_ids: Sequence[str] | None) -> int:
    return len(model.user_ids) if customer_ids is None else len(customer_ids)


def _model_customers(model: FactorModel, lo: int, hi: int) -> list[str]:
    return [bytes(u).decode("utf-8") for u in model.user_ids[lo:hi]]
