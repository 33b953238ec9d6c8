"""Each known customer's best items, ranked once when the model is built and shipped.

Why: a customer with no event since the model's data window has the vector and the history
training fitted, so their ranking before a request's filters is the same on every request.
Searching for it again per request was a sixth of a recommendation's CPU at 100k items and a
third at a million (the probed clusters' factors are read from memory at every query). Email
campaigns ask for every customer of the base, the store tablet for customers at the till, and a
storefront for a visitor's first page: mostly customers with nothing new since training.

The table is two arrays in the artifact, memory-mapped and shared by every worker like the
others: row ``u`` of ``customer_top_rows`` lists customer ``u``'s best item rows, best first,
without what they bought in the training data (padded with -1 when the catalogue holds fewer),
with their scores in ``customer_top_scores``. A request drops what it leaves out (bought since,
in the cart, named in ``exclude``) and what its filter or the channel's stock does not allow;
when at least ``k`` items remain they are the answer, exactly the best ``k`` of the same
ranking with those filters, as dropping items never reorders the rest. Otherwise (a category
request, a selective filter, a large ``k``) the request ranks live.

Built with ``FactorModel.recommend`` itself, so it holds what the service would answer: through
the index when the model has one (the same probes for any ``k``), exactly otherwise. One case can
differ: with an item-item component, a search through the index rescores the index's best
``2k + 10`` items, so the table's wider search may hold an item a live answer misses (a better
one). Measured on the trained blends, every sampled customer's answer was the same
(completejourney: 1,646 of 1,646 with the index and the EASE component).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from service.ann import among

if TYPE_CHECKING:
    from service.ranking import FactorModel, Mask, Rows, Scores

# The table's arrays in an artifact: name -> (dtype kind, number of dimensions).
CUSTOMER_ARRAYS: dict[str, tuple[str, int]] = {
    "customer_top_rows": ("i", 2),  # int32 [n_users, width]: item rows, best first, -1: none
    "customer_top_scores": ("f", 2),  # float32 [n_users, width]: their scores
}
# Items kept per customer: enough for the usual k (10-20) after a few are dropped; 8 bytes each.
CUSTOMER_KEPT = 32
# Training's default largest customer base for a table (TrainConfig.customer_table_max_customers):
# 2 million customers take 512 MB of disk and page cache, and their ranking some minutes.
DEFAULT_MAX_CUSTOMERS = 2_000_000


def check_customer_table(arrays: Any, n_users: int, n_items: int) -> str | None:
    """What is wrong with an artifact's table, or None (also when it has none)."""
    present = [name for name in CUSTOMER_ARRAYS if name in arrays]
    if not present:
        return None
    if len(present) != len(CUSTOMER_ARRAYS):
        return "the customer table's arrays go together: customer_top_rows and customer_top_scores"
    rows, scores = arrays["customer_top_rows"], arrays["customer_top_scores"]
    if rows.shape != scores.shape or rows.shape[0] != n_users:
        return "customer_top_rows and customer_top_scores must both be customers x width"
    if rows.size and (rows.min() < -1 or rows.max() >= n_items):
        return "customer_top_rows holds item rows out of range"
    return None


def build_customer_table(model: FactorModel, kept: int = CUSTOMER_KEPT) -> dict[str, NDArray[Any]]:
    """Every customer's best ``kept`` items as the service ranks them for a customer with no new
    event: their training vector and history, without what they bought in the training data."""
    from service.realtime import current_row  # realtime imports ranking, which imports this

    n_users = len(model.user_ids)
    width = max(0, min(kept, model.n_items))
    rows = np.full((n_users, width), -1, dtype=np.int32)
    scores = np.zeros((n_users, width), dtype=np.float32)
    with_history = model.neighbours is not None
    for user in range(n_users):
        history = current_row(model, user, [], []) if with_history else None
        found, values = model.recommend(
            model.user_vector(user), width, exclude=model.bought_rows(user), history=history
        )
        rows[user, : len(found)] = found
        scores[user, : len(found)] = values
    return {"customer_top_rows": rows, "customer_top_scores": scores}


def answer_from(
    rows: NDArray[np.int32],
    scores: NDArray[np.float32],
    k: int,
    exclude: Rows | None,
    allowed: Mask | None,
) -> tuple[Rows, Scores] | None:
    """The best ``k`` of a customer's table row (``rows``, ``scores``) that are neither excluded
    nor disallowed; None when fewer than ``k`` remain (rank live instead)."""
    if k > len(rows):
        return None
    keep = rows >= 0
    if allowed is not None:
        keep &= allowed[np.maximum(rows, 0)]
    if exclude is not None and len(exclude):
        keep &= ~among(rows, exclude)
    picks = np.flatnonzero(keep)[:k]
    if len(picks) < k:
        return None
    return rows[picks].astype(np.int64), scores[picks].astype(np.float32)
