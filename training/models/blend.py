"""A blend of models as one factor model: normalised parts side by side, weighted in the user part.

Each part's scores are scaled per customer to unit standard deviation over the catalogue, which
is a per-customer factor (``σ_u = sqrt(uᵀ Cov(Y) u)``), so a blend of CF scores with popularity
and recency priors, ``Σ_m w_m s_m(u, i) / σ_m(u)``, is still one dot product: item factors are
the parts' item factors concatenated, the user vector the parts' scaled user vectors. A part
served as a sparse item-item component (EASE's ``neighbours`` export) joins as that component,
scaled per customer at scoring time (the service does the same), instead of as factor columns.
A blend holds at most one such part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from training.config import SIGNED_PARTS
from training.evaluate import best_per_row
from training.models.base import Array, Fitted


def normalised(part: Fitted) -> Fitted:
    """``part`` with each customer's scores scaled to unit standard deviation over items."""
    if part.neighbours is not None:
        # Only the sparse component scores (the user factors are 0): scaled when scored.
        return dataclasses.replace(
            part, neighbours=dataclasses.replace(part.neighbours, normalise=True), exact=None
        )
    items = part.item_factors.astype(np.float64)
    centred = items - items.mean(axis=0)
    cov = centred.T @ centred / max(len(items), 1)
    users = part.user_factors.astype(np.float64)
    sigma = np.sqrt(np.maximum(((users @ cov) * users).sum(axis=1), 0.0))
    scale = np.where(sigma > 1e-12, 1.0 / np.where(sigma > 1e-12, sigma, 1.0), 0.0)
    return dataclasses.replace(
        part, user_factors=(users * scale[:, None]).astype(np.float32), exact=None
    )


def blend(parts: Mapping[str, Fitted], weights: Mapping[str, float]) -> Fitted:
    """The weighted blend of already ``normalised`` parts (parts with weight 0 are left out).

    Only ``SIGNED_PARTS`` may have a negative weight, and only beside a positive one.
    """
    used = [name for name in parts if weights.get(name, 0.0) != 0]
    if not any(weights[n] > 0 for n in used):
        raise ValueError("a blend needs at least one part with a positive weight")
    if negative := sorted(n for n in used if weights[n] < 0 and n not in SIGNED_PARTS):
        raise ValueError(f"only {sorted(SIGNED_PARTS)} may have negative weights, not {negative}")
    sparse = [n for n in used if parts[n].neighbours is not None]
    if len(sparse) > 1:
        raise ValueError(f"a blend holds at most one neighbours part, got {sparse}")
    dense = [n for n in used if parts[n].neighbours is None]
    n_users, n_items = len(parts[used[0]].user_factors), len(parts[used[0]].item_factors)
    # At least one column, so a blend of the sparse part alone is still a factor model.
    users: list[Array] = [np.zeros((n_users, 1), np.float32)] if not dense else []
    items: list[Array] = [np.zeros((n_items, 1), np.float32)] if not dense else []
    users += [parts[n].user_factors * np.float32(weights[n]) for n in dense]
    items += [parts[n].item_factors for n in dense]
    neighbours = None
    for n in sparse:
        component = parts[n].neighbours
        assert component is not None
        neighbours = dataclasses.replace(component, weight=component.weight * float(weights[n]))
    params = {
        "weights": {n: float(weights[n]) for n in used},
        "parts": {n: parts[n].params for n in used},
    }
    cold = None
    if any(parts[n].cold_items is not None for n in dense):
        cold = partial(_cold_items, [parts[n] for n in dense], 0 if dense else 1)
    return Fitted(
        "blend",
        np.ascontiguousarray(np.hstack(users), dtype=np.float32),
        np.ascontiguousarray(np.hstack(items), dtype=np.float32),
        params,
        sum(parts[n].fit_s for n in used),
        neighbours=neighbours,
        cold_items=cold,
    )


def _cold_items(parts: list[Fitted], pad: int, attributes: sp.csr_matrix) -> Array:
    """New items' rows of the blend's item factors: each part's own, 0 where it cannot score."""
    n = attributes.shape[0]
    blocks = [np.zeros((n, pad), np.float32)]
    for part in parts:
        if part.cold_items is None:
            blocks.append(np.zeros((n, part.item_factors.shape[1]), np.float32))
        else:
            blocks.append(np.asarray(part.cold_items(attributes), dtype=np.float32))
    return np.ascontiguousarray(np.hstack(blocks), dtype=np.float32)


def random_weights(names: list[str], rng: np.random.Generator) -> dict[str, float]:
    """A random point of the blend's weight space: log-uniform weights, some parts switched off."""
    weights = {n: float(np.exp(rng.uniform(np.log(0.05), np.log(2.0)))) for n in names}
    for n in names:
        if rng.random() < 0.2:
            weights[n] = 0.0
    if not any(weights.values()):
        weights[names[int(rng.integers(len(names)))]] = 1.0
    return weights


class Shortlist:
    """Each part's scores on a shortlist of items per customer, for a fast search of the weights.

    The shortlist of a customer is the union of every part's ``depth`` best items (bought items
    excluded); a blend with positive weights ranks its top k from these in practice, so each
    weight draw costs a small weighted sum instead of scoring the whole catalogue.
    """

    def __init__(
        self,
        parts: Mapping[str, Fitted],
        rows: NDArray[np.int64],
        bought: sp.csr_matrix,
        depth: int = 100,
        batch: int = 256,
    ) -> None:
        """Score ``rows`` with every (normalised) part and keep the shortlists."""
        self.names = list(parts)
        items: list[NDArray[np.int64]] = []
        scores: list[NDArray[np.float32]] = []
        for start in range(0, len(rows), batch):
            block = rows[start : start + batch]
            full = [parts[n].scores(block) for n in self.names]
            seen = bought[block]
            r, c = seen.nonzero()
            for s in full:
                s[r, c] = -np.inf
            depth_ = min(depth, full[0].shape[1] - 1)
            tops = [best_per_row(s, depth_, ordered=False) for s in full]
            for u in range(len(block)):
                union = np.unique(np.concatenate([t[u] for t in tops]))
                items.append(union)
                scores.append(np.stack([s[u, union] for s in full]))
        self.items = items
        self.scores = scores

    def rankings(self, weights: Mapping[str, float], k: int) -> list[list[int]]:
        """Top ``k`` items per customer of the blend with ``weights``."""
        w = np.array([weights.get(n, 0.0) for n in self.names], dtype=np.float32)
        out = []
        for items, scores in zip(self.items, self.scores, strict=True):
            blended = w @ np.where(np.isfinite(scores), scores, np.float32(-1e30))
            out.append(items[np.argsort(-blended, kind="stable")[:k]].tolist())
        return out
