"""The store tablet's view of one customer: figures, journey stage and favourites. Pure.

Figures come from the lifetime stats kept at ingest (spend and orders per channel, first and last
activity), the recent events, and the model (categories and brands of what they bought).

Journey stage, checked in this order (thresholds in ``StageRules``):

- ``lapsed``: no activity for longer than ``lapsed_factor`` x the usual purchase interval, and at
  least ``lapsed_min_days`` days;
- ``lapsing``: a moment of silence: no activity for longer than the usual purchase interval (or
  than ``silence_days`` when there is no interval yet), and at least ``min_silence_days``;
- ``new``: first seen less than ``new_days`` days ago with at most one order;
- ``loyal``: at least ``loyal_orders`` orders;
- ``active``: everyone else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import msgspec
import numpy as np

from service import identity
from service.offer_scoring import ScoredOffer
from service.ranking import FactorModel
from service.schemas import RecommendedItem
from service.state import Consent, CustomerState

Stage = Literal["new", "active", "loyal", "lapsing", "lapsed"]
_DAY = 86_400.0
_INTEREST = {"purchase": 3.0, "add_to_cart": 2.0, "wishlist": 2.0, "view": 1.0, "email_click": 1.0}


class StageRules(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of the journey stages (see the module docstring)."""

    new_days: float = 30
    loyal_orders: int = 5
    silence_days: float = 45
    min_silence_days: float = 14
    lapsed_factor: float = 3.0
    lapsed_min_days: float = 120


class ChannelShare(msgspec.Struct, frozen=True, kw_only=True):
    """One channel's part of the customer's activity and spend."""

    channel: str
    events: int
    event_share: float
    spend: float
    spend_share: float
    orders: int


class PurchaseLine(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One recent purchase."""

    item_id: str
    timestamp: datetime | None
    quantity: float
    price: float | None = None
    title: str | None = None
    category: str | None = None
    store_id: str | None = None


class MonthSpend(msgspec.Struct, frozen=True, kw_only=True):
    """Spend in one calendar month (``2026-11``)."""

    month: str
    spend: float


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the tablet shows about one customer."""

    customer_id: str
    identifiers: list[str]  # masked
    consent: Consent
    channel_mix: list[ChannelShare]
    recent_purchases: dict[str, list[PurchaseLine]]
    favourite_categories: list[str]
    favourite_brands: list[str]
    lifetime_value: float
    order_count: int
    average_order_value: float | None
    spend_by_month: list[MonthSpend]
    first_seen: datetime | None
    last_seen: datetime | None
    days_since_last_activity: float | None
    usual_purchase_interval_days: float | None
    churn_risk: bool
    stage: Stage
    store_id: str | None = None
    recommendations: list[RecommendedItem] = msgspec.field(default_factory=list)
    # The offer to make at the till, with its reason (not yet recorded as presented).
    best_offer: ScoredOffer | None = None
    model_version: str | None = None


def build(
    customer_id: str,
    state: CustomerState,
    stats: dict[str, float],
    identifiers: list[str],
    model: FactorModel | None,
    now: datetime,
    rules: StageRules = StageRules(),  # noqa: B008
) -> Profile:
    """The profile of one customer from what Redis and the model know."""
    first, last = _when(stats.get("first_seen")), _when(stats.get("last_seen"))
    orders = int(sum(v for k, v in stats.items() if k.startswith("orders:")))
    value = round(sum(v for k, v in stats.items() if k.startswith("spend:")), 2)
    interval = _interval_days(stats, orders)
    idle = (now - last).total_seconds() / _DAY if last else None
    categories, brands = _favourites(model, customer_id, state)
    return Profile(
        customer_id=customer_id,
        identifiers=[identity.mask(i) for i in identifiers],
        consent=state.consent,
        channel_mix=_channel_mix(stats),
        recent_purchases=_recent_purchases(state, model),
        favourite_categories=categories,
        favourite_brands=brands,
        lifetime_value=value,
        order_count=orders,
        average_order_value=round(value / orders, 2) if orders else None,
        spend_by_month=[
            MonthSpend(month=k[2:], spend=round(v, 2))
            for k, v in sorted(stats.items())
            if k.startswith("m:")
        ],
        first_seen=first,
        last_seen=last,
        days_since_last_activity=round(idle, 1) if idle is not None else None,
        usual_purchase_interval_days=round(interval, 1) if interval else None,
        churn_risk=_silent(idle, interval, rules),
        stage=stage(first, idle, interval, orders, now, rules),
    )


def stage(
    first: datetime | None,
    idle: float | None,
    interval: float | None,
    orders: int,
    now: datetime,
    rules: StageRules,
) -> Stage:
    """The journey stage (rules in the module docstring)."""
    if first is None or idle is None:
        return "new"
    if idle > max(rules.lapsed_factor * (interval or rules.silence_days), rules.lapsed_min_days):
        return "lapsed"
    if _silent(idle, interval, rules):
        return "lapsing"
    if (now - first).total_seconds() / _DAY < rules.new_days and orders <= 1:
        return "new"
    return "loyal" if orders >= rules.loyal_orders else "active"


def _silent(idle: float | None, interval: float | None, rules: StageRules) -> bool:
    """A moment of silence: quiet for longer than the customer's usual purchase interval."""
    if idle is None:
        return False
    return idle > max(interval or rules.silence_days, rules.min_silence_days)


def _interval_days(stats: dict[str, float], orders: int) -> float | None:
    if orders < 2 or "first_order" not in stats:
        return None
    return (stats["last_order"] - stats["first_order"]) / _DAY / (orders - 1)


def _channel_mix(stats: dict[str, float]) -> list[ChannelShare]:
    channels = sorted({k.split(":", 1)[1] for k in stats if k.startswith(("ev:", "spend:"))})
    events = {c: int(stats.get(f"ev:{c}", 0)) for c in channels}
    spend = {c: max(stats.get(f"spend:{c}", 0.0), 0.0) for c in channels}
    total_events, total_spend = sum(events.values()) or 1, sum(spend.values()) or 1.0
    mix = [
        ChannelShare(
            channel=c,
            events=events[c],
            event_share=round(events[c] / total_events, 4),
            spend=round(spend[c], 2),
            spend_share=round(spend[c] / total_spend, 4),
            orders=int(stats.get(f"orders:{c}", 0)),
        )
        for c in channels
    ]
    return sorted(mix, key=lambda m: (-m.events, m.channel))


def _recent_purchases(
    state: CustomerState, model: FactorModel | None, per_channel: int = 5
) -> dict[str, list[PurchaseLine]]:
    lines: dict[str, list[PurchaseLine]] = {}
    for e in state.recent:  # newest first
        if e.event_type != "purchase" or e.item_id is None:
            continue
        bucket = lines.setdefault(e.channel, [])
        if len(bucket) < per_channel:
            row = model.item_row(e.item_id) if model else None
            bucket.append(
                PurchaseLine(
                    item_id=e.item_id,
                    timestamp=e.timestamp,
                    quantity=e.quantity,
                    price=e.price,
                    store_id=e.store_id,
                    title=model.title_of(row) if model and row is not None else None,
                    category=model.category_of(row) if model and row is not None else None,
                )
            )
    return lines


def _favourites(
    model: FactorModel | None, customer_id: str, state: CustomerState, top: int = 3
) -> tuple[list[str], list[str]]:
    """Categories and brands the customer engages with most (recent events and past purchases)."""
    if model is None:
        return [], []
    # Whole arrays: a grocery customer bought hundreds of items (completejourney), and one
    # category and brand look-up per item took 30% of a loaded worker's profile requests.
    event_rows = model.lookup_items([e.item_id or "" for e in state.recent])
    event_weights = np.array([_INTEREST.get(e.event_type, 0.0) for e in state.recent])
    known = event_rows >= 0
    # An erased customer's training-data purchases are theirs no more (recommend._known).
    user_row = None if state.stranger_to(model.erasures_as_of) else model.user_row(customer_id)
    bought = model.bought_rows(user_row) if user_row is not None else np.empty(0, np.int64)
    rows = np.concatenate([event_rows[known], bought])
    weights = np.concatenate([event_weights[known], np.full(len(bought), _INTEREST["purchase"])])
    return model.heaviest_labels(rows, weights, top)


def _when(epoch: float | None) -> datetime | None:
    # 0 is a time (1970-01-01, the earliest an event may carry), not a missing one.
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)
