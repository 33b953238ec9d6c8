"""The customer's vector right now: the model's vector, or one recomputed with newer events.

Pure: a ``FactorModel``, the events Redis holds (plus any session context a request brings),
and the clock in; a vector out. Events the model has not seen (newer than its data window) are
weighted exactly as training weighted them (``FoldIn``) and the vector is recomputed with
implicit's ``recalculate_user`` math, so a few app views change the next web answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec
import numpy as np
from numpy.typing import NDArray

from service.events import Event
from service.foldin import age_in_days, confidences, event_weight, recalculate_user
from service.ranking import FactorModel


class CustomerVector(msgspec.Struct, frozen=True, kw_only=True):
    """The vector to score with (None: nothing known) and how many new events shaped it."""

    vector: NDArray[np.float32] | None
    new_events: int = 0


def customer_vector(
    model: FactorModel, customer_id: str | None, events: Sequence[Event], now: datetime
) -> CustomerVector:
    """The vector of ``customer_id`` given its recent ``events`` (any order).

    A known customer without new events keeps the model's vector; new events are added to the
    customer's training row and the vector is recomputed; a customer the model does not know gets
    a vector from the new events alone (cold start), or None without any.
    """
    user_row = model.user_row(customer_id) if customer_id else None
    new: list[tuple[int, float]] = []
    for e in events:
        row = model.item_row(e.item_id) if _is_new(model, e) else None  # type: ignore[arg-type]
        if row is not None:
            age = age_in_days(e.timestamp or now, now)
            weight = event_weight(model.fold_in, e.event_type, e.channel, age)
            if weight > 0:
                new.append((row, weight))
    if user_row is not None and not new:
        return CustomerVector(vector=model.user_vector(user_row))
    base_rows, base_weights = (
        model.training_row(user_row)
        if user_row is not None
        else (np.empty(0, np.int64), np.empty(0))
    )
    all_rows = np.concatenate([base_rows, np.array([r for r, _ in new], dtype=np.int64)])
    all_weights = np.concatenate([base_weights, np.array([w for _, w in new], dtype=np.float64)])
    item_rows, values = confidences(model.fold_in, all_rows, all_weights)
    if not len(item_rows):
        vector = model.user_vector(user_row) if user_row is not None else None
        return CustomerVector(vector=vector)
    vector = recalculate_user(model.item_factors, model.gram, item_rows, values, model.fold_in)
    return CustomerVector(vector=vector, new_events=len(new))


def _is_new(model: FactorModel, event: Event) -> bool:
    return event.item_id is not None and (
        event.timestamp is None or event.timestamp > model.trained_until
    )
