"""Non-collaborative models: all-time and recent popularity, adoption, and content affinity."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec
import numpy as np
import scipy.sparse as sp

from training import matrix
from training.models.base import Data, Fitted, merged, timed

POPULARITY_DEFAULTS: dict[str, Any] = {"half_life_days": 0.0}
RECENT_DEFAULTS: dict[str, Any] = {"half_life_days": 7.0}
ADOPTION_DEFAULTS: dict[str, Any] = {"half_life_days": 14.0, "settle_days": 7.0}


def popularity_scores(data: Data, half_life_days: float) -> np.ndarray:
    """``log1p`` of each item's weighted popularity, decayed with ``half_life_days`` (0: none)."""
    weights = msgspec.structs.replace(data.weights, half_life_days=float(half_life_days))
    pop = matrix.popularity(data.events, data.interactions, weights, end=data.end)["all"]
    return np.log1p(pop).astype(np.float32)


def adoption_scores(data: Data, half_life_days: float, settle_days: float) -> np.ndarray:
    """``log1p`` of each item's recent adoptions: settled customers buying it for the first time."""
    found = matrix.adoptions(
        data.events,
        data.interactions,
        end=data.end,
        half_life_days=float(half_life_days),
        settle_days=float(settle_days),
        min_rating=data.weights.relevant_rating,
    )
    return np.log1p(found).astype(np.float32)


def _fit(
    name: str, data: Data, params: dict[str, Any], item_scores: Callable[[], np.ndarray]
) -> Fitted:
    seconds: list[float] = []
    with timed(seconds):
        scores = item_scores()
    users = np.ones((data.shape[0], 1), dtype=np.float32)
    return Fitted(name, users, scores[:, None], params, seconds[0])


def fit_popularity(data: Data, params: dict[str, Any]) -> Fitted:
    """The same list for everyone: items by all-time weighted popularity."""
    p = merged(POPULARITY_DEFAULTS, params)
    return _fit("popularity", data, p, lambda: popularity_scores(data, p["half_life_days"]))


def fit_recent_popularity(data: Data, params: dict[str, Any]) -> Fitted:
    """Items by popularity with a short half-life: what sells now."""
    p = merged(RECENT_DEFAULTS, params)
    return _fit("recent_popularity", data, p, lambda: popularity_scores(data, p["half_life_days"]))


def fit_adoption(data: Data, params: dict[str, Any]) -> Fitted:
    """Items by recent adoption: how many settled customers bought them for the first time.

    Production never recommends what a customer already bought, so the question is what they will
    buy *new*. Popularity counts repeat purchases (a staple everyone buys weekly tops it), and the
    staples a customer lacks are rarely what they take up next; adoption counts only first
    purchases, so it ranks what customers are taking up now: launches, the season, a trend.
    """
    p = merged(ADOPTION_DEFAULTS, params)
    return _fit(
        "adoption",
        data,
        p,
        lambda: adoption_scores(data, p["half_life_days"], p["settle_days"]),
    )


ATTRIBUTES_DEFAULTS: dict[str, Any] = {"rank": 32}


def fit_attributes(data: Data, params: dict[str, Any]) -> Fitted:
    """Content affinity: the share of a customer's history in each category, brand, price band.

    User vector = the customer's confidences over items times the item attribute one-hots,
    normalised to sum 1; item factors = the one-hots, projected on their top ``rank`` principal
    directions when there are more attributes. With no attributes it scores 0 everywhere.
    """
    p = merged(ATTRIBUTES_DEFAULTS, params)
    seconds: list[float] = []
    with timed(seconds):
        attributes = data.item_attributes
        if attributes is None or attributes.shape[1] == 0:
            attributes = sp.csr_matrix((data.shape[1], 1), dtype=np.float32)
        profile = np.asarray((data.interactions.matrix @ attributes).todense(), dtype=np.float32)
        totals = profile.sum(axis=1, keepdims=True)
        users = profile / np.where(totals > 0, totals, 1.0)
        top = None
        if attributes.shape[1] > p["rank"]:
            _, vectors = np.linalg.eigh((attributes.T @ attributes).toarray().astype(np.float64))
            top = vectors[:, -int(p["rank"]) :].astype(np.float32)
            users = users @ top
        items = _project(top, attributes)
    return Fitted(
        "attributes", users.astype(np.float32), items, p, seconds[0], cold_items=partial(_project, top)
    )


def _project(top: np.ndarray | None, attributes: sp.csr_matrix) -> np.ndarray:
    """Item factors of items with these attribute one-hots (new items too)."""
    if top is None:
        return np.asarray(attributes.todense(), dtype=np.float32)
    return np.asarray(attributes @ top, dtype=np.float32)
