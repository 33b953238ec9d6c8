"""Folding events into a customer vector at request time (implicit's ``recalculate_user``).

Pure numpy. Training imports it too, to measure cold-start customers offline with the same math
the service uses online.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from service.artifact import FoldIn


def gramian(item_factors: NDArray[np.float32], block: int = 65_536) -> NDArray[np.float64]:
    """``YᵀY``, computed once per model version (a ``dim x dim`` matrix).

    Summed over blocks of ``block`` items in float64: a float64 copy of a million 64-factor
    items at once would cost 512 MiB in every worker that loads the model.
    """
    dim = item_factors.shape[1]
    gram = np.zeros((dim, dim), dtype=np.float64)
    for start in range(0, len(item_factors), block):
        y = np.asarray(item_factors[start : start + block], dtype=np.float64)
        gram += y.T @ y
    return gram


def event_weight(params: FoldIn, event_type: str, channel: str, age_days: float) -> float:
    """One event's weight, as training computed it: type x channel x half-life decay."""
    w = params.event_weights.get(event_type, 0.0) * params.channel_weights.get(channel, 1.0)
    if params.half_life_days > 0:
        w *= 0.5 ** (max(age_days, 0.0) / params.half_life_days)
    return w


def confidences(
    params: FoldIn, rows: Sequence[int], weights: Sequence[float]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Sum the weights per item and apply the transform: the customer's row of the matrix."""
    if not len(rows):
        return np.empty(0, np.int64), np.empty(0, np.float64)
    unique, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    summed = np.bincount(inverse, weights=np.asarray(weights, dtype=np.float64))
    keep = summed > 0
    values = np.log1p(summed[keep]) if params.transform == "log1p" else summed[keep]
    return unique[keep], values


def recalculate_user(
    item_factors: NDArray[np.float32],
    gram: NDArray[np.float64],
    rows: NDArray[np.int64],
    values: NDArray[np.float64],
    params: FoldIn,
) -> NDArray[np.float32]:
    """The least-squares customer vector for matrix row ``values`` at item ``rows``.

    Solves ``(YᵀY + λI + Σ (cᵢ - 1) yᵢyᵢᵀ) x = Σ cᵢ yᵢ`` with ``cᵢ = alpha * valueᵢ``, as
    implicit's ALS does for one user; a customer with no rows gets the zero vector.
    """
    dim = item_factors.shape[1]
    if len(rows) == 0:
        return np.zeros(dim, dtype=np.float32)
    y = np.asarray(item_factors[rows], dtype=np.float64)
    c = params.alpha * np.asarray(values, dtype=np.float64)
    a = gram + params.regularization * np.eye(dim) + (y.T * (c - 1.0)) @ y
    b = y.T @ c
    return np.linalg.solve(a, b).astype(np.float32)


def age_in_days(when: datetime, now: datetime) -> float:
    """Days from ``when`` to ``now`` (0 for events in the future)."""
    return max((now - when).total_seconds() / 86_400.0, 0.0)
