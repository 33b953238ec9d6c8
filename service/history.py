"""A customer's history right now, as the sparse item-item component scores it.

The row of the training matrix the artifact ships (``user_items``) plus the events newer than the
model's data window, weighted exactly as training weighted them (``FoldIn``) and summed before the
transform, as training built the matrix. Pure: model, events and clock in; (rows, values) out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from service.events import Event
from service.foldin import age_in_days, confidences, event_weight
from service.neighbours import History
from service.ranking import FactorModel, Rows


def customer_history(
    model: FactorModel,
    customer_id: str | None,
    events: Sequence[Event],
    now: datetime,
    event_rows: Rows | None = None,
) -> History | None:
    """What the component scores for this customer: training row plus newer events.

    ``event_rows``: each event's item row (-1: unknown), when the caller looked them up.
    The training row comes from the artifact's ``user_items`` (a customer it does not know has
    none); events newer than the model's data window are weighted as training weighted them
    (``FoldIn``) and summed into the row before the transform, as training built the matrix.
    None when the model has no component.
    """
    if model.neighbours is None:
        return None
    user_row = model.user_row(customer_id) if customer_id else None
    rows: list[int] = []
    weights: list[float] = []
    if event_rows is None:
        event_rows = model.lookup_items([e.item_id or "" for e in events])
    for e, row in zip(events, event_rows.tolist(), strict=True):
        if row < 0 or (e.timestamp is not None and e.timestamp <= model.trained_until):
            continue
        weight = event_weight(
            model.fold_in, e.event_type, e.channel, age_in_days(e.timestamp or now, now)
        )
        if weight > 0:
            rows.append(row)
            weights.append(weight)
    if user_row is None:
        return confidences(model.fold_in, rows, weights)
    base_rows, base_weights = model.training_row(user_row)
    if not rows and "user_items_indptr" in model.artifact.arrays:
        a = model.artifact.arrays
        start, end = a["user_items_indptr"][user_row], a["user_items_indptr"][user_row + 1]
        return base_rows, np.asarray(a["user_items_values"][start:end], dtype=np.float64)
    return confidences(
        model.fold_in,
        np.concatenate([base_rows, np.asarray(rows, dtype=np.int64)]),
        np.concatenate([base_weights, np.asarray(weights, dtype=np.float64)]),
    )
