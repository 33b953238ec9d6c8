"""Item-item (cosine, BM25) and EASE: strong simple baselines, exported as factors or neighbours.

Both score ``history @ B`` with an items x items matrix ``B``. A catalogue of at most
``exact_items`` items (and with customers x items under ``EXACT_MAX_USER_ENTRIES``) is exported
exactly as factors (user vector = ``history @ B``, item factors = the identity). Larger ones are exported either as low-rank factors, ``B ≈ L Rᵀ`` (randomised
SVD; user vector = ``history @ L``, item factors = ``R``), or (EASE's default, ``export =
"neighbours"``) as the artifact's sparse item-item component: for each item, the ``neighbours``
history items with the largest ``|B|`` towards it, scored by the service as ``history @ S``
(``service/neighbours.py``). Its item factors are still ``R``, for item similarity; its user
factors are 0, so the score is the sparse part alone. The exact scores stay available
(``Fitted.exact``) to measure what the export costs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from training.models.base import Array, Data, Fitted, Neighbours, low_rank, merged, timed

ITEMKNN_DEFAULTS: dict[str, Any] = {
    "neighbours": 100,
    "similarity": "cosine",
    "max_items": 5000,
    "rank": 128,
    "exact_items": 2048,
}
EASE_DEFAULTS: dict[str, Any] = {
    # A number, or "auto": AUTO_L2_PER_MEAN_COUNT x the mean of the Gram matrix's diagonal.
    "l2": "auto",
    "max_items": 3000,
    "rank": 256,
    "exact_items": 2048,
    "export": "neighbours",
    "neighbours": 200,
}


# EASE's best l2 grows with the matrix's values (an item's summed squared confidences): on the
# validation periods of three real data sets it sat at 3.5 (completejourney), 7.6
# (uci-online-retail) and 4-15 (movielens-100k) times the diagonal's mean, where a fixed 200 was
# 0.7, 1.5 and 29 times it. A multiple of the mean keeps an untuned fit near the best.
AUTO_L2_PER_MEAN_COUNT = 5.0


def ease_l2(l2: float | str, gram_diagonal: np.ndarray) -> float:
    """The l2 to add to the Gram matrix's diagonal: ``l2`` itself, or the "auto" value for it."""
    if l2 == "auto":
        mean = float(np.mean(gram_diagonal)) if len(gram_diagonal) else 0.0
        return max(AUTO_L2_PER_MEAN_COUNT * mean, 1e-6)
    if isinstance(l2, str) or not l2 > 0:
        raise ValueError(f"ease l2 must be a positive number or 'auto', got {l2!r}")
    return float(l2)


def fit_itemknn(data: Data, params: dict[str, Any]) -> Fitted:
    """implicit's item-item neighbours (``cosine`` or ``bm25``) among the ``max_items`` most popular."""
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

    p = merged(ITEMKNN_DEFAULTS, params)
    x = data.interactions.matrix.astype(np.float32).tocsr()
    n = x.shape[1]
    seconds: list[float] = []
    with timed(seconds), threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        # implicit converts its own normalised copy of the matrix to CSR and warns about that.
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        kind = BM25Recommender if p["similarity"] == "bm25" else CosineRecommender
        model = kind(K=int(p["neighbours"]))
        top = _most_popular(x, int(p["max_items"]))
        xt = x[:, top]
        model.fit(xt, show_progress=False)
        b = model.similarity.astype(np.float32).tocsr()
        users, top_items = _export(xt, b, _rank(p, n, x.shape[0]), data.seed)
        items = np.zeros((n, users.shape[1]), dtype=np.float32)
        items[top] = top_items
    return Fitted("itemknn", users, items, p, seconds[0], exact=_exact(xt, b, top, n))


def fit_ease(data: Data, params: dict[str, Any]) -> Fitted:
    """EASE (Steck 2019) on the ``max_items`` most popular items: ``B = I - P/diag(P)``."""
    p = merged(EASE_DEFAULTS, params)
    x = data.interactions.matrix.astype(np.float32).tocsr()
    n = x.shape[1]
    seconds: list[float] = []
    with timed(seconds):
        top = _most_popular(x, int(p["max_items"]))
        xt = x[:, top]
        gram = (xt.T @ xt).toarray().astype(np.float64)
        p["l2"] = ease_l2(p["l2"], np.diag(gram))  # the value used, in the report
        gram[np.diag_indices_from(gram)] += p["l2"]
        inverse = np.linalg.inv(gram)
        b = (-inverse / np.diag(inverse)).astype(np.float32)
        b[np.diag_indices_from(b)] = 0.0
        users, top_items = _export(xt, b, _rank(p, n, x.shape[0]), data.seed)
        items = np.zeros((n, users.shape[1]), dtype=np.float32)
        items[top] = top_items
        neighbours = None
        if p["export"] == "neighbours" and _rank(p, n, x.shape[0]) < n:
            similarity = strongest_sources(b, top, n, int(p["neighbours"]))
            neighbours = Neighbours(similarity, x, part="ease")
            users = np.zeros_like(users)
    return Fitted(
        "ease", users, items, p, seconds[0], exact=_exact(xt, b, top, n), neighbours=neighbours
    )


def strongest_sources(b: Array, top: np.ndarray, n: int, per_item: int) -> sp.csr_matrix:
    """``b`` (over items ``top``) as an ``n x n`` CSR keeping, per column, the largest ``|b|``.

    Each scored item keeps the ``per_item`` history items that move its score most, so
    ``history @ S`` stays close to ``history @ B`` (truncating per column measured better than
    per row on completejourney's validation period: NDCG@10 0.0538 vs 0.0521 at 200).
    """
    m = b.shape[0]
    keep = min(per_item, m - 1)
    if keep <= 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    sources = np.argpartition(-np.abs(b), keep - 1, axis=0)[:keep, :]
    targets = np.broadcast_to(np.arange(m), sources.shape)
    values = b[sources, targets].ravel()
    rows, cols = top[sources.ravel()], top[targets.ravel()]
    nonzero = values != 0
    return sp.csr_matrix(
        (values[nonzero], (rows[nonzero], cols[nonzero])), shape=(n, n), dtype=np.float32
    )


# The most entries (customers x items) an exact export's user factors may have: 200 MB of
# float32. The exact export's user vectors are dense over the items (``history @ B``), so a
# catalogue of 2,000 items with a million customers would write 8 GB per part (and blending
# needs them in float64 besides); such data sets get the low-rank export.
EXACT_MAX_USER_ENTRIES = 50_000_000


def _rank(params: dict[str, Any], n_items: int, n_users: int) -> int:
    """The export's rank: exact (one column per item) for catalogues of ``exact_items`` or less,
    unless the customers' vectors would be too large (``EXACT_MAX_USER_ENTRIES``)."""
    exact = n_items <= int(params["exact_items"]) and n_users * n_items <= EXACT_MAX_USER_ENTRIES
    return n_items if exact else int(params["rank"])


def _most_popular(x: sp.csr_matrix, limit: int) -> np.ndarray:
    """Columns of the ``limit`` items with the most customers, in column order."""
    counts = np.asarray((x > 0).sum(axis=0)).ravel()
    return np.sort(np.argsort(-counts, kind="stable")[:limit])


def _exact(
    xt: sp.csr_matrix, b: Any, top: np.ndarray, n: int
) -> Callable[[np.ndarray], Array]:
    """The model's own scores ``history @ B`` (0 for items outside ``top``)."""

    def exact(rows: np.ndarray) -> Array:
        scores = np.zeros((len(rows), n), dtype=np.float32)
        scores[:, top] = _dense(xt[rows] @ b)
        return scores

    return exact


def _export(x: sp.csr_matrix, b: Any, rank: int, seed: int) -> tuple[Array, Array]:
    """User and item factors with ``x @ b ≈ users @ items.T``; exact when ``rank >= n``."""
    n = b.shape[0]
    if rank >= n:
        dense_b = b.toarray() if sp.issparse(b) else b
        return _dense(x @ dense_b), np.eye(n, dtype=np.float32)
    bt = b.T.tocsr() if sp.issparse(b) else b.T
    left, right = low_rank(lambda m: b @ m, lambda m: bt @ m, n, rank, seed)
    return _dense(x @ left), right


def _dense(m: Any) -> Array:
    return np.asarray(m.toarray() if sp.issparse(m) else m, dtype=np.float32)
