"""What the offer rules know about a customer, derived from real-time state and the model.

Pure. Purchases come from two places: the training data (``FactorModel.bought_rows``, priced
with the catalogue's prices, without dates: taken as made when the model's data ends) and the
recent events since (with their prices and timestamps). Segments and bands follow
``OfferRules``; nothing here is hard-coded beyond the definitions of the facts themselves.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
import numpy as np

from service.events import Event
from service.offers import OfferRules, SegmentRule
from service.ranking import FactorModel, Rows
from service.state import CustomerState

_DAY = 86400.0


class Contact(msgspec.Struct, frozen=True, kw_only=True):
    """One offer presented to the customer on one channel (the one record all channels share)."""

    offer_id: str
    channel: str
    at: datetime


class OfferHistory(msgspec.Struct, frozen=True, kw_only=True):
    """Offers presented to the customer (newest first) and those redeemed (id -> when)."""

    contacts: list[Contact] = msgspec.field(default_factory=list)
    redeemed: dict[str, datetime] = msgspec.field(default_factory=dict)


class Facts(msgspec.Struct, frozen=True, kw_only=True):
    """The customer as the eligibility rules see them."""

    purchases: int = 0
    lifetime_value: float = 0.0
    ltv_band: str | None = None
    days_since_purchase: float | None = None  # None: never bought
    days_since_activity: float | None = None  # None: never seen
    usual_interval_days: float = 30.0
    quiet: bool = False  # a moment of silence: longer without activity than usual
    categories_bought: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    # Items left in the cart long enough to trigger a cart offer, oldest first.
    abandoned: tuple[str, ...] = ()


def customer_facts(
    model: FactorModel, customer_id: str, state: CustomerState, rules: OfferRules, now: datetime
) -> Facts:
    """Purchases, value, recency, silence, categories, segments and abandoned cart items."""
    # An erased customer's training-data purchases are theirs no more (recommend._known).
    user_row = None if state.stranger_to(model.erasures_as_of) else model.user_row(customer_id)
    # Whole arrays, not a loop per purchase: a grocery customer has hundreds (completejourney),
    # and a price or category looked up one at a time cost about 2 µs each.
    trained = model.bought_rows(user_row) if user_row is not None else np.empty(0, np.int64)
    since = [
        e
        for e in state.recent
        if e.event_type == "purchase" and e.timestamp and e.timestamp > model.trained_until
    ]
    value = model.total_price(trained) + sum(
        e.quantity * (e.price if e.price is not None else _price(model, e.item_id)) for e in since
    )
    bought_days = sorted({e.timestamp for e in since if e.timestamp})
    last_purchase = (
        bought_days[-1] if bought_days else (model.trained_until if len(trained) else None)
    )
    seen = [e.timestamp for e in state.recent if e.timestamp]
    last_seen = max(seen) if seen else (model.trained_until if user_row is not None else None)
    interval = _usual_interval(bought_days, rules)
    purchases = len(trained) + len(since)
    days_active = _days(now, last_seen)
    band = ltv_band(rules, value)
    facts = Facts(
        purchases=purchases,
        lifetime_value=value,
        ltv_band=band,
        days_since_purchase=_days(now, last_purchase),
        days_since_activity=days_active,
        usual_interval_days=interval,
        quiet=purchases > 0
        and days_active is not None
        and days_active > rules.win_back.factor * interval,
        categories_bought=_categories(model, trained, state, since),
        abandoned=_abandoned(state, rules, now),
    )
    segments = frozenset(s.name for s in rules.segments if in_segment(s, facts))
    return msgspec.structs.replace(facts, segments=segments)


def ltv_band(rules: OfferRules, value: float) -> str | None:
    """The highest band whose minimum ``value`` reaches."""
    reached = [b for b in rules.ltv_bands if value >= b.min_value]
    return max(reached, key=lambda b: b.min_value).name if reached else None


def in_segment(rule: SegmentRule, facts: Facts) -> bool:
    """True when every condition of ``rule`` holds for the customer."""
    since = facts.days_since_purchase
    return (
        (rule.min_purchases is None or facts.purchases >= rule.min_purchases)
        and (rule.max_purchases is None or facts.purchases <= rule.max_purchases)
        and (not rule.ltv_bands or facts.ltv_band in rule.ltv_bands)
        and within_days(since, rule.min_days_since_purchase, rule.max_days_since_purchase)
        and (rule.quiet is None or rule.quiet == facts.quiet)
    )


def within_days(days: float | None, low: float | None, high: float | None) -> bool:
    """``days`` (None: never) inside the optional bounds ``[low, high]``."""
    if low is None and high is None:
        return True
    if days is None:
        # Never bought: as long ago as can be, so only a minimum can hold.
        return high is None
    return (low is None or days >= low) and (high is None or days <= high)


def _usual_interval(bought: list[datetime], rules: OfferRules) -> float:
    days = sorted({d.date() for d in bought})
    if len(days) < 2:
        interval = rules.win_back.default_interval_days
    else:
        interval = (days[-1] - days[0]).days / (len(days) - 1)
    return max(interval, rules.win_back.min_interval_days)


def _categories(
    model: FactorModel, trained: Rows, state: CustomerState, since: list[Event]
) -> frozenset[str]:
    later = model.item_rows([*state.bought, *(e.item_id for e in since if e.item_id)])
    return model.category_set(np.concatenate([trained, later]))


def _abandoned(state: CustomerState, rules: OfferRules, now: datetime) -> tuple[str, ...]:
    wait = rules.abandoned_cart.after_minutes * 60
    lines = sorted(state.cart.items(), key=lambda kv: kv[1].added_at)
    return tuple(
        item
        for item, line in lines
        if (now - line.added_at).total_seconds() >= wait and item not in state.bought
    )


def _price(model: FactorModel, item_id: str | None) -> float:
    row = model.item_row(item_id) if item_id else None
    return (model.price_of(row) or 0.0) if row is not None else 0.0


def _days(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max((now - then).total_seconds(), 0.0) / _DAY
