"""An artifact's optional sparse item-item component: ``score += w · norm(history @ S)``.

Some models are strong because they score a customer's whole history through an items x items
matrix (EASE's ``B``, item-item similarities); squeezing that matrix into low-rank factors loses
much of what makes them strong. The artifact may therefore carry ``S`` as CSR arrays over source
items (``neighbours_indptr/indices/weights``: for each item of the history, the items it lends
score to and how much), and the served score of an item becomes

    ``user_vector · item_factors[i] + weight · (h @ S)[i] / σ(h @ S)``

where ``h`` is the customer's row of the training matrix (values after the fold-in transform)
plus their newer events, and ``σ`` (only when ``normalise``) is the standard deviation of
``h @ S`` over the catalogue, the same per-customer scaling a blend applies to every part.
Training scores its evaluation with the same formula (``training.models.base.Neighbours``).
Pure numpy; imported by ``service.artifact`` (the arrays' contract) and ``service.ranking``.

Training also ships the component's rows as one dense block when it fits ``DENSE_MAX_BYTES``
(EASE's: 3,000 x 3,000 items, 34 MiB, memory-mapped once for every worker). A history's sum is
then gathers of its rows (half a MiB at a time, so each stays in cache) and their
matrix-vector products instead of numpy's seven passes over each stored neighbour it reaches. A
history whose rows reach few neighbours each is still summed from the stored neighbours
(``_DENSE_SHARE``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from service.ann import among
from service.offload import guard
from service.topk import largest, top_k

if TYPE_CHECKING:  # ranking imports this module; only the type is needed here
    from service.ranking import FactorModel

# The component's arrays in an artifact: name -> (dtype kind, number of dimensions); all or none.
NEIGHBOUR_ARRAYS: dict[str, tuple[str, int]] = {
    "neighbours_indptr": ("i", 1),  # int64 [n_items + 1]: row i is indptr[i]:indptr[i+1]
    "neighbours_indices": ("i", 1),  # int32: the items source item i lends score to
    "neighbours_weights": ("f", 1),  # float32: how much (S[i, j])
}

# The component's rows as one dense block, shipped when it fits DENSE_MAX_BYTES; both or none.
NEIGHBOUR_DENSE_ARRAYS: dict[str, tuple[str, int]] = {
    # float32 [sources, targets]: row s is source item sources[s]'s weights over the items the
    # component reaches (its targets: the distinct neighbours_indices, ascending), 0 elsewhere.
    "neighbours_dense": ("f", 2),
    "neighbours_dense_sources": ("i", 1),  # int32, ascending: every item row with neighbours
}
# The largest dense block shipped (EASE over its 3,000 items: 34 MiB).
DENSE_MAX_BYTES = 64 << 20

Rows = NDArray[np.int64]
Scores = NDArray[np.float32]
# A customer's row of the training matrix plus newer events: (item rows, transformed values).
History = tuple[Rows, NDArray[np.float64]]


class NeighboursSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How the component's scores join the factor scores (the manifest's ``neighbours``)."""

    weight: float = 1.0
    # Scale each customer's ``h @ S`` to unit standard deviation over the catalogue.
    normalise: bool = False
    # Which model part it serves (for reports), e.g. "ease".
    part: str = ""


def check_neighbours(arrays: Mapping[str, NDArray[Any]], n_items: int) -> str | None:
    """What is wrong with the component's arrays, or None (also when there is none)."""
    present = [name for name in NEIGHBOUR_ARRAYS if name in arrays]
    if not present:
        if any(name in arrays for name in NEIGHBOUR_DENSE_ARRAYS):
            return "neighbours_dense without the neighbours_* arrays it is a block of"
        return None
    if len(present) != len(NEIGHBOUR_ARRAYS):
        missing = sorted(set(NEIGHBOUR_ARRAYS) - set(present))
        return f"the neighbours component is incomplete: {', '.join(missing)} missing"
    indptr = arrays["neighbours_indptr"]
    indices, weights = arrays["neighbours_indices"], arrays["neighbours_weights"]
    if len(indptr) != n_items + 1 or indptr[0] != 0 or indptr[-1] != len(indices):
        return "neighbours_indptr does not match the number of items and neighbours_indices"
    if len(indices) != len(weights):
        return "neighbours_indices and neighbours_weights differ in length"
    if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
        return "neighbours_indices holds item rows out of range"
    if np.any(np.diff(indptr) < 0):
        return "neighbours_indptr must not decrease"
    if not bool(np.isfinite(weights).all()):
        return "neighbours_weights contains NaN or infinite values"
    return _check_dense(arrays, indptr, indices)


def _check_dense(
    arrays: Mapping[str, NDArray[Any]], indptr: NDArray[Any], indices: NDArray[Any]
) -> str | None:
    present = [name for name in NEIGHBOUR_DENSE_ARRAYS if name in arrays]
    if not present:
        return None
    if len(present) != len(NEIGHBOUR_DENSE_ARRAYS):
        return "neighbours_dense and neighbours_dense_sources go together"
    sources = arrays["neighbours_dense_sources"]
    # Every item with stored neighbours has its row: a missing one would lose its scores.
    if not np.array_equal(sources, np.flatnonzero(np.diff(indptr))):
        return "neighbours_dense_sources must list every item with neighbours, ascending"
    n_targets = int(np.count_nonzero(np.bincount(indices, minlength=len(indptr) - 1)))
    if arrays["neighbours_dense"].shape != (len(sources), n_targets):
        return "neighbours_dense must be sources x the items the component reaches"
    return None


def dense_block(arrays: Mapping[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    """The component's ``NEIGHBOUR_DENSE_ARRAYS`` for an artifact's ``neighbours_*`` arrays;
    empty when there is no component or its block would exceed ``DENSE_MAX_BYTES``."""
    if "neighbours_indptr" not in arrays:
        return {}
    indptr, indices = arrays["neighbours_indptr"], arrays["neighbours_indices"]
    lengths = np.diff(indptr)
    sources = np.flatnonzero(lengths)
    targets = np.unique(indices)
    if len(sources) * len(targets) * 4 > DENSE_MAX_BYTES:
        return {}
    block = np.zeros((len(sources), len(targets)), dtype=np.float32)
    rows = np.repeat(np.arange(len(sources)), lengths[sources])
    columns = np.searchsorted(targets, indices)
    # Duplicate (source, target) pairs add up, as the sparse sum adds them.
    np.add.at(block, (rows, columns), np.asarray(arrays["neighbours_weights"], dtype=np.float32))
    return {"neighbours_dense": block, "neighbours_dense_sources": sources.astype(np.int32)}


def normaliser(total: float, total_sq: float, n_items: int, weight: float) -> float:
    """The factor turning ``h @ S`` into the served part: ``weight / σ`` (0 when σ is 0).

    ``total`` and ``total_sq`` are the sum and the sum of squares of ``h @ S`` over all items.
    """
    mean = total / max(n_items, 1)
    sigma = np.sqrt(max(total_sq / max(n_items, 1) - mean * mean, 0.0))
    return float(weight / sigma) if sigma > 1e-12 else 0.0


class Neighbours:
    """The component of one loaded artifact (memory-mapped arrays; read-only, thread-safe)."""

    def __init__(self, arrays: Mapping[str, NDArray[Any]], spec: NeighboursSpec) -> None:
        """Wrap the artifact's ``neighbours_*`` arrays."""
        self.indptr: NDArray[Any] = arrays["neighbours_indptr"]
        self.indices: NDArray[Any] = arrays["neighbours_indices"]
        self.weights: NDArray[np.float32] = arrays["neighbours_weights"]
        self.n_items = len(self.indptr) - 1
        self.spec = spec
        # The items the component can reach at all: EASE's, a few thousand of the most popular.
        # When they are few, each stored neighbour's position among them is kept (an int32 per
        # stored neighbour, per worker) and a request sums into an array of that many; else each
        # request groups through a scratch slot per item (per thread: scoring may run off the
        # event loop), see _sum_by_item.
        reached = np.zeros(self.n_items, dtype=bool)
        reached[self.indices] = True
        self._targets = np.flatnonzero(reached)
        self._compact: NDArray[np.int32] | None = None
        if len(self._targets) <= _COMPACT_TARGETS:
            at = (np.cumsum(reached, dtype=np.int64) - 1).astype(np.int32)
            self._compact = np.take(at, self.indices)
        self._local = threading.local()
        # The dense block when training shipped it (as a plain array: a memory map's fancy
        # indexing wraps its answer in another memory map).
        dense = arrays.get("neighbours_dense")
        self._dense = None if dense is None else dense.view(np.ndarray)
        row_bytes = 0 if self._dense is None else self._dense.shape[1] * self._dense.itemsize
        self._chunk_rows = max(1, _DENSE_CHUNK_BYTES // max(row_bytes, 1))
        self._dense_sources: NDArray[Any] | None = arrays.get("neighbours_dense_sources")

    def _scratch(self) -> NDArray[np.int32]:
        scratch: NDArray[np.int32] | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = np.empty(self.n_items, dtype=np.int32)
        return scratch

    def scores(self, rows: Rows, values: NDArray[np.float64]) -> tuple[Rows, Scores]:
        """The component's score of every item it reaches from history ``rows`` with ``values``.

        Returns (item rows ascending, scores), sparse: every item not listed scores 0 (an item
        whose contributions cancel out exactly is not listed either).
        """
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = (ends - starts).astype(np.int64)
        total = int(lengths.sum())
        if total == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        values = np.asarray(values, dtype=np.float64)
        reaches = lengths > 0
        if (
            self._dense is not None
            and np.count_nonzero(reaches) * len(self._targets) <= _DENSE_SHARE * total
        ):
            items, summed = self._dense_sums(rows[reaches], values[reaches])
        else:
            items, summed = self._sparse_sums(starts, lengths, total, values)
        scale = self.spec.weight
        if self.spec.normalise:
            scale = normaliser(
                float(summed.sum()), float((summed * summed).sum()), self.n_items, scale
            )
        return items, (summed * scale).astype(np.float32)

    def _dense_sums(
        self, rows: Rows, values: NDArray[np.float64]
    ) -> tuple[Rows, NDArray[np.float64]]:
        """The sums of the history's ``rows`` (each with stored neighbours) by the dense block:
        the items reached with a non-zero sum, ascending, and their sums."""
        assert self._dense is not None and self._dense_sources is not None
        at = np.searchsorted(self._dense_sources, rows)
        weights = values.astype(np.float32)
        # A chunk of rows at a time, gathered and multiplied while it is still in the core's
        # cache: one gather of a long history's rows (completejourney's: 3.5 MB) is written out
        # and read back from memory. Measured on completejourney's and uci-online-retail's blends
        # (one process, their customers' own histories): 205 -> 121 and 68 -> 47 µs.
        step = self._chunk_rows
        sums = weights[:step] @ self._dense[at[:step]]
        for start in range(step, len(at), step):
            sums += weights[start : start + step] @ self._dense[at[start : start + step]]
        found = np.flatnonzero(sums)
        return self._targets[found].astype(np.int64), sums[found].astype(np.float64)

    def _sparse_sums(
        self, starts: Rows, lengths: Rows, total: int, values: NDArray[np.float64]
    ) -> tuple[Rows, NDArray[np.float64]]:
        """``_dense_sums`` from the stored neighbours (``total`` of them, from ``starts``)."""
        # Every stored neighbour of the history's items, without a Python loop over the rows.
        # A grocery customer's history of 300 items reaches 45,000 of them (completejourney's
        # median), so each pass over them counts. np.take: a third of fancy indexing's time.
        positions = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)
        contributions = np.take(self.weights, positions).astype(np.float64) * np.repeat(
            values, lengths
        )
        if self._compact is not None:
            sums = np.bincount(
                np.take(self._compact, positions),
                weights=contributions,
                minlength=len(self._targets),
            )
            found = np.flatnonzero(sums)
            return self._targets[found].astype(np.int64), sums[found]
        targets = np.take(self.indices, positions).astype(np.intp)
        items, summed = _sum_by_item(targets, contributions, self._scratch())
        found = np.flatnonzero(summed)
        return items[found], summed[found]

    def recommend(
        self,
        model: FactorModel,
        user_vector: NDArray[np.float32],
        k: int,
        exclude: Rows | None,
        allowed: NDArray[np.bool_] | None,
        history: History,
    ) -> tuple[Rows, Scores]:
        """``FactorModel.recommend`` with this component's scores of ``history`` added.

        Without an index every item is scored exactly. With one (large catalogues), the
        candidates are the index's best by the factors plus every item the history reaches,
        rescored exactly, so the component's items are never lost to the approximation.
        """
        items, extra = self.scores(*history)
        if allowed is not None and len(items):
            # Only the filter's items can be answers: a category request rescored every item
            # the history reaches (3,000 on completejourney) to keep a few dozen.
            keep = allowed[items]
            items, extra = items[keep], extra[keep]
        index = model.index
        found = None
        if index is not None and k > 0:
            if allowed is not None and index.exact_for(model.allowed_count(allowed), model.n_items):
                found = (model.allowed_rows(allowed).astype(np.int64), None)
            else:
                found = index.search(user_vector, 2 * k + 10, exclude=exclude, allowed=allowed)
        if found is None:  # no index, or the filters leave few items: score every item
            guard(model.n_items)
            scores = model.products.scores(user_vector)
            scores[items] += extra
            return top_k(scores, k, exclude=exclude, allowed=allowed)
        limit = max(_COMPONENT_CANDIDATES, 8 * k) + _count(exclude)
        if found[1] is not None and len(found[1]) and len(items) > limit:
            # A long history reaches thousands of items, and gathering all their factors cost
            # more than the rest of the request. Rescore the component's best ``limit`` first:
            # an item left out scores at most (the index's lowest) + (the component's lowest
            # kept), so when the k-th answer beats that bound the answer is the full one.
            best = largest(extra, limit)
            floor = float(extra[best].min())
            # The index's candidates keep their component score too, wherever it ranks.
            at = np.minimum(np.searchsorted(items, found[0]), len(items) - 1)
            keep = np.zeros(len(items), dtype=bool)
            keep[best] = True
            keep[at[items[at] == found[0]]] = True
            answer = _rescored(model, user_vector, found[0], items[keep], extra[keep])
            rows, scores = _top(*answer, k, exclude, allowed)
            bound = float(found[1][-1]) + floor
            if len(rows) == k and float(scores[-1]) >= bound:
                return rows, scores
        return _top(*_rescored(model, user_vector, found[0], items, extra), k, exclude, allowed)

    def dense(self, rows: Rows, values: NDArray[np.float64]) -> Scores:
        """``scores`` as one value per item of the catalogue (0 where it reaches none)."""
        out = np.zeros(self.n_items, dtype=np.float32)
        items, scores = self.scores(rows, values)
        out[items] = scores
        return out


def load_neighbours(
    arrays: Mapping[str, NDArray[Any]], spec: NeighboursSpec | None
) -> Neighbours | None:
    """The artifact's component, or None when it has none (older artifacts, most models)."""
    if spec is None or "neighbours_indptr" not in arrays:
        return None
    return Neighbours(arrays, spec)


def _sum_by_item(
    targets: NDArray[np.intp], contributions: NDArray[np.float64], scratch: NDArray[np.int32]
) -> tuple[Rows, NDArray[np.float64]]:
    """Each distinct item of ``targets`` (ascending) and the sum of its ``contributions``.

    For components that reach more items than ``_COMPACT_TARGETS``. ``np.unique`` sorts all
    the contributions; here each contribution's item points, through ``scratch`` (one slot per
    item of the catalogue, any content), at one contribution of the same item that stands for
    the group, and only the distinct items are sorted: the same result, about twice as fast
    (completejourney's customers: 1.8 -> 0.8 ms; the compact sum takes 0.45 ms).
    """
    n = len(targets)
    at = np.arange(n, dtype=np.int32)
    scratch[targets] = at  # where an item repeats, one of its positions stays: any one will do
    group = np.take(scratch, targets)
    summed = np.bincount(group, weights=contributions, minlength=n)
    first = np.flatnonzero(group == at)
    items = targets[first]
    order = np.argsort(items)
    return items[order].astype(np.int64), summed[first[order]]


# Up to this many items the component can reach, requests sum into an array of that many.
_COMPACT_TARGETS = 65_536
# A history is summed by the dense block while its rows there (rows with neighbours x targets)
# hold at most this many times the stored neighbours it reaches. Measured on uci-online-retail's
# blend (one process): a dense entry cost 0.9 ns gathered and multiplied, a stored neighbour 12 ns
# through the sparse sum's passes.
_DENSE_SHARE = 12
# The block's rows a history sums per gather: about half a MiB (43 rows of EASE's 3,000 items),
# under a core's L2 cache on current servers. 32 to 64 rows of 3,000 measured alike; one gather
# of all of a long history's rows took 1.7 times as long.
_DENSE_CHUNK_BYTES = 512 << 10
# Items the component brings to the index's candidates (beyond 8·k and the excluded ones).
_COMPONENT_CANDIDATES = 256


def _rescored(
    model: FactorModel,
    user_vector: NDArray[np.float32],
    found: Rows,
    items: Rows,
    extra: Scores,
) -> tuple[Rows, NDArray[np.float32]]:
    """The component's ``items`` and the index's candidates not among them, scored exactly."""
    others = found[~among(found, items)] if len(items) else found
    candidates = np.concatenate([items, others])
    scores = model.products.scores_of(candidates, user_vector)
    scores[: len(items)] += extra
    return candidates, scores


def _count(rows: Rows | None) -> int:
    return 0 if rows is None else len(rows)


def _top(
    candidates: Rows,
    scores: NDArray[np.float32],
    k: int,
    exclude: Rows | None,
    allowed: NDArray[np.bool_] | None,
) -> tuple[Rows, Scores]:
    """The ``k`` best of ``candidates`` (item rows) by ``scores``, best first, filters applied."""
    keep = np.isfinite(scores)
    if allowed is not None:
        keep &= allowed[candidates]
    if exclude is not None and len(exclude):
        keep &= ~among(candidates, exclude)
    candidates, scores = candidates[keep], scores[keep]
    k = min(k, len(scores))
    if k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    part = largest(scores, k)
    order = part[np.argsort(-scores[part], kind="stable")]
    return candidates[order].astype(np.int64), scores[order].astype(np.float32)
