"""Next-best offers: eligibility as a table of small rules, affinity x value - cost, reasons.

Pure. ``Plan`` holds what is fixed for one model and catalogue (every offer's target rows), so a
batch of customers is scored against all offers with one matrix product. The affinity between a
customer and an offer is the model's best score over the offer's target items (clipped to 0..1,
the scale of an implicit-feedback preference), from the same customer vector recommendations use.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta

import msgspec
import numpy as np
from numpy.typing import NDArray

from service.events import Event
from service.offer_facts import Facts, OfferHistory, within_days
from service.offers import Offer, OfferRules
from service.ranking import FactorModel, Rows
from service.state import CustomerState

# Offers about no item (free delivery, points) are scored against the customer's taste for the
# catalogue's best sellers.
_GENERAL_TARGET = 100
# A category offer is scored against at most this many of the category's best sellers. A
# category can hold a large share of the catalogue (20,000 items of a million in 50 categories):
# with all of them, 20 offers made 280,598 target rows (68.5 MiB per worker) and the affinities
# took 3.1 ms per customer at a million items; with 1,000 each, 14,410 rows and 66 µs.
_MAX_CATEGORY_TARGET = 1000
_WHERE = {"store": " in store", "tablet": " in store", "app": " on the app", "web": " online"}
_VERBS = {"view": "viewed", "add_to_cart": "put", "wishlist": "saved", "purchase": "bought"}
_TIMES = {1: "once", 2: "twice"}


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """One customer on one channel at one moment, with what the rules need."""

    customer_id: str
    channel: str
    now: datetime
    state: CustomerState
    facts: Facts
    history: OfferHistory = msgspec.field(default_factory=OfferHistory)


class ScoredOffer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An offer chosen for a customer, with its expected value and why."""

    offer_id: str
    title: str
    kind: str
    expected_value: float
    affinity: float
    reason: str
    amount: float | None = None
    trigger: str | None = None
    valid_until: datetime | None = None


Rule = Callable[[Offer, Candidate, OfferRules, FactorModel], bool]


def _valid(o: Offer, c: Candidate, r: OfferRules, m: FactorModel) -> bool:
    return o.valid_at(c.now)


def _channel(o: Offer, c: Candidate, r: OfferRules, m: FactorModel) -> bool:
    return c.channel in o.channels


def _segment(o: Offer, c: Candidate, r: OfferRules, m: FactorModel) -> bool:
    return not o.eligibility.segments or bool(c.facts.segments & set(o.eligibility.segments))


def _recency(o: Offer, c: Candidate, r: OfferRules, m: FactorModel) -> bool:
    e = o.eligibility
    return within_days(
        c.facts.days_since_purchase, e.min_days_since_purchase, e.max_days_since_purchase
    )


def _ltv(o: Offer, c: Candidate, r: OfferRules, m: FactorModel) -> bool:
    return not o.eligibility.ltv_bands or c.facts.ltv_band in o.eligibility.ltv_bands


def _bought_in(o: Offer, c: Candidate, r: OfferRules, m: FactorModel) -> bool:
    wanted = o.eligibility.bought_categories
    return not wanted or bool(c.facts.categories_bought & set(wanted))


def _not_bought_in(o: Offer, c: Candidate, r: OfferRules, m: FactorModel) -> bool:
    return not c.facts.categories_bought & set(o.eligibility.not_bought_categories)


def _trigger(o: Offer, c: Candidate, r: OfferRules, m: FactorModel) -> bool:
    if o.eligibility.trigger == "abandoned_cart":
        return cart_item(o, c, m) is not None
    if o.eligibility.trigger == "win_back":
        return c.facts.quiet
    return True


def _not_redeemed(o: Offer, c: Candidate, r: OfferRules, m: FactorModel) -> bool:
    if not c.history.redeemed:
        return True
    at = c.history.redeemed.get(o.offer_id)
    return at is None or c.now - at > timedelta(days=r.redeemed_block_days)


def _under_caps(o: Offer, c: Candidate, r: OfferRules, m: FactorModel) -> bool:
    if not o.caps or not c.history.contacts:
        return True
    shown = [x.at for x in c.history.contacts if x.offer_id == o.offer_id]
    return all(
        sum(at > c.now - timedelta(days=cap.period_days) for at in shown) < cap.max
        for cap in o.caps
    )


def _not_shown_elsewhere(o: Offer, c: Candidate, r: OfferRules, m: FactorModel) -> bool:
    if not c.history.contacts:
        return True
    since = c.now - timedelta(hours=r.suppress_elsewhere_hours)
    return not any(
        x.offer_id == o.offer_id and x.channel != c.channel and x.at > since
        for x in c.history.contacts
    )


# Every rule an offer must pass, in order; the name of the first that fails says why not.
ELIGIBILITY: tuple[tuple[str, Rule], ...] = (
    ("validity", _valid),
    ("channel", _channel),
    ("segment", _segment),
    ("days_since_purchase", _recency),
    ("ltv_band", _ltv),
    ("bought_category", _bought_in),
    ("not_bought_category", _not_bought_in),
    ("trigger", _trigger),
    ("redeemed", _not_redeemed),
    ("contact_cap", _under_caps),
    ("shown_elsewhere", _not_shown_elsewhere),
)


# Rules that hold whatever the customer when the offer leaves their setting empty: skipped.
_UNCONDITIONAL = {
    "segment": lambda o: not o.eligibility.segments,
    "days_since_purchase": lambda o: (
        o.eligibility.min_days_since_purchase is None
        and o.eligibility.max_days_since_purchase is None
    ),
    "ltv_band": lambda o: not o.eligibility.ltv_bands,
    "bought_category": lambda o: not o.eligibility.bought_categories,
    "not_bought_category": lambda o: not o.eligibility.not_bought_categories,
    "trigger": lambda o: o.eligibility.trigger is None,
    "contact_cap": lambda o: not o.caps,
}


def why_not(offer: Offer, cand: Candidate, rules: OfferRules, model: FactorModel) -> str | None:
    """The first eligibility rule ``offer`` fails for ``cand``; None when it is eligible."""
    return _first_failing(ELIGIBILITY, offer, cand, rules, model)


def relevant_rules(offer: Offer) -> tuple[tuple[str, Rule], ...]:
    """The rules of ``ELIGIBILITY`` that can fail for ``offer`` (the others always hold).

    Validity and channel are left out: ``rank`` checks them first, inline.
    """
    return tuple(
        (name, rule)
        for name, rule in ELIGIBILITY
        if name not in ("validity", "channel")
        and not (name in _UNCONDITIONAL and _UNCONDITIONAL[name](offer))
    )


def _first_failing(
    table: Sequence[tuple[str, Rule]],
    offer: Offer,
    cand: Candidate,
    rules: OfferRules,
    model: FactorModel,
) -> str | None:
    for name, rule in table:
        if not rule(offer, cand, rules, model):
            return name
    return None


def cart_item(offer: Offer, cand: Candidate, model: FactorModel) -> str | None:
    """The oldest abandoned cart item ``offer`` applies to (any item for a basket-wide offer)."""
    for item in cand.facts.abandoned:
        if targets(offer, model, item):
            return item
    return None


def targets(offer: Offer, model: FactorModel, item_id: str) -> bool:
    """True when ``offer`` is about ``item_id`` (directly, by its category, or basket-wide)."""
    t = offer.target
    if not t.items and not t.categories:
        return True
    row = model.item_row(item_id) if t.categories and item_id not in t.items else None
    return _about(offer, item_id, model.category_of(row) if row is not None else None)


def _about(offer: Offer, item_id: str, category: str | None) -> bool:
    """``targets`` for an item whose category (None: none, or unknown item) is looked up."""
    t = offer.target
    return (not t.items and not t.categories) or item_id in t.items or category in t.categories


class Plan:
    """Every offer's target rows for one model, concatenated for one matrix product per batch.

    Offers with the same target (a category's discounts, the basket-wide free deliveries) share
    its rows and its column of the product: with 220 offers over 50 categories at a million
    items, a plan per offer took 290 ms to build and 158,510 columns (11.7 ms a customer).
    """

    def __init__(self, model: FactorModel, offers: Sequence[Offer]) -> None:
        """Resolve each distinct target's items and categories to rows of ``model``."""
        self.model = model
        self.offers = list(offers)
        self.rules = [relevant_rules(o) for o in self.offers]
        general = model.popular("all", _GENERAL_TARGET)[0]
        distinct: dict[tuple[frozenset[str], frozenset[str]], int] = {}
        # Each offer's target: its column among the distinct targets'.
        self.column = np.array(
            [
                distinct.setdefault(
                    (frozenset(o.target.items), frozenset(o.target.categories)), len(distinct)
                )
                for o in self.offers
            ],
            dtype=np.int64,
        )
        parts = [_target_rows(model, items, categories, general) for items, categories in distinct]
        self.empty = np.array([len(p) == 0 for p in parts], dtype=bool)[self.column]
        parts = [p if len(p) else general[:1] for p in parts]
        self.starts = np.cumsum([0, *(len(p) for p in parts[:-1])]).astype(np.int64)
        rows = np.concatenate(parts) if parts else np.empty(0, np.int64)
        self.factors = np.ascontiguousarray(model.item_factors[rows].T)

    def affinities(self, vectors: Sequence[NDArray[np.float32] | None], default: float) -> NDArray:
        """Customers x offers: the best target score per offer, clipped to 0..1.

        Customers without a vector (unknown, or no consent to personalisation) get ``default``.
        """
        out = np.full((len(vectors), len(self.offers)), default, dtype=np.float32)
        known = [i for i, v in enumerate(vectors) if v is not None]
        if not known or not self.offers:
            return out
        scores = _stack(vectors, known) @ self.factors
        best = np.clip(np.maximum.reduceat(scores, self.starts, axis=1), 0.0, 1.0)[:, self.column]
        best[:, self.empty] = default
        out[known] = best
        return out

    def item_scores(self, vectors: Sequence[NDArray[np.float32] | None]) -> NDArray | None:
        """Customers x items: every item's score, one matrix product (rows of None: zeros)."""
        known = [i for i, v in enumerate(vectors) if v is not None]
        if not known:
            return None
        out = np.zeros((len(vectors), self.model.n_items), dtype=np.float32)
        out[known] = self.model.products.scores_many(_stack(vectors, known))
        return out


def _stack(vectors: Sequence[NDArray[np.float32] | None], known: list[int]) -> NDArray:
    return np.stack([vectors[i] for i in known]).astype(np.float32)  # type: ignore[misc]


# An eligible offer as ranked: the offer, its expected value, its affinity and its trigger.
Pick = tuple[Offer, float, float, str | None]


class Ranked(msgspec.Struct, frozen=True, kw_only=True):
    """One candidate's eligible offers, best first (``picks``), the first ``k`` of them scored
    with their reasons (``offers``).

    The others stand by for the write, which may find some of the first taken by a concurrent
    request meanwhile (``Store.present_within_caps``): they are scored only then, so the
    answer holds ``k`` offers while eligible ones remain and costs no reasons it does not show.
    """

    cand: Candidate
    picks: list[Pick]
    offers: list[ScoredOffer]
    personal: bool
    done: list[tuple[Event, str | None]]

    def take(self, model: FactorModel, positions: Sequence[int]) -> list[ScoredOffer]:
        """The offers at ``positions`` of ``picks``, scored."""
        k = len(self.offers)
        return [
            self.offers[n]
            if n < k
            else _scored(model, *self.picks[n], self.cand, self.personal, self.done)
            for n in positions
        ]


def rank(
    plan: Plan,
    cands: Sequence[Candidate],
    affinity: NDArray,
    personal: Sequence[bool],
    rules: OfferRules,
    k: int,
) -> list[Ranked]:
    """Every eligible offer for each candidate, best first; the first ``k`` scored.

    Order: on the cart trigger's channels a matching abandoned-cart offer comes first; then
    expected value, then priority, then id. Offers whose expected value is not above
    ``rules.min_expected_value`` are dropped, except a win-back offer, and an abandoned-cart
    offer on the cart trigger's channels. ``affinity`` comes from
    ``Plan.affinities``; ``personal`` says whether it is the customer's own (for the reason).
    """
    out = []
    # Validity and channel do not depend on the customer: checked once per channel and time.
    open_offers: dict[tuple[str, datetime], list[int]] = {}
    for i, cand in enumerate(cands):
        picked = []
        key = (cand.channel, cand.now)
        if key not in open_offers:
            open_offers[key] = [
                j
                for j, o in enumerate(plan.offers)
                if cand.channel in o.channels and o.valid_at(cand.now)
            ]
        for j in open_offers[key]:
            offer = plan.offers[j]
            if _first_failing(plan.rules[j], offer, cand, rules, plan.model) is not None:
                continue
            trig = offer.eligibility.trigger
            ev = float(affinity[i, j]) * offer.value - offer.cost
            top = trig == "abandoned_cart" and cand.channel in rules.abandoned_cart.channels
            # A trigger overrides the expected value only where it acts: a cart offer on the
            # cart trigger's channels, a win-back offer (it names no channel) on any.
            if ev <= rules.min_expected_value and not (top or trig == "win_back"):
                continue
            order = (not top, -ev, -offer.priority, offer.offer_id)
            picked.append((order, (offer, ev, float(affinity[i, j]), trig)))
        picked.sort(key=lambda p: p[0])
        picks = [p for _, p in picked]
        done = _recent_done(plan.model, cand) if personal[i] and picks else []
        scored = [
            _scored(plan.model, o, ev, aff, trig, cand, personal[i], done)
            for o, ev, aff, trig in picks[:k]
        ]
        out.append(Ranked(cand=cand, picks=picks, offers=scored, personal=personal[i], done=done))
    return out


def _recent_done(model: FactorModel, cand: Candidate) -> list[tuple[Event, str | None]]:
    """The customer's recent events that can explain an offer, each with its item's category:
    one lookup for all (one per event and offer was 7% of an offers request's CPU)."""
    events = [e for e in cand.state.recent if e.item_id and e.event_type in _VERBS]
    rows = model.lookup_items([e.item_id or "" for e in events])
    categories = model.categories_of(np.maximum(rows, 0))
    return [
        (e, category if row >= 0 else None)
        for e, row, category in zip(events, rows.tolist(), categories, strict=True)
    ]


def _scored(
    model: FactorModel,
    offer: Offer,
    ev: float,
    affinity: float,
    trig: str | None,
    cand: Candidate,
    personal: bool,
    done: Sequence[tuple[Event, str | None]],
) -> ScoredOffer:
    return ScoredOffer(
        offer_id=offer.offer_id,
        title=offer.title,
        kind=offer.kind,
        amount=offer.amount,
        expected_value=round(ev, 6),
        affinity=round(affinity, 6),
        reason=reason(model, offer, cand, trig, personal, done),
        trigger=trig,
        valid_until=offer.valid_until,
    )


def reason(
    model: FactorModel,
    offer: Offer,
    cand: Candidate,
    trig: str | None,
    personal: bool,
    done: Sequence[tuple[Event, str | None]],
) -> str:
    """A human-readable reason: the trigger, else what the customer did with the target.

    ``done``: the customer's recent events that can explain an offer (``_recent_done``).
    """
    if trig == "abandoned_cart" and (item := cart_item(offer, cand, model)):
        line = cand.state.cart[item]
        return f"you left {_name(model, item)} in your cart{_WHERE.get(line.channel, '')}"
    if trig == "win_back" and cand.facts.days_since_activity is not None:
        return f"we have not seen you for {int(cand.facts.days_since_activity)} days"
    if personal and (did := _what_they_did(model, offer, cand, done)):
        return did
    if personal:
        return "matches what you like" if offer.target.items else "picked for your tastes"
    return "available to you now"


def _what_they_did(
    model: FactorModel, offer: Offer, cand: Candidate, done: Sequence[tuple[Event, str | None]]
) -> str | None:
    counts: Counter[tuple[str, str, str]] = Counter()
    for e, category in done:
        if e.item_id and _about(offer, e.item_id, category):
            counts[(e.event_type, e.item_id, e.channel)] += 1
    if counts:
        (kind, item, channel), n = counts.most_common(1)[0]
        where = _WHERE.get(channel, "")
        if kind == "purchase" and offer.target.categories:
            return f"bought in this category{where}"
        times = f" {_TIMES.get(n, f'{n} times')}" if kind == "view" else ""
        extra = " in your cart" if kind == "add_to_cart" else ""
        return f"you {_VERBS[kind]} {_name(model, item)}{extra}{times}{where}"
    if set(offer.target.categories) & cand.facts.categories_bought:
        return "bought in this category before"
    return None


def _target_rows(
    model: FactorModel, items: Collection[str], categories: Collection[str], general: Rows
) -> Rows:
    if not items and not categories:
        return general
    rows = [model.item_rows(sorted(items))]
    for category in sorted(categories):
        mask = model.category_mask(category)
        if mask is None:
            continue
        if model.allowed_count(mask) > _MAX_CATEGORY_TARGET:
            rows.append(model.popular("all", _MAX_CATEGORY_TARGET, allowed=mask)[0])
        else:
            rows.append(model.allowed_rows(mask).astype(np.int64))
    return np.unique(np.concatenate(rows))


def _name(model: FactorModel, item_id: str) -> str:
    row = model.item_row(item_id)
    return (model.title_of(row) if row is not None else None) or item_id
