"""Popularity baselines: all-time and recent (decayed) weighted popularity as a 1-column model."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from training import matrix
from training.models.base import Data, Fitted, merged, timed

POPULARITY_DEFAULTS: dict[str, Any] = {"half_life_days": 0.0}
RECENT_DEFAULTS: dict[str, Any] = {"half_life_days": 7.0}


def popularity_scores(data: Data, half_life_days: float) -> np.ndarray:
    """``log1p`` of each item's weighted popularity, decayed with ``half_life_days`` (0: none)."""
    weights = msgspec.structs.replace(data.weights, half_life_days=float(half_life_days))
    pop = matrix.popularity(data.events, data.interactions, weights, end=data.end)["all"]
    return np.log1p(pop).astype(np.float32)


def _fit(name: str, data: Data, params: dict[str, Any]) -> Fitted:
    seconds: list[float] = []
    with timed(seconds):
        scores = popularity_scores(data, params["half_life_days"])
    users = np.ones((data.shape[0], 1), dtype=np.float32)
    return Fitted(name, users, scores[:, None], params, seconds[0])


def fit_popularity(data: Data, params: dict[str, Any]) -> Fitted:
    """The same list for everyone: items by all-time weighted popularity."""
    return _fit("popularity", data, merged(POPULARITY_DEFAULTS, params))


def fit_recent_popularity(data: Data, params: dict[str, Any]) -> Fitted:
    """Items by popularity with a short half-life: what sells now."""
    return _fit("recent_popularity", data, merged(RECENT_DEFAULTS, params))
