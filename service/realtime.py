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
from service.foldin import age_in_days, confidences, event_weight
from service.neighbours import History
from service.ranking import FactorModel, Rows


class CustomerVector(msgspec.Struct, frozen=True, kw_only=True):
    """The vector to score with (None: nothing known) and how many new events shaped it."""

    vector: NDArray[np.float32] | None
    new_events: int = 0
    # The customer's matrix row the vector was solved from (training row plus new events), when
    # new events made one: the sparse component scores the same row (service/history.py).
    row: History | None = None


def customer_vector(
    model: FactorModel,
    customer_id: str | None,
    events: Sequence[Event],
    now: datetime,
    event_rows: Rows | None = None,
) -> CustomerVector:
    """The vector of ``customer_id`` given its recent ``events`` (any order).

    A known customer without new events keeps the model's vector; with new events it moves by the
    difference they make to the least-squares solution of the customer's training row (so the
    fitted vector is kept, whatever model made it); a customer the model does not know gets a
    vector from the new events alone (cold start), or None without any.

    Args:
        event_rows: the item row of each event (-1: unknown), when the caller looked them up.
    """
    user_row = model.user_row(customer_id) if customer_id else None
    new_rows, new_weights = new_event_weights(model, events, now, event_rows)
    if user_row is not None and not new_rows:
        return CustomerVector(vector=model.user_vector(user_row))
    rows, values = current_row(model, user_row, new_rows, new_weights)
    if user_row is None:
        if not len(rows):
            return CustomerVector(vector=None)
        vector = model.least_squares.solve(rows, values)
        return CustomerVector(vector=vector, new_events=len(new_rows), row=(rows, values))
    # A known customer keeps the vector training fitted (for a blend, ALS, BPR or LightFM alike)
    # and moves by what the new events change in the least-squares solution of their row.
    before, after = model.solutions(user_row, (rows, values))
    vector = model.user_vector(user_row) + (after - before)
    return CustomerVector(
        vector=vector.astype(np.float32), new_events=len(new_rows), row=(rows, values)
    )


def new_event_weights(
    model: FactorModel, events: Sequence[Event], now: datetime, event_rows: Rows | None = None
) -> tuple[list[int], list[float]]:
    """Item rows and weights of the ``events`` newer than the model, as training weighted them.

    ``event_rows``: the item row of each event (-1: unknown), when the caller looked them up.
    """
    if event_rows is None:
        event_rows = model.lookup_items([e.item_id or "" for e in events])
    rows: list[int] = []
    weights: list[float] = []
    for e, row in zip(events, event_rows.tolist(), strict=True):
        if row >= 0 and _is_new(model, e):
            age = age_in_days(e.timestamp or now, now)
            weight = event_weight(model.fold_in, e.event_type, e.channel, age, e.rating)
            if weight > 0:
                rows.append(row)
                weights.append(weight)
    return rows, weights


def current_row(
    model: FactorModel, user_row: int | None, new_rows: list[int], new_weights: list[float]
) -> History:
    """The customer's row of the matrix now: training row plus new events, after the transform.

    Weights are summed per item before the transform, as training built the matrix; a customer
    the model does not know has no training row.
    """
    if user_row is None:
        return confidences(model.fold_in, new_rows, new_weights)
    base_rows, base_weights = model.training_row(user_row)
    a = model.artifact.arrays
    if not new_rows and "user_items_indptr" in a:
        # Nothing new: the stored row as it is (no round trip through the transform).
        start, end = a["user_items_indptr"][user_row], a["user_items_indptr"][user_row + 1]
        return base_rows, np.asarray(a["user_items_values"][start:end], dtype=np.float64)
    return confidences(
        model.fold_in,
        np.concatenate([base_rows, np.asarray(new_rows, dtype=np.int64)]),
        np.concatenate([base_weights, np.asarray(new_weights, dtype=np.float64)]),
    )


def _is_new(model: FactorModel, event: Event) -> bool:
    return event.item_id is not None and (
        event.timestamp is None or event.timestamp > model.trained_until
    )
