"""What every model family is fitted on and what it returns: plain float32 factor arrays."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from numpy.typing import NDArray

from service import neighbours as served_neighbours
from service.neighbours import normaliser
from training.config import Weights
from training.matrix import Interactions

Array = NDArray[np.float32]


@dataclass(frozen=True)
class Data:
    """One training period: its events, confidence matrix, purchases and side information.

    Attributes:
        events: the period's events (loaders' normalised schema).
        interactions: customers x items confidences built from ``events`` with ``weights``.
        excluded: customers x items, 1 where production would not show the item at the period's
            end: the customer bought (or rated) it, or has it in the cart.
        end: the end of the period; time decay is measured back from here.
        item_features: items x features (identity, category, brand, price band), or None.
        user_features: customers x features (identity, channel mix), or None.
        item_attributes: items x attribute one-hots (category, brand, price band), or None.
        cold_item_ids, cold_attributes: catalogue items without events and their one-hots.
    """

    events: pa.Table
    interactions: Interactions
    excluded: sp.csr_matrix
    end: datetime
    weights: Weights
    item_features: sp.csr_matrix | None = None
    user_features: sp.csr_matrix | None = None
    item_attributes: sp.csr_matrix | None = None
    seed: int = 42
    # Catalogue items without events (the items file's), and their attribute one-hots in the
    # columns of ``item_attributes``: exported with vectors from their features where a model can.
    cold_item_ids: tuple[str, ...] = ()
    cold_attributes: sp.csr_matrix | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(customers, items)."""
        return self.interactions.shape


@dataclass(frozen=True)
class Neighbours:
    """A sparse item-item component, scored as the service scores it (``service/neighbours.py``).

    ``weight · (history[u] @ similarity) / σ_u`` where ``σ_u`` (only with ``normalise``) is the
    standard deviation of ``history[u] @ similarity`` over the catalogue. ``history`` is the
    training matrix (values after the transform), which the artifact ships as ``user_items``.
    """

    similarity: sp.csr_matrix  # items x items: row = history item, column = item scored
    history: sp.csr_matrix  # customers x items
    weight: float = 1.0
    normalise: bool = False
    part: str = ""

    def scores(self, rows: NDArray[np.int64]) -> Array:
        """The component's scores of customers ``rows`` for every item, ``[len(rows), items]``."""
        raw = (self.history[rows].astype(np.float64) @ self.similarity).toarray()
        if not self.normalise:
            return (raw * self.weight).astype(np.float32)
        n = raw.shape[1]
        # Row sums over the whole block, and scaled in place: a batch of 512 customers over
        # 60,000 items is 245 MB of float64, copied once more per row and per product before.
        totals, squares = raw.sum(axis=1).tolist(), (raw * raw).sum(axis=1).tolist()
        scale = np.array(
            [normaliser(t, q, n, self.weight) for t, q in zip(totals, squares, strict=True)]
        )
        raw *= scale[:, None]
        return raw.astype(np.float32)

    def spec(self) -> served_neighbours.NeighboursSpec:
        """The manifest's description of this component."""
        return served_neighbours.NeighboursSpec(
            weight=self.weight, normalise=self.normalise, part=self.part
        )

    def csr(self) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
        """``similarity`` as the artifact's CSR arrays ``(indptr, indices, weights)``."""
        s = self.similarity.tocsr()
        return s.indptr.astype(np.int64), s.indices.astype(np.int32), s.data.astype(np.float32)

    def served(self) -> served_neighbours.Neighbours:
        """The service's scorer over the same arrays (for new customers' events)."""
        indptr, indices, weights = self.csr()
        arrays = {
            "neighbours_indptr": indptr,
            "neighbours_indices": indices,
            "neighbours_weights": weights,
        }
        return served_neighbours.Neighbours(arrays, self.spec())


@dataclass(frozen=True)
class Fitted:
    """A fitted model in the artifact's form: ``scores = user_factors[u] @ item_factors.T``.

    With ``neighbours``, the sparse item-item component's scores are added (the artifact ships it
    beside the factors).
    """

    name: str
    user_factors: Array
    item_factors: Array
    params: dict[str, Any] = field(default_factory=dict)
    fit_s: float = 0.0
    # The model's own scores before export, when the factors approximate them (EASE, item-item).
    exact: Callable[[NDArray[np.int64]], Array] | None = None
    neighbours: Neighbours | None = None
    # Item factor rows of new items from their attribute one-hots (``Data.cold_attributes``), for
    # models that can score an item from its features alone (LightFM, content affinity).
    cold_items: Callable[[sp.csr_matrix], Array] | None = None

    def scores(self, rows: NDArray[np.int64]) -> Array:
        """Scores of customers ``rows`` for every item, ``[len(rows), items]``."""
        scores = self.user_factors[rows] @ self.item_factors.T
        if self.neighbours is not None:
            scores += self.neighbours.scores(rows)
        return scores


def merged(defaults: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` overridden by ``params``; an unknown key is an error naming it."""
    if unknown := set(params) - set(defaults):
        raise ValueError(f"unknown model parameter(s) {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **params}


@contextmanager
def timed(out: list[float]) -> Iterator[None]:
    """Append the seconds the block took to ``out``."""
    started = time.perf_counter()
    yield
    out.append(time.perf_counter() - started)


def finite(name: str, *arrays: Array) -> None:
    """Raise ValueError when a fit produced NaN or infinite factors."""
    for a in arrays:
        if not np.isfinite(a).all():
            raise ValueError(f"{name}: NaN or infinite values in the factors")


def low_rank(
    apply: Callable[[Array], Array],
    apply_t: Callable[[Array], Array],
    n: int,
    rank: int,
    seed: int,
    power_iterations: int = 3,
) -> tuple[Array, Array]:
    """Randomised SVD of an ``n x n`` operator ``B``: returns ``(L, R)`` with ``B ≈ L @ R.T``.

    Args:
        apply: ``X -> B @ X``; apply_t: ``X -> B.T @ X``.
        rank: the number of columns of ``L`` and ``R`` (at most ``n``).
    """
    rank = min(rank, n)
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(apply(rng.standard_normal((n, min(rank + 10, n))).astype(np.float32)))[0]
    for _ in range(power_iterations):
        q = np.linalg.qr(apply_t(q))[0]
        q = np.linalg.qr(apply(q))[0]
    small = apply_t(q).T  # (q.T @ B), rank+10 x n
    u, s, vt = np.linalg.svd(small, full_matrices=False)
    left = (q @ u[:, :rank]) * s[:rank]
    return left.astype(np.float32), np.ascontiguousarray(vt[:rank].T, dtype=np.float32)
