"""A blend of models as one factor model: normalised parts side by side, weighted in the user part.

Each part's scores are scaled per customer to unit standard deviation over the catalogue, which
is a per-customer factor (``σ_u = sqrt(uᵀ Cov(Y) u)``), so a blend of CF scores with popularity
and recency priors, ``Σ_m w_m s_m(u, i) / σ_m(u)``, is still one dot product: item factors are
the parts' item factors concatenated, the user vector the parts' scaled user vectors.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from training.models.base import Array, Fitted


def normalised(part: Fitted) -> Fitted:
    """``part`` with each customer's scores scaled to unit standard deviation over items."""
    items = part.item_factors.astype(np.float64)
    centred = items - items.mean(axis=0)
    cov = centred.T @ centred / max(len(items), 1)
    users = part.user_factors.astype(np.float64)
    sigma = np.sqrt(np.maximum(np.einsum("ud,de,ue->u", users, cov, users), 0.0))
    scale = np.where(sigma > 1e-12, 1.0 / np.where(sigma > 1e-12, sigma, 1.0), 0.0)
    return Fitted(
        part.name,
        (users * scale[:, None]).astype(np.float32),
        part.item_factors,
        part.params,
        part.fit_s,
    )


def blend(parts: Mapping[str, Fitted], weights: Mapping[str, float]) -> Fitted:
    """The weighted blend of already ``normalised`` parts (parts with weight 0 are left out)."""
    used = [name for name in parts if weights.get(name, 0.0) > 0]
    if not used:
        raise ValueError("a blend needs at least one part with a positive weight")
    users: list[Array] = [parts[n].user_factors * np.float32(weights[n]) for n in used]
    items: list[Array] = [parts[n].item_factors for n in used]
    params = {
        "weights": {n: float(weights[n]) for n in used},
        "parts": {n: parts[n].params for n in used},
    }
    return Fitted(
        "blend",
        np.ascontiguousarray(np.hstack(users), dtype=np.float32),
        np.ascontiguousarray(np.hstack(items), dtype=np.float32),
        params,
        sum(parts[n].fit_s for n in used),
    )


def random_weights(names: list[str], rng: np.random.Generator) -> dict[str, float]:
    """A random point of the blend's weight space: log-uniform weights, some parts switched off."""
    weights = {n: float(np.exp(rng.uniform(np.log(0.05), np.log(2.0)))) for n in names}
    for n in names:
        if rng.random() < 0.2:
            weights[n] = 0.0
    if not any(weights.values()):
        weights[names[int(rng.integers(len(names)))]] = 1.0
    return weights
