"""Matrix factorisation with implicit: ALS and BPR (BPR's item bias is already a factor column)."""

from __future__ import annotations

from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from training.models.base import Data, Fitted, finite, merged, timed

ALS_DEFAULTS: dict[str, Any] = {
    "factors": 64,
    "regularization": 0.05,
    "alpha": 2.0,
    "iterations": 15,
}
BPR_DEFAULTS: dict[str, Any] = {
    "factors": 64,
    "learning_rate": 0.05,
    "regularization": 0.01,
    "iterations": 100,
}


def fit_als(data: Data, params: dict[str, Any]) -> Fitted:
    """implicit's AlternatingLeastSquares on the confidence matrix."""
    from implicit.als import AlternatingLeastSquares

    p = merged(ALS_DEFAULTS, params)
    seconds: list[float] = []
    # implicit parallelises itself; a multi-threaded BLAS underneath only oversubscribes.
    with timed(seconds), threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(
            factors=int(p["factors"]),
            regularization=float(p["regularization"]),
            alpha=float(p["alpha"]),
            iterations=int(p["iterations"]),
            use_gpu=False,
            random_state=data.seed,
        )
        model.fit(data.interactions.matrix.astype(np.float32).tocsr(), show_progress=False)
    users = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    items = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    finite("als", users, items)
    return Fitted("als", users, items, p, seconds[0])


def fit_bpr(data: Data, params: dict[str, Any]) -> Fitted:
    """implicit's BayesianPersonalizedRanking; its last item column is the bias (user column 1)."""
    from implicit.bpr import BayesianPersonalizedRanking

    p = merged(BPR_DEFAULTS, params)
    seconds: list[float] = []
    with timed(seconds), threadpool_limits(limits=1, user_api="blas"):
        model = BayesianPersonalizedRanking(
            factors=int(p["factors"]),
            learning_rate=float(p["learning_rate"]),
            regularization=float(p["regularization"]),
            iterations=int(p["iterations"]),
            use_gpu=False,
            random_state=data.seed,
        )
        binary = data.interactions.matrix.astype(np.float32).tocsr()
        binary.data[:] = 1.0
        model.fit(binary, show_progress=False)
    users = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    items = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    finite("bpr", users, items)
    return Fitted("bpr", users, items, p, seconds[0])
