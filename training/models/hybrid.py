"""LightFM as a hybrid: item features (category, brand, price band) and customer features.

A LightFM score is ``u·i + b_i (+ b_u)``; the item bias becomes an extra factor column whose user
column is 1 (the user bias shifts every item alike and is left out). Item vectors are the sums of
their feature embeddings, so a new item with features gets a vector from them alone
(``Fitted.cold_items``; the artifact exports catalogue items without events that way).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any

import numpy as np
import scipy.sparse as sp

from training.models.base import Data, Fitted, finite, merged, timed

LIGHTFM_DEFAULTS: dict[str, Any] = {
    "loss": "warp",
    "components": 64,
    "learning_rate": 0.05,
    "item_alpha": 1e-6,
    "user_alpha": 1e-6,
    "epochs": 15,
    "max_sampled": 30,
    "features": True,
}


def fit_lightfm(data: Data, params: dict[str, Any]) -> Fitted:
    """LightFM (``loss`` ``warp`` or ``bpr``) with the data's item and customer features."""
    p = merged(LIGHTFM_DEFAULTS, params)
    seconds: list[float] = []
    with timed(seconds), warnings.catch_warnings():
        # rectools-lightfm warns once when built without OpenMP; we run it single-threaded anyway.
        warnings.filterwarnings("ignore", message=".*OpenMP.*", category=UserWarning)
        from lightfm import LightFM

        model = LightFM(
            no_components=int(p["components"]),
            loss=str(p["loss"]),
            learning_rate=float(p["learning_rate"]),
            item_alpha=float(p["item_alpha"]),
            user_alpha=float(p["user_alpha"]),
            max_sampled=int(p["max_sampled"]),
            random_state=data.seed,
        )
        interactions = data.interactions.matrix.tocoo()
        binary = sp.coo_matrix(
            (np.ones(interactions.nnz, np.float32), (interactions.row, interactions.col)),
            shape=interactions.shape,
        )
        item_features = data.item_features if p["features"] else None
        user_features = data.user_features if p["features"] else None
        model.fit(
            binary,
            item_features=item_features,
            user_features=user_features,
            epochs=int(p["epochs"]),
            num_threads=1,
        )
        item_bias, item_vectors = model.get_item_representations(item_features)
        _, user_vectors = model.get_user_representations(user_features)
    items = np.hstack([item_vectors, item_bias[:, None]]).astype(np.float32)
    users = np.hstack([user_vectors, np.ones((len(user_vectors), 1))]).astype(np.float32)
    finite("lightfm", users, items)
    cold = None
    if item_features is not None:
        # Feature rows after the identity block: a new item is the sum of its features' vectors.
        embeddings = np.hstack([model.item_embeddings, model.item_biases[:, None]])[data.shape[1] :]
        cold = partial(_from_features, embeddings.astype(np.float32))
    return Fitted("lightfm", users, items, p, seconds[0], cold_items=cold)


def _from_features(embeddings: np.ndarray, attributes: sp.csr_matrix) -> np.ndarray:
    """Vectors of new items from their attribute one-hots, normalised as LightFM's features."""
    return np.asarray(_normalise_rows(attributes) @ embeddings, dtype=np.float32)


def attribute_matrix(
    categories: list[str | None],
    brands: list[str | None],
    prices: list[float | None],
    *,
    like: tuple[list[str | None], list[str | None], list[float | None]] | None = None,
) -> sp.csr_matrix:
    """Items x (category + brand + price quintile) one-hots.

    With ``like`` (the training items' categories, brands and prices), the columns and price bands
    are those of the training items, so new items are encoded in the model's own vocabulary
    (values the training items lack get no column).
    """
    basis = like or (categories, brands, prices)
    edges = _price_edges(basis[2])
    bands = [_price_bands(basis[2], edges), _price_bands(prices, edges)]
    blocks = [
        _one_hot(values, names=sorted({v for v in known if v}))
        for values, known in ((categories, basis[0]), (brands, basis[1]), (bands[1], bands[0]))
    ]
    return sp.hstack(blocks).tocsr().astype(np.float32)


def item_feature_matrix(attributes: sp.csr_matrix) -> sp.csr_matrix:
    """Items x (identity + attributes), rows normalised to 1: LightFM's item features."""
    n = attributes.shape[0]
    identity = sp.identity(n, dtype=np.float32, format="csr")
    return _normalise_rows(sp.hstack([identity, attributes]).tocsr())


def user_feature_matrix(channel_share: np.ndarray, attributes: sp.csr_matrix) -> sp.csr_matrix:
    """Customers x (identity + share of events per channel + attribute one-hots), rows sum 1."""
    n = channel_share.shape[0]
    blocks = [
        sp.identity(n, dtype=np.float32, format="csr"),
        sp.csr_matrix(channel_share),
        attributes,
    ]
    return _normalise_rows(sp.hstack(blocks).tocsr())


def _price_edges(prices: list[float | None]) -> np.ndarray | None:
    known = np.array([p for p in prices if p is not None and p > 0], dtype=np.float64)
    return np.quantile(known, [0.2, 0.4, 0.6, 0.8]) if len(known) >= 5 else None


def _price_bands(prices: list[float | None], edges: np.ndarray | None) -> list[str | None]:
    if edges is None:
        return [None] * len(prices)
    return [
        None if p is None or p <= 0 else f"band{int(np.searchsorted(edges, p))}" for p in prices
    ]


def _one_hot(values: list[str | None], names: list[str]) -> sp.csr_matrix:
    code = {v: i for i, v in enumerate(names)}
    rows = [r for r, v in enumerate(values) if v in code]
    cols = [code[v] for v in values if v in code]
    return sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(values), len(names))
    )


def _normalise_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(m.sum(axis=1)).ravel()
    return (sp.diags(1.0 / np.where(sums > 0, sums, 1.0)) @ m).astype(np.float32).tocsr()
