"""Fitting models on the confidence matrix; returns plain float32 factor arrays."""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from training.config import AlsParams

log = logging.getLogger(__name__)

Factors = tuple[NDArray[np.float32], NDArray[np.float32]]


class ModelFitError(Exception):
    """The fit produced unusable factors (NaN), as implicit's ModelFitError."""


def fit_als(
    matrix: sp.csr_matrix, params: AlsParams, *, seed: int, progress: bool = False
) -> Factors:
    """Fit implicit's ALS on a customers x items confidence matrix.

    Returns:
        (user_factors [customers, factors], item_factors [items, factors]), float32, on the CPU.

    Raises:
        ModelFitError: the factors hold NaN or infinite values.
    """
    # Imported here so that importing training stays light (and the CLI's --help fast).
    from implicit.als import AlternatingLeastSquares

    started = time.perf_counter()
    # implicit parallelises itself; a multi-threaded BLAS underneath only oversubscribes the cores
    # (implicit checks this when the model is built, so build it inside the limit too).
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            use_gpu=params.use_gpu,
            random_state=seed,
        )
        model.fit(matrix.astype(np.float32).tocsr(), show_progress=progress)
    if params.use_gpu:
        model = model.to_cpu()
    users = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    items = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    if not (np.isfinite(users).all() and np.isfinite(items).all()):
        raise ModelFitError(
            "NaN or infinite values in the ALS factors; lower alpha or raise regularization"
        )
    log.info(
        "ALS fitted: %d customers x %d items, %d factors, %.1fs",
        users.shape[0],
        items.shape[0],
        params.factors,
        time.perf_counter() - started,
    )
    return users, items
