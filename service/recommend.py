"""What to show: the model's ranking under the business rules, with fallbacks so lists stay full.

Pure functions over a ``FactorModel`` and a ``CustomerState``; no Redis, no HTTP. The rules:
already-bought items (in the training data or bought since) and explicitly excluded items never
appear; a category filter restricts every source; customers the model does not know get the items
popular on their channel. Every item of the catalogue has a score, so a response has ``k`` items
whenever the filters leave that many.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import numpy as np

from service.errors import InvalidRequest
from service.ranking import FactorModel, Mask, Scores
from service.schemas import RecommendedItem, Source
from service.store import CustomerState


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """What the caller asked for."""

    channel: str
    k: int
    category: str | None = None
    exclude: tuple[str, ...] = ()


class Ranked(msgspec.Struct, frozen=True, kw_only=True):
    """A ranked list and whether it is personalised."""

    items: list[RecommendedItem]
    fallback: bool = False
    fallback_reason: str | None = None


def for_customer(
    model: FactorModel, customer_id: str, state: CustomerState, query: Query
) -> Ranked:
    """Recommendations for ``customer_id`` under ``query``.

    Raises:
        InvalidRequest: the category filter names a category the model does not know.
    """
    allowed = _allowed(model, query)
    user_row = model.user_row(customer_id)
    bought = model.item_rows(state.bought)
    if user_row is not None:
        bought = np.concatenate([model.bought_rows(user_row), bought])
    exclude = np.concatenate([bought, model.item_rows(query.exclude)])
    if user_row is None:
        rows, scores = model.popular(query.channel, query.k, exclude=exclude, allowed=allowed)
        items = _items(model, rows, scores, "popular", _popular_reason(query))
        return Ranked(items=items, fallback=True, fallback_reason="customer unknown to the model")
    rows, scores = model.recommend(
        model.user_vector(user_row), query.k, exclude=exclude, allowed=allowed
    )
    basis = model.closest(rows, bought[-50:])  # explain by the most similar recent purchase
    items = [
        RecommendedItem(
            item_id=model.item_id(int(row)),
            score=float(score),
            source="model",
            category=model.category_of(int(row)),
            reason=f"because you bought {model.item_id(int(b))}" if b >= 0 else None,
        )
        for row, score, b in zip(rows, scores, basis, strict=True)
    ]
    return Ranked(items=items)


def similar_to_item(model: FactorModel, item_row: int, query: Query) -> list[RecommendedItem]:
    """Items similar to ``item_row`` under the query's filters."""
    allowed = _allowed(model, query)
    exclude = model.item_rows(query.exclude)
    rows, scores = model.similar_items(item_row, query.k, exclude=exclude, allowed=allowed)
    return _items(model, rows, scores, "model", f"similar to {model.item_id(item_row)}")


def _allowed(model: FactorModel, query: Query) -> Mask | None:
    if query.category is None:
        return None
    mask = model.category_mask(query.category)
    if mask is None:
        raise InvalidRequest(f"unknown category {query.category!r}")
    return mask


def _items(
    model: FactorModel, rows: Iterable[int], scores: Scores, source: Source, reason: str
) -> list[RecommendedItem]:
    return [
        RecommendedItem(
            item_id=model.item_id(int(row)),
            score=float(score),
            source=source,
            category=model.category_of(int(row)),
            reason=reason,
        )
        for row, score in zip(rows, scores, strict=True)
    ]


def _popular_reason(query: Query) -> str:
    where = f" in {query.category}" if query.category else ""
    return f"popular{where} on {query.channel}"
