"""What to show: the model's ranking under the business rules, with fallbacks and reasons.

Pure functions over a ``FactorModel`` and what the request knows (``Context``); no Redis, no
HTTP. The rules: items the customer bought (in the training data or since, on any channel; unless
``Context.exclude_bought`` is off), has in the cart or excluded explicitly never appear; a
category filter and the stock of the channel or store restrict every source; customers the model
cannot place (unknown, no consent to personalisation) get the items popular on their channel.
Every item of the catalogue has a score, so a response has ``k`` items whenever the filters leave
that many.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import datetime

import msgspec
import numpy as np

from service.errors import InvalidRequest
from service.events import Event
from service.history import customer_history
from service.ranking import FactorModel, Mask, Rows, Scores
from service.realtime import customer_vector
from service.schemas import RecommendedItem, Source
from service.state import CustomerState

_VERBS = {
    "view": "viewed",
    "add_to_cart": "put in your cart",
    "purchase": "bought",
    "wishlist": "saved",
    "email_click": "clicked",
    "click": "clicked",
    "rating": "rated",
    "offer_redeemed": "redeemed",
}
_WHERE = {
    "store": " in store",
    "tablet": " in store",
    "app": " on the app",
    "web": " online",
    "email": " in an email",
    "social": " on social media",
}
_MAX_REASONS = 30
_NEW_CUSTOMER = "new customer: popular items rank better with this few events (training found)"


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """What the caller asked for."""

    channel: str
    k: int
    category: str | None = None
    exclude: tuple[str, ...] = ()
    store_id: str | None = None
    # Where the answer is shown; it does not change the ranking, only which experiment applies.
    placement: str | None = None


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """What the request knows besides the query."""

    now: datetime
    state: CustomerState = CustomerState()
    # Session context a request brings (cart, viewed items), treated like recent events.
    session: list[Event] = []
    personalise: bool = True
    # Items the channel or store can offer now (stock); None: no restriction.
    available: Mask | None = None
    # False: items bought (or rated) before may be shown again (``RECO_EXCLUDE_BOUGHT``).
    exclude_bought: bool = True


class Ranked(msgspec.Struct, frozen=True, kw_only=True):
    """A ranked list and whether it is personalised."""

    items: list[RecommendedItem]
    fallback: bool = False
    fallback_reason: str | None = None
    recent_events_used: int = 0


def for_customer(model: FactorModel, customer_id: str | None, query: Query, ctx: Context) -> Ranked:
    """Recommendations for ``customer_id`` (None: an anonymous session) under ``query``.

    Raises:
        InvalidRequest: the category filter names a category the model does not know.
    """
    allowed = _allowed(model, query, ctx.available)
    events = [*ctx.session, *ctx.state.recent]
    customer_id = _known(model, customer_id, ctx.state)
    user_row = model.user_row(customer_id) if customer_id else None
    explicit, bought, exclude, event_rows = _left_out(model, user_row, query, ctx, events)
    if not ctx.personalise:
        rows, scores = model.popular(query.channel, query.k, exclude=explicit, allowed=allowed)
        items = _items(model, rows, scores, "popular", _popular_reason(query))
        return Ranked(items=items, fallback=True, fallback_reason="no consent to personalisation")
    found = customer_vector(model, customer_id, events, ctx.now, event_rows)
    if found.vector is None or (
        user_row is None and found.new_events <= model.fold_in.popular_until_events
    ):
        # Unknown, or new with as few events as training found popularity serves better.
        rows, scores = model.popular(query.channel, query.k, exclude=exclude, allowed=allowed)
        items = _items(model, rows, scores, "popular", _popular_reason(query))
        reason = "customer unknown to the model" if found.vector is None else _NEW_CUSTOMER
        return Ranked(items=items, fallback=True, fallback_reason=reason)
    kept = None
    if user_row is not None and not found.new_events and ctx.exclude_bought and not query.category:
        # Nothing new since training: the ranking training shipped, unless the filters leave too
        # few of it. (A category's items are rarely among a customer's best overall.)
        kept = model.recommend_unchanged(user_row, query.k, exclude=exclude, allowed=allowed)
    if kept is None:
        history = customer_history(model, customer_id, events, ctx.now, event_rows, found.row)
        kept = model.recommend(
            found.vector, query.k, exclude=exclude, allowed=allowed, history=history
        )
    rows, scores = kept
    items = _explained(model, rows, scores, _reasons(events, event_rows, bought))
    return Ranked(items=items, recent_events_used=found.new_events)


def popular_items(
    model: FactorModel, customer_id: str | None, query: Query, ctx: Context
) -> list[RecommendedItem]:
    """The channel's popular items under ``query``, still without what the customer bought (in
    the training data or since) or has in the cart: no fold-in and no scoring, a fraction of a
    personalised answer's cost. Without consent to personalisation, as ``for_customer``, only
    the items the query names are left out: the customer's history is not used."""
    allowed = _allowed(model, query, ctx.available)
    customer_id = _known(model, customer_id, ctx.state)
    user_row = model.user_row(customer_id) if customer_id else None
    explicit, _, exclude, _ = _left_out(model, user_row, query, ctx, [])
    if not ctx.personalise:
        exclude = explicit
    rows, scores = model.popular(query.channel, query.k, exclude=exclude, allowed=allowed)
    return _items(model, rows, scores, "popular", _popular_reason(query))


def _known(model: FactorModel, customer_id: str | None, state: CustomerState) -> str | None:
    """The id to look the customer up in the model by: None once they were erased, so their
    training-data row and purchases go unused until a model whose training knew of the erasure
    (and so kept only their later events) is served."""
    return None if state.stranger_to(model.erasures_as_of) else customer_id


def _left_out(
    model: FactorModel, user_row: int | None, query: Query, ctx: Context, events: Sequence[Event]
) -> tuple[Rows, Rows, Rows, Rows]:
    """What an answer leaves out: the rows the query names (``exclude``), the rows bought (in
    the training data or since), all of those and the cart's together; and each of ``events``'
    item row (-1: unknown). Every id looked up in one search, each event's item once for the
    fold-in and for the reasons alike."""
    in_cart = [*ctx.state.cart, *(e.item_id for e in ctx.session if e.event_type == "add_to_cart")]
    explicit, bought_since, carted, event_rows = _lookup(
        model, query.exclude, ctx.state.bought, [i for i in in_cart if i], events
    )
    bought = bought_since
    if user_row is not None:
        bought = np.concatenate([model.bought_rows(user_row), bought_since])
    left_out = [bought, explicit, carted] if ctx.exclude_bought else [explicit, carted]
    return explicit, bought, np.concatenate(left_out), event_rows


def similar_to_item(
    model: FactorModel, item_row: int, query: Query, available: Mask | None = None
) -> list[RecommendedItem]:
    """Items similar to ``item_row`` under the query's filters and the channel's stock."""
    allowed = _allowed(model, query, available)
    exclude = model.item_rows(query.exclude)
    rows, scores = model.similar_items(item_row, query.k, exclude=exclude, allowed=allowed)
    return _items(model, rows, scores, "model", f"similar to {_name(model, item_row)}")


def _lookup(
    model: FactorModel,
    explicit: Iterable[str],
    bought: Iterable[str],
    carted: Iterable[str],
    events: Sequence[Event],
) -> tuple[Rows, Rows, Rows, Rows]:
    """The rows of the known ids among ``explicit``, ``bought`` and ``carted``, and each event's
    item row (-1: unknown), from one search of the model's ids."""
    groups = [list(explicit), list(bought), list(carted), [e.item_id or "" for e in events]]
    found = model.lookup_items([i for group in groups for i in group])
    a, b, c = itertools.accumulate(len(g) for g in groups[:-1])
    known = [part[part >= 0] for part in (found[:a], found[a:b], found[b:c])]
    return known[0], known[1], known[2], found[c:]


def _allowed(model: FactorModel, query: Query, available: Mask | None) -> Mask | None:
    if query.category is None:
        return available
    mask = model.category_mask(query.category, available)
    if mask is None:
        raise InvalidRequest(f"unknown category {query.category!r}")
    return mask


def _reasons(
    events: Sequence[Event], event_rows: Rows, bought: Rows
) -> list[tuple[int, Event | None]]:
    """Things the customer did that can explain a recommendation, most telling first.

    (item row, event) pairs; ``None`` stands for a purchase in the training data. The text is
    written only for the reasons an answer uses (``_reason_text``).
    """
    reasons: list[tuple[int, Event | None]] = []
    for e, row in zip(events, event_rows.tolist(), strict=True):
        if row >= 0 and e.event_type in _VERBS:
            reasons.append((row, e))
            if len(reasons) >= _MAX_REASONS:
                return reasons
    reasons.extend((row, None) for row in bought[::-1][: _MAX_REASONS - len(reasons)].tolist())
    return reasons


def _reason_text(model: FactorModel, row: int, event: Event | None) -> str:
    if event is None:
        return f"because you bought {_name(model, row)}"
    where = _WHERE.get(event.channel, "")
    return f"because you {_VERBS[event.event_type]} {_name(model, row)}{where}"


def _explained(
    model: FactorModel, rows: Rows, scores: Scores, reasons: list[tuple[int, Event | None]]
) -> list[RecommendedItem]:
    basis = np.array([r for r, _ in reasons], dtype=np.int64)
    closest = model.closest(rows, basis).tolist()
    first: dict[int, Event | None] = {}
    for row, event in reasons:
        first.setdefault(row, event)  # the first (most recent) reason per item wins
    # Written once per reason used: most of an answer's items share a few.
    texts = {b: _reason_text(model, b, first[b]) for b in set(closest) if b in first}
    return [
        RecommendedItem(
            item_id=item_id, score=score, source="model", category=category, reason=texts.get(b)
        )
        for item_id, score, category, b in zip(
            model.item_ids_of(rows),
            scores.tolist(),
            model.categories_of(rows),
            closest,
            strict=True,
        )
    ]


def _items(
    model: FactorModel, rows: Rows, scores: Scores, source: Source, reason: str
) -> list[RecommendedItem]:
    return [
        RecommendedItem(
            item_id=item_id, score=score, source=source, category=category, reason=reason
        )
        for item_id, score, category in zip(
            model.item_ids_of(rows), scores.tolist(), model.categories_of(rows), strict=True
        )
    ]


def _name(model: FactorModel, row: int) -> str:
    return model.title_of(row) or model.item_id(row)


def _popular_reason(query: Query) -> str:
    where = f" in {query.category}" if query.category else ""
    store = f" in store {query.store_id}" if query.store_id else f" on {query.channel}"
    return f"popular{where}{store}"
