"""Each item's most similar items, computed once at training time and shipped.

Why a table and not the index: k-means over raw factors puts the many low-norm (rarely bought)
items of real data near the origin, in clusters whose centroid says little about their
direction, so the IVF index finds cosine neighbours poorly: recall@10 0.757 on completejourney's
68,509 ALS items at ``nprobe_similar`` 12, 0.928 at 96 (``python -m benchmarks.ann_recall``;
tied neighbours count). Scoring the catalogue exactly per request costs a pass over every item.
The table holds each item's best ``SIMILAR_KEPT`` items, exact, for 8 bytes per neighbour;
training builds it for catalogues of up to ``TrainConfig.similar_table_max_items`` items (the
work grows with the square of the catalogue).

The table is two arrays in the artifact, memory-mapped and shared by every worker like the others:
row ``i`` of ``similar_rows`` lists item rows best first (never ``i`` itself), with their scores in
``similar_scores``. ``build_similar`` finds each item's nearest by cosine of the factors,
exactly (what ``FactorModel.similar_items`` computes without a table); training ships items the
same customers took first, then those (``training/similar.py``), which led to more of what
customers took next on every data set measured.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

# The table's arrays in an artifact: name -> (dtype kind, number of dimensions).
SIMILAR_ARRAYS: dict[str, tuple[str, int]] = {
    "similar_rows": ("i", 2),  # int32 [n_items, width]: neighbours' item rows, best first
    "similar_scores": ("f", 2),  # float32 [n_items, width]: their cosine with the item
}
# Neighbours kept per item: answers for k up to this come from the table, also after filters
# drop some of them.
SIMILAR_KEPT = 64
# Training's default largest catalogue for a table (TrainConfig.similar_table_max_items). Its
# factor part grows with the items needing factor neighbours times the catalogue: every item's,
# on 2 cores, took 16.8 s at 68,509 items and 127 s at 200,000; completejourney's shipped table,
# where most items have co-interaction neighbours, 22.7 s.
DEFAULT_MAX_ITEMS = 200_000
# Columns per chunk when finding each row's best (see ``build_similar``).
_CHUNK = 64


def unit_rows(item_factors: NDArray[np.float32]) -> NDArray[np.float32]:
    """Each item's factors divided by their norm; an item without signal stays the zero vector."""
    norms = np.linalg.norm(item_factors, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    return np.ascontiguousarray(item_factors / safe[:, None], dtype=np.float32)


def build_similar(
    item_factors: NDArray[np.float32],
    kept: int = SIMILAR_KEPT,
    block_cells: int = 1 << 24,
    items: NDArray[np.int64] | None = None,
) -> dict[str, NDArray[Any]]:
    """The exact ``kept`` best items by cosine for every item (fewer when the catalogue is small).

    ``items``: only these items' lists, in this order (default: every item's, by row).

    Scores a block of items against the whole catalogue at a time (``block_cells`` scores,
    64 MiB). Finding a row's best among all ``n`` scores with ``argpartition`` costs more than the
    product itself; instead each row's scores are cut into chunks of 64 columns, and only the
    ``kept`` chunks with the largest maxima are searched. That is exact: the ``kept`` best scores
    are each at least the ``kept``-th largest chunk maximum (those chunks' maxima are ``kept``
    distinct scores), so every one of them lies in a chunk whose maximum is among the ``kept``
    largest (up to ties, where either choice is a right answer).
    """
    unit = unit_rows(item_factors)
    n = len(unit)
    queries = np.arange(n) if items is None else np.asarray(items, dtype=np.int64)
    width = max(0, min(kept, n - 1))
    rows_out = np.empty((len(queries), width), dtype=np.int32)
    scores_out = np.empty((len(queries), width), dtype=np.float32)
    if width == 0 or not len(queries):
        return {"similar_rows": rows_out, "similar_scores": scores_out}
    n_chunks = -(-n // _CHUNK)
    # Zero rows pad the catalogue to whole chunks; their columns are set to -inf below.
    padded = np.zeros((n_chunks * _CHUNK, unit.shape[1]), dtype=np.float32)
    padded[:n] = unit
    taken = min(width, n_chunks)
    offsets = np.arange(_CHUNK)
    step = max(1, block_cells // len(padded))
    for start in range(0, len(queries), step):
        stop = min(len(queries), start + step)
        block = queries[start:stop]
        scores = unit[block] @ padded.T
        scores[:, n:] = -np.inf
        scores[np.arange(stop - start), block] = -np.inf  # never the item itself
        maxima = scores.reshape(stop - start, n_chunks, _CHUNK).max(axis=2)
        chunks = np.argpartition(maxima, n_chunks - taken, axis=1)[:, n_chunks - taken :]
        columns = (chunks[:, :, None] * _CHUNK + offsets).reshape(stop - start, -1)
        candidates = np.take_along_axis(scores, columns, axis=1)
        best = np.argpartition(candidates, candidates.shape[1] - width, axis=1)[:, -width:]
        values = np.take_along_axis(candidates, best, axis=1)
        found = np.take_along_axis(columns, best, axis=1)
        # Best first; equal scores by item row, so the table does not depend on the chunking.
        order = np.lexsort((found, -values), axis=1)
        rows_out[start:stop] = np.take_along_axis(found, order, axis=1)
        scores_out[start:stop] = np.take_along_axis(values, order, axis=1)
    return {"similar_rows": rows_out, "similar_scores": scores_out}


def check_similar(arrays: Any, n_items: int) -> str | None:
    """What is wrong with an artifact's table arrays, or None (both absent is fine: no table)."""
    present = [name for name in SIMILAR_ARRAYS if name in arrays]
    if not present:
        return None
    if len(present) != len(SIMILAR_ARRAYS):
        return "the similar-items table needs both similar_rows and similar_scores"
    for name, (kind, ndim) in SIMILAR_ARRAYS.items():
        a = arrays[name]
        if a.dtype.kind != kind or a.ndim != ndim:
            return f"array {name!r} must be {ndim}-D of kind {kind!r}, got {a.dtype}"
    rows, scores = arrays["similar_rows"], arrays["similar_scores"]
    if rows.shape != scores.shape or len(rows) != n_items:
        return "similar_rows and similar_scores must have one row per item, of equal width"
    if rows.shape[1] > max(n_items - 1, 0):
        return "the similar-items table lists more neighbours than the catalogue has items"
    if rows.size and (rows.min() < 0 or rows.max() >= n_items):
        return "similar_rows holds item rows out of range"
    return None
