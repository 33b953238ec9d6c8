"""A customer's history right now, as the sparse item-item component scores it.

The row of the training matrix the artifact ships (``user_items``) plus the events newer than the
model's data window, weighted exactly as training weighted them (``FoldIn``) and summed before the
transform, as training built the matrix. Pure: model, events and clock in; (rows, values) out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from service.events import Event
from service.neighbours import History
from service.ranking import FactorModel, Rows
from service.realtime import current_row, new_event_weights


def customer_history(
    model: FactorModel,
    customer_id: str | None,
    events: Sequence[Event],
    now: datetime,
    event_rows: Rows | None = None,
    row: History | None = None,
) -> History | None:
    """What the component scores for this customer: training row plus newer events.

    The training row comes from the artifact's ``user_items`` (a customer it does not know has
    none); events newer than the model's data window are weighted as training weighted them
    (``FoldIn``) and summed into the row before the transform, as training built the matrix.
    None when the model has no component.

    Args:
        event_rows: each event's item row (-1: unknown), when the caller looked them up.
        row: that row, when the fold-in already built it (``CustomerVector.row``).
    """
    if model.neighbours is None:
        return None
    if row is not None:
        return row
    user_row = model.user_row(customer_id) if customer_id else None
    return current_row(model, user_row, *new_event_weights(model, events, now, event_rows))
