"""Folding events into a customer vector at request time (implicit's ``recalculate_user``).

Pure numpy. Training imports it too, to measure cold-start customers offline with the same math
the service uses online.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.artifact import FoldIn

# A customer's row of the matrix: (item rows, sorted and distinct; values after the transform).
Row = tuple[NDArray[np.int64], NDArray[np.float64]]


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


def event_weight(
    params: FoldIn, event_type: str, channel: str, age_days: float, rating: float | None = None
) -> float:
    """One event's weight, as training computed it: type x channel x half-life decay (x its
    ``rating`` over the scale; 0 for a rating below the relevant one)."""
    w = params.event_weights.get(event_type, 0.0) * params.channel_weights.get(channel, 1.0)
    if rating is not None and params.rating_scale is not None:
        if rating < params.min_relevant_rating:
            return 0.0
        w *= rating / params.rating_scale
    if params.half_life_days > 0:
        w *= 0.5 ** (max(age_days, 0.0) / params.half_life_days)
    return w


# Up to this many rows, ``confidences`` sums per item in Python.
_SUMMED_IN_PYTHON = 64


def _as_list(values: Sequence[Any]) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def confidences(
    params: FoldIn, rows: Sequence[int], weights: Sequence[float]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Sum the weights per item and apply the transform: the customer's row of the matrix."""
    if not len(rows):
        return np.empty(0, np.int64), np.empty(0, np.float64)
    if len(rows) <= _SUMMED_IN_PYTHON:
        # A request's few events (and a short training row): a dict sums them in the same order
        # as bincount, without np.unique's two sorts (11 -> 6 µs for 15 rows).
        sums: dict[int, float] = {}
        for row, weight in zip(_as_list(rows), _as_list(weights), strict=True):
            sums[row] = sums.get(row, 0.0) + weight
        ordered = sorted(sums)
        unique = np.array(ordered, dtype=np.int64)
        summed = np.array([sums[row] for row in ordered], dtype=np.float64)
    else:
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
    implicit's ALS does for one user; a customer with no rows gets the zero vector. For many
    customers of one model, ``LeastSquares`` solves the same system faster.
    """
    dim = item_factors.shape[1]
    if len(rows) == 0:
        return np.zeros(dim, dtype=np.float32)
    base = gram + params.regularization * np.eye(dim)
    return _solve(base, *_row_terms(item_factors, rows, values, params))


# ``LeastSquares`` takes the rank-n update for rows of at most this share of the dimension: the
# n x n system it solves costs about as much as the dim x dim one at half the dimension.
_UPDATE_SHARE = 0.5
# Above this condition number of YᵀY + λI, its inverse loses too many digits to build on.
_MAX_CONDITION = 1e8
# From this dimension on, each item's product with the inverse, ``Y (YᵀY + λI)⁻¹``, is computed
# once at load when it takes no more memory than the larger of the inverse it replaces and
# ``_PROJECTED_MAX_BYTES``: a request then gathers its rows' products instead of multiplying by
# the dim x dim inverse. A blend that exports item-item models exactly (one factor column per
# item, up to 2,048 items each) has thousands of dimensions: on 800 items and 1,664 dimensions
# (with the kernel below), a solve of 10 items took 4.1-4.8 ms before and 24-26 µs after, one
# of 300 items 46 ms and 2.2 ms, and loading took 1.5 s and 0.55 s. At 64 dimensions the
# product is cheap and the table would be memory per worker for nothing.
_PROJECT_FROM_DIM = 256
_PROJECTED_MAX_BYTES = 32 << 20


class LeastSquares:
    """``recalculate_user`` for one model, with the parts that depend on the model done once.

    ``YᵀY + λI`` and its inverse are computed when the model is loaded (off the event loop: at a
    million items the Gram matrix took seconds). A customer's row of ``n`` items changes
    ``YᵀY + λI`` by a rank-``n`` update, so when ``n`` is well under the dimension the solve goes
    through the Woodbury identity, an ``n x n`` system instead of a ``dim x dim`` one: a
    request's few recent events on 64 factors, 45 -> 25 µs. With many dimensions, each item's
    product with the inverse is kept instead of the inverse (``_PROJECT_FROM_DIM``), and the
    update costs ``n² x dim``; with more dimensions than items, the items' products through the
    inverse too, and the update's system is gathered. Same answer as ``recalculate_user`` up to
    float64 rounding.
    """

    def __init__(
        self,
        item_factors: NDArray[np.float32],
        params: FoldIn,
        shipped: Mapping[str, NDArray[np.float32]] | None = None,
    ) -> None:
        """Prepare the solves for ``item_factors``: from the artifact's ``foldin_*`` arrays when
        training shipped them (``shippable``; memory-mapped, one copy for every worker), else
        computed here."""
        self.item_factors = item_factors
        self.params = params
        self.dim = item_factors.shape[1]
        if shipped is not None and "foldin_kernel" in shipped:
            self._base: NDArray[np.float64] | None = None
            self._inverse: NDArray[np.float64] | None = None
            self._projected: NDArray[np.float32] | None = shipped["foldin_projected"]
            self._kernel: NDArray[np.float32] | None = shipped["foldin_kernel"]
            return
        base = gramian(item_factors)
        dim = self.dim
        base[np.diag_indices(dim)] += params.regularization
        self._base = base
        # An ill-conditioned base (λ tiny, factor columns that are zero or repeat) is only ever
        # solved directly.
        well_conditioned = dim > 0 and _well_conditioned(base, params.regularization)
        inverse = np.linalg.inv(base) if well_conditioned else None
        self._inverse = inverse
        # Each item's row of Y B⁻¹, where it pays (``_PROJECT_FROM_DIM``); then B⁻¹ is dropped.
        self._projected = None
        self._kernel = None
        n_items = len(item_factors)
        if (
            inverse is not None
            and dim >= _PROJECT_FROM_DIM
            and n_items * dim * 8 <= max(dim * dim * 8, _PROJECTED_MAX_BYTES)
        ):
            factors = np.asarray(item_factors, dtype=np.float64)
            projected = factors @ inverse
            # Kept in float32, half the memory per worker: a solve from them differed from
            # ``recalculate_user``'s float64 by 2-4e-8 of the vector's largest entry (a blend on
            # movielens-100k, alpha 40, rows of 20-272 items), under float32's own rounding.
            self._projected = projected.astype(np.float32)
            self._inverse = None
            if n_items <= dim:
                # No row has more items than dimensions: every solve takes the update, and the
                # dim x dim base (138 MiB at 4,160 dimensions) is not kept. The items' products
                # through the inverse, Y B⁻¹ Yᵀ (no larger than the projections), are kept
                # instead: a solve gathers its n x n system rather than multiplying n² x dim.
                self._base = None
                self._kernel = (projected @ factors.T).astype(np.float32)

    def shippable(self) -> dict[str, NDArray[np.float32]]:
        """The arrays an artifact may ship so the service need not compute them (``foldin_*``):
        the projections and the kernel of a model with more factors than items, else none."""
        if self._kernel is None or self._projected is None:
            return {}
        return {"foldin_projected": self._projected, "foldin_kernel": self._kernel}

    def solve(self, rows: NDArray[np.int64], values: NDArray[np.float64]) -> NDArray[np.float32]:
        """The customer vector for matrix row ``values`` at item ``rows`` (``recalculate_user``)."""
        if len(rows) == 0:
            return np.zeros(self.dim, dtype=np.float32)
        if self._solved_directly(len(rows)):
            assert self._base is not None  # dropped only where the kernel answers
            return _solve(self._base, *_row_terms(self.item_factors, rows, values, self.params))
        if self._kernel is not None:
            w = self._projected[rows].astype(np.float64)  # type: ignore[index]
            m = self._kernel[np.ix_(rows, rows)].astype(np.float64)
            c = self.params.alpha * np.asarray(values, dtype=np.float64)
        else:
            y, c = _row_terms(self.item_factors, rows, values, self.params)
            if self._projected is not None and len(rows) <= self.dim:
                # n² x dim against the direct solve's n x dim² + dim³.
                w = self._projected[rows].astype(np.float64)
            else:
                assert self._inverse is not None  # else _solved_directly
                w = y @ self._inverse
            m = w @ y.T
        # (B + Yᵀ D Y)⁻¹ Yᵀc with D = diag(c - 1) and W = Y B⁻¹ (so B⁻¹ Yᵀc = Wᵀc): with the
        # symmetric M = W Yᵀ = Y B⁻¹ Yᵀ, x = Wᵀ (c - z) where (I + D M) z = D M c.
        d = c - 1.0
        system = d[:, None] * m
        system.ravel()[:: len(rows) + 1] += 1.0  # I + D M, without building I
        z = np.linalg.solve(system, d * (m @ c))
        return (w.T @ (c - z)).astype(np.float32)

    def solve_pair(
        self, before: Row, after: Row
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """``solve`` of two rows of one customer, ``after`` being ``before`` with items added or
        values raised (their new events): where both are solved directly, the second system is
        the first plus a rank-k update for the k items that changed, so a long row's Gram product
        (``n x dim²``, most of a direct solve's time) is computed once instead of twice."""
        (rows, values), (rows_after, values_after) = before, after
        direct = self._solved_directly
        at = None
        if len(rows) and direct(len(rows)) and direct(len(rows_after)):
            # Where each item of ``before`` is in ``after`` (sorted, as ``confidences`` leaves
            # rows); None when ``after`` lost one of them: not a row and its successor.
            at = np.searchsorted(rows_after, rows).clip(max=len(rows_after) - 1)
            if not np.array_equal(rows_after[at], rows):
                at = None
        if at is None:
            return self.solve(rows, values), self.solve(rows_after, values_after)
        y, c_after = _row_terms(self.item_factors, rows_after, values_after, self.params)
        c_before = np.zeros_like(c_after)
        c_before[at] = self.params.alpha * np.asarray(values, dtype=np.float64)
        # (c - 1) over the items of the row, 0 for an item not in it (no term at all).
        d_before = np.zeros_like(c_after)
        d_before[at] = c_before[at] - 1.0
        d_change = (c_after - 1.0) - d_before
        changed = np.flatnonzero(d_change)
        assert self._base is not None  # dropped only where the kernel answers
        # A = B + Yᵀ D Y for ``before``; ``after``'s is A + U Δ Uᵀ with U the changed items'
        # factors (dim x k) and Δ their change of (c - 1); its right side is b plus U δc. One
        # factorisation of A answers both (Woodbury): x = A⁻¹b, W = A⁻¹U, v = x + W δc, and
        # x' = v - W (I + Δ UᵀW)⁻¹ Δ Uᵀv.
        a = self._base + (y.T * d_before) @ y
        u = y[changed].T
        solved = np.linalg.solve(a, np.column_stack([y.T @ c_before, u]))
        x, w = solved[:, 0], solved[:, 1:]
        delta = d_change[changed]
        v = x + w @ (c_after - c_before)[changed]
        system = delta[:, None] * (u.T @ w)
        system.ravel()[:: len(changed) + 1] += 1.0
        after_x = v - w @ np.linalg.solve(system, delta * (u.T @ v))
        return x.astype(np.float32), after_x.astype(np.float32)

    def _solved_directly(self, n_rows: int) -> bool:
        """Whether ``solve`` takes the direct ``dim x dim`` solve for a row of ``n_rows`` items
        rather than the rank-n update (short rows, or every row once the kernel is kept)."""
        if self._kernel is not None:
            return False
        if self._projected is not None and n_rows <= self.dim:
            return False
        return not (self._inverse is not None and n_rows <= _UPDATE_SHARE * self.dim)


def _well_conditioned(base: NDArray[np.float64], regularization: float) -> bool:
    """Whether ``base = YᵀY + λI`` has a condition number under ``_MAX_CONDITION``.

    Its eigenvalues lie in [λ, trace(YᵀY) + λ], so a bound from the trace settles most models
    without a decomposition (the exact condition number took 27 s at 4,160 dimensions); the
    others get the symmetric eigenvalues (3x faster than ``np.linalg.cond``'s SVD).
    """
    if regularization > 0:
        largest = float(np.trace(base)) - (len(base) - 1) * regularization
        if largest / regularization < _MAX_CONDITION:
            return True
    eigenvalues = np.linalg.eigvalsh(base)
    return bool(eigenvalues[0] > 0 and eigenvalues[-1] < _MAX_CONDITION * eigenvalues[0])


def _row_terms(
    item_factors: NDArray[np.float32],
    rows: NDArray[np.int64],
    values: NDArray[np.float64],
    params: FoldIn,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The row's item factors ``Y`` and confidences ``c = alpha * value``, in float64."""
    y = np.asarray(item_factors[rows], dtype=np.float64)
    return y, params.alpha * np.asarray(values, dtype=np.float64)


def _solve(
    base: NDArray[np.float64], y: NDArray[np.float64], c: NDArray[np.float64]
) -> NDArray[np.float32]:
    """``(base + Σ (cᵢ - 1) yᵢyᵢᵀ) x = Σ cᵢ yᵢ``, solved directly."""
    a = base + (y.T * (c - 1.0)) @ y
    return np.linalg.solve(a, y.T @ c).astype(np.float32)


def age_in_days(when: datetime, now: datetime) -> float:
    """Days from ``when`` to ``now`` (0 for events in the future)."""
    return max((now - when).total_seconds() / 86_400.0, 0.0)
