"""The similar-items table training ships: items the same customers interacted with come first.

For each item, its ``SIMILAR_KEPT`` most similar items by the cosine of their columns of the
binary customer x item matrix (what the same customers bought or viewed: item-to-item
collaborative filtering, implicit's ``CosineRecommender``) among the items sharing at least
``MIN_TOGETHER`` customers with it, then, for items with fewer such neighbours (rare and new
items), the nearest by cosine of their factors, found for those items only (the whole table:
22.7 s for completejourney's 68,509 items on 2 cores, 0.7 s for uci-online-retail's 3,665). On
the validation periods, the similar items of a customer's five strongest items held more of what
they took next with this table than with factor cosine alone: precision@10 0.0302 against
0.0216 on completejourney, 0.0444 against 0.0322 on uci-online-retail, 0.0455 against 0.0297 on
movielens-100k (``python -m benchmarks.similar_quality``).

Scores: a co-interaction neighbour's cosine (in ``(0, 1]``); the items filled in from the factors
score 0 after co-interaction neighbours, so scores never rise down a list, and keep their factor
cosine in a list made of them alone.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from service.similar_table import SIMILAR_KEPT, build_similar

# Co-interaction neighbours must share at least this many customers. Cosine favours rare items
# one customer happened to take together: with a single shared customer, the similar items of
# items of 1-10 customers did worse than factor cosine (precision@10 on uci-online-retail 0.0027
# against 0.0089, movielens-100k 0.0033 against 0.0054). Shared by at least 3, 4 or 6
# customers: uci-online-retail 0.0149, 0.0130, 0.0090, movielens-100k 0.0087, 0.0109, 0.0087;
# for items of 11-30 customers uci-online-retail 0.0129, 0.0157, 0.0184 (factor cosine 0.0108),
# and on each customer's five strongest items within 2% of one another on three data sets
# (movielens-latest-small, 65 queries: 0.0692, 0.0754, 0.0692). python -m
# benchmarks.similar_quality.
MIN_TOGETHER = 4
# Customers who took more distinct items than this (a crawler, a shared account) say little about
# which items go together, and the work grows with the square of each customer's items. The real
# data sets' most active customers took 1,787 (uci-online-retail) to 2,698 (movielens-latest-small).
MAX_CUSTOMER_ITEMS = 10_000
_CANDIDATES_PER_KEPT = 4


def co_interaction_table(
    matrix: sp.csr_matrix,
    matrix_rows: NDArray[np.int64],
    item_factors: NDArray[np.float32],
    kept: int = SIMILAR_KEPT,
    min_together: int = MIN_TOGETHER,
    max_customer_items: int = MAX_CUSTOMER_ITEMS,
) -> dict[str, NDArray[Any]]:
    """The table's arrays (``service/similar_table.py``) in the artifact's item order.

    Args:
        matrix: customers x items of the training data (any positive value is an interaction).
        matrix_rows: the artifact row of each of ``matrix``'s columns.
        item_factors: every item's factors in artifact order (items without events too).
        min_together: customers two items must share to be co-interaction neighbours.
        max_customer_items: customers who took more items than this are left out of it.
    """
    from implicit.nearest_neighbours import CosineRecommender

    n = len(item_factors)
    width = max(0, min(kept, n - 1))
    rows = np.empty((n, width), dtype=np.int32)
    scores = np.zeros((n, width), dtype=np.float32)
    if width == 0:  # a catalogue of one item: nothing is similar to it
        return {"similar_rows": rows, "similar_scores": scores}
    similarity = sp.csr_matrix((n, n), dtype=np.float32)
    if matrix.shape[1]:
        binary = matrix.astype(np.float32).tocsr()
        binary.data = (binary.data > 0).astype(np.float32)
        binary.eliminate_zeros()
        binary = binary[np.diff(binary.indptr) <= max_customer_items]
        with warnings.catch_warnings():
            # implicit converts its own normalised copy of the matrix to CSR and warns about it.
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            # More candidates than kept: some are dropped below for sharing too few customers.
            model = CosineRecommender(K=_CANDIDATES_PER_KEPT * (width + 1))
            model.fit(binary, show_progress=False)
        found = model.similarity.tocoo()
        # Binary columns: cosine x sqrt(customers of each) is the number of customers shared.
        customers = np.asarray(binary.sum(axis=0)).ravel()
        together = np.rint(found.data * np.sqrt(customers[found.row] * customers[found.col]))
        keep = (found.row != found.col) & (together >= max(min_together, 1))
        similarity = sp.csr_matrix(
            (
                found.data[keep].astype(np.float32),
                (matrix_rows[found.row[keep]], matrix_rows[found.col[keep]]),
            ),
            shape=(n, n),
        )
    counts = np.diff(similarity.indptr)
    # Factor neighbours only for the items that need some: scoring every item against the whole
    # catalogue is the table's one cost that grows with the square of the catalogue.
    short = np.flatnonzero(counts < width)
    by_factors = build_similar(item_factors, kept, items=short)
    filler = dict(zip(short.tolist(), range(len(short)), strict=True))
    for item in range(n):
        start, end = similarity.indptr[item], similarity.indptr[item + 1]
        if start == end:  # factor neighbours alone, with their cosine
            rows[item] = by_factors["similar_rows"][filler[item]]
            scores[item] = by_factors["similar_scores"][filler[item]]
            continue
        neighbours, cosine = similarity.indices[start:end], similarity.data[start:end]
        best = np.lexsort((neighbours, -cosine))[:width]  # ties: the lower row first
        taken = len(best)
        rows[item, :taken] = neighbours[best]
        scores[item, :taken] = cosine[best]
        if taken < width:
            candidates = by_factors["similar_rows"][filler[item]]
            rows[item, taken:] = candidates[~np.isin(candidates, neighbours)][: width - taken]
    return {"similar_rows": rows, "similar_scores": scores}
