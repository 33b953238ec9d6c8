"""Items' scores for a vector, cheaper for models whose factor columns are mostly zeros.

A blend that exports an item-item model exactly (``training/models/neighbours.py``: catalogues of
up to ``exact_items`` items) has one factor column per item for it, 1 for that item and 0 for the
other items of the training data (an item new since, scored from its attributes, has a row of
its own): of the 1,664 factor columns of ``make run``'s sample blend (800 items), 1,600 hold two
non-zeros each. ``item_factors @ v`` then mostly multiplies by zeros. ``ItemProducts`` keeps the
dense columns as one small matrix and the sparse ones as their non-zero entries, summed per item
with ``np.add.reduceat``. The scores are the same up to float32 rounding (the terms are summed in
another order); a model without sparse columns multiplies as before.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Rows = NDArray[np.int64]

# Only models with this many factors or more are searched for sparse columns: exact exports have
# one per item, and a model with fewer factors gains nothing worth a second code path.
SEARCHED_FROM_DIM = 256
# A column is sparse when at most this share of the items have a non-zero in it, and the split
# pays when the sparse columns' non-zeros are at most this share of their entries.
SPARSE_SHARE = 1 / 16


# The factor rows ``gathered_products`` gathers and multiplies at a time: a quarter of a MiB
# (1,024 rows of 64 factors), so each chunk is still in the core's cache for its product. At a
# million 64-factor items, 20,000 rows took 438 µs in chunks of 1,024 against 679 in one gather
# (3,000 rows: 50 against 60; chunks of 2,048, 4,096 and 8,192: 464, 543, 650).
GATHER_CHUNK_BYTES = 256 << 10


def gathered_products(
    factors: NDArray[np.float32], rows: NDArray[np.integer], vector: NDArray[np.float32]
) -> NDArray[np.float32]:
    """``factors[rows] @ vector``, gathering a chunk of rows at a time (``GATHER_CHUNK_BYTES``).

    np.take: faster than fancy indexing for a gather of a few hundred rows or more.
    """
    step = max(1, GATHER_CHUNK_BYTES // max(factors.shape[1] * factors.itemsize, 1))
    if len(rows) <= step:
        return np.take(factors, rows, axis=0) @ vector  # type: ignore[no-any-return]
    out = np.empty(len(rows), dtype=np.result_type(factors.dtype, vector.dtype))
    for start in range(0, len(rows), step):
        out[start : start + step] = np.take(factors, rows[start : start + step], axis=0) @ vector
    return out


class ItemProducts:
    """Products of the item factors with vectors: ``item_factors @ v`` and ``V @ item_factorsᵀ``."""

    def __init__(self, item_factors: NDArray[np.float32]) -> None:
        """Split ``item_factors`` into dense and sparse columns where it pays (once per model,
        off the event loop)."""
        self.item_factors = item_factors
        self.n_items = n = len(item_factors)
        self.split = False
        dim = item_factors.shape[1]
        if n == 0 or dim < SEARCHED_FROM_DIM:
            return
        nonzero = np.count_nonzero(item_factors, axis=0)
        sparse = nonzero <= SPARSE_SHARE * n
        if sparse.sum() < dim // 2 or nonzero[sparse].sum() > SPARSE_SHARE * n * sparse.sum():
            return
        self.split = True
        self._dense_columns = np.flatnonzero(~sparse)
        # A copy of the dense columns: small, as such models have a few thousand items at most.
        self._dense = np.ascontiguousarray(item_factors[:, ~sparse], dtype=np.float32)
        # The sparse columns' non-zeros, item by item: (item, column) pairs in row-major order.
        items, columns = np.nonzero(np.asarray(item_factors[:, sparse]))
        self._columns = np.flatnonzero(sparse)[columns]
        self._values = np.asarray(item_factors[items, self._columns], dtype=np.float32)
        # Where each item with non-zeros starts among them (reduceat's segments).
        self._items, self._starts = np.unique(items, return_index=True)

    def scores(self, vector: NDArray[np.float32]) -> NDArray[np.float32]:
        """Every item's ``factors · vector`` (a fresh array)."""
        if not self.split:
            return self.item_factors @ vector  # type: ignore[no-any-return]
        out: NDArray[np.float32] = self._dense @ vector[self._dense_columns]
        if len(self._values):
            terms = self._values * vector[self._columns]
            out[self._items] += np.add.reduceat(terms, self._starts)
        return out

    def scores_of(self, rows: Rows, vector: NDArray[np.float32]) -> NDArray[np.float32]:
        """The ``factors · vector`` of the items ``rows`` (a fresh array)."""
        if not self.split:
            return gathered_products(self.item_factors, rows, vector)
        return self.scores(vector)[rows]

    def scores_many(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        """Vectors x items: ``vectors @ item_factorsᵀ``."""
        if not self.split:
            # A transposed view: BLAS multiplies by it without copying the shared factors (a
            # copy would cost each worker the whole matrix, 256 MB at a million items).
            return vectors @ np.asarray(self.item_factors).T  # type: ignore[no-any-return]
        out: NDArray[np.float32] = vectors[:, self._dense_columns] @ self._dense.T
        if len(self._values):
            terms = vectors[:, self._columns] * self._values
            out[:, self._items] += np.add.reduceat(terms, self._starts, axis=1)
        return out
