"""Approximate nearest neighbours for large catalogues: an inverted-file (IVF) index in numpy.

Items are grouped into ``nlist`` clusters by k-means over their factors. A query scores the
cluster centroids, keeps the ``nprobe`` best clusters and scores only their items exactly: about
``nprobe / nlist`` of the catalogue (a few thousand items of a million) instead of all of it.

Why our own IVF in numpy and not faiss or hnswlib: the index is four plain arrays, so it travels
in the artifact like every other array (``ann_*.npy``, checksummed in the manifest, no pickle),
is memory-mapped read-only and therefore shared by every worker process, and the service keeps
needing numpy only (DESIGN.md section 4). faiss's HNSW cannot be memory-mapped (its graph is read
into each process), and hnswlib has no wheels. Items are stored reordered by cluster
(``ann_factors``) so a probed cluster is one contiguous slice, and within a cluster by category
(``build_index``'s ``groups``) so a category's share of a cluster is one slice too.

Filters are applied to the scored candidates: a business filter only needs enough candidates to
survive it. When too few survive, the search probes more clusters, and the caller falls back to
exact scoring (``search`` returns None). A narrow ``allowed`` mask is scored exactly over just the
allowed items, which is cheaper than probing and always right.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from numpy.typing import NDArray

from service.item_products import gathered_products
from service.topk import largest

# The index's arrays in an artifact: name -> (dtype kind, number of dimensions).
INDEX_ARRAYS: dict[str, tuple[str, int]] = {
    "ann_centroids": ("f", 2),  # float32 [nlist, dim]: cluster centres
    "ann_offsets": ("i", 1),  # int64 [nlist + 1]: cluster c is positions offsets[c]:offsets[c+1]
    "ann_rows": ("i", 1),  # int32 [n_items]: the item row at each position
    "ann_factors": ("f", 2),  # float32 [n_items, dim]: item_factors[ann_rows], contiguous
}

Rows = NDArray[np.int64]
Scores = NDArray[np.float32]

# How far inner-product probes lean from a cluster's centroid score towards its upper bound
# (``IvfIndex.search``) when the model's calibration does not say (an index shipped before it
# did): 0.25 beat 0, 0.5 and 0.75 on three real data sets' ALS factors.
RADIUS_WEIGHT = 0.25
# The leans ``calibrate`` tries, keeping the one that needs the fewest probes (the first on a
# tie). A blend's factors lean further: an H&M-size blend (227 columns, 105,000 items, 648
# clusters) found 0.98 of the exact best 10 at 96 probes leaning 0.25 and at 48 leaning 1.0.
LEANS = (RADIUS_WEIGHT, 0.5, 1.0)
# Filters keeping at most this share of the catalogue, and at most this many items, are scored
# exactly over their items (``IvfIndex.exact_for``); 50,000 is the default inline scoring limit
# (RECO_INLINE_SCORING_MAX_ITEMS), so they are scored on the loop.
SELECTIVE_SHARE = 0.05
SELECTIVE_MAX = 50_000
# ``search_subset`` looks for enough of a subset's items among this many times the probed
# clusters (ranked by promise) before it leaves the subset to exact scoring.
_SUBSET_WIDENING = 8

# Clusters probed per query when neither the model nor the service's settings say (``AnnSpec``).
DEFAULT_NPROBE = 32
DEFAULT_NPROBE_SIMILAR = 12
# The share of the exact best 10 items a calibrated index must find (``calibrate``): the issue's
# bar is 0.95; the margin covers the customers the sample does not hold (folded-in vectors).
RECALL_TARGET = 0.98
# The probe counts ``calibrate`` tries, fewest first. It starts at 4, a margin for the customers
# the sample does not hold: recall falls steeply below (generated 100k items: 0.900 at 2 probes,
# 0.972 at 4, 0.986 at 6). Past 256 a search scores a large part of a catalogue anyway.
_NPROBE_STEPS = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


class AnnSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How hard a shipped index is searched: the manifest's ``ann``, measured when it was built.

    ``nprobe`` (``nprobe_similar``): the fewest clusters probed per customer (per similar-items)
    query that found ``recall_target`` of the exact best 10 on ``sample`` of the model's own
    customers (items), with the customers' probes leaning ``lean``; the recall measured there
    beside it. A catalogue whose factors cluster well needs few probes, a hard one more: one
    fixed number is either slow on the first or inaccurate on the second (1M generated items:
    0.985 at 12 probes, 104 µs a search, against 257 µs at 32). ``sample`` 0: no customer had a
    vector to measure on (the default probes).
    """

    nprobe: Annotated[int, msgspec.Meta(ge=1)]
    nprobe_similar: Annotated[int, msgspec.Meta(ge=1)]
    recall_target: Annotated[float, msgspec.Meta(ge=0, le=1)]
    recall_at_10: Annotated[float, msgspec.Meta(ge=0, le=1)]
    recall_at_10_similar: Annotated[float, msgspec.Meta(ge=0, le=1)]
    sample: Annotated[int, msgspec.Meta(ge=0)]
    # How far customer queries lean towards a cluster's bound (``IvfIndex.lean``).
    lean: Annotated[float, msgspec.Meta(ge=0)] = RADIUS_WEIGHT


class AnnConfig(msgspec.Struct, frozen=True, kw_only=True):
    """When to use the index and how hard to search it.

    ``mode``: ``auto`` uses it for catalogues of at least ``min_items`` items, ``on`` always
    (when there are at least 2 items), ``off`` never (exact scoring only).
    """

    mode: Literal["auto", "on", "off"] = "auto"
    min_items: int = 30_000
    # Clusters probed per query; more is slower and closer to exact. None: what the model's
    # calibration measured (``AnnSpec``), else ``DEFAULT_NPROBE(_SIMILAR)``. Similar items
    # (cosine) need fewer: an item's neighbours sit in its own and the nearest clusters.
    nprobe: int | None = None
    nprobe_similar: int | None = None
    # Filters that leave at most this many items are scored exactly over the allowed items;
    # above, a selective category is searched in its clusters (``IvfIndex.search_subset``).
    exact_below: int = 10_000

    def wanted(self, n_items: int) -> bool:
        """Whether a catalogue of ``n_items`` items is served from the index."""
        if self.mode == "off" or n_items < 2:
            return False
        return self.mode == "on" or n_items >= self.min_items


def default_nlist(n_items: int) -> int:
    """About ``2 * sqrt(n)`` clusters: 200 for 10k items, 630 for 100k, 2,000 for 1M."""
    return max(1, min(n_items, round(2 * math.sqrt(n_items))))


def build_index(
    item_factors: NDArray[np.float32],
    *,
    nlist: int | None = None,
    iterations: int = 10,
    sample_per_list: int = 32,
    seed: int = 0,
    groups: NDArray[np.integer] | None = None,
) -> dict[str, NDArray[Any]]:
    """The index's arrays for ``item_factors`` (k-means on a sample, then every item assigned).

    ``groups``: a code per item (its category): within each cluster the items are stored group
    by group, so a category's items in a cluster are one run of the factors and a search among
    them (``search_subset``) reads slices instead of gathering rows.

    Add them to an artifact's arrays before ``artifact.save``; they are checked and checksummed
    like the others. A million 64-factor items take a few seconds on two cores.
    """
    x = np.ascontiguousarray(item_factors, dtype=np.float32)
    n = len(x)
    nlist = min(nlist or default_nlist(n), max(n, 1))
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(n, size=min(n, nlist * sample_per_list), replace=False)] if n else x
    centroids = sample[rng.choice(len(sample), size=nlist, replace=False)].copy()
    for _ in range(iterations):
        assign = _nearest(sample, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, sample)
        counts = np.bincount(assign, minlength=nlist)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        # An empty cluster restarts at a random sample point.
        empty = np.flatnonzero(~filled)
        if len(empty):
            centroids[empty] = sample[rng.choice(len(sample), size=len(empty))]
    assign = _nearest(x, centroids)
    if groups is None:
        order = np.argsort(assign, kind="stable")
    else:
        order = np.lexsort((np.asarray(groups), assign))  # by cluster, then group, then row
    offsets = np.zeros(nlist + 1, dtype=np.int64)
    np.cumsum(np.bincount(assign, minlength=nlist), out=offsets[1:])
    return {
        "ann_centroids": centroids.astype(np.float32),
        "ann_offsets": offsets,
        "ann_rows": order.astype(np.int32),
        "ann_factors": np.ascontiguousarray(x[order]),
    }


def calibrate(
    index_arrays: Any,
    model_arrays: Any,
    *,
    target: float = RECALL_TARGET,
    sample: int = 300,
    seed: int = 0,
) -> AnnSpec:
    """The fewest probes with which the index (``build_index``'s arrays) finds ``target`` of the
    exact best 10, searched as the service searches it; the largest step tried when none does.

    ``model_arrays``: the model's, as ``artifact.pack`` returns them. Customers: ``sample`` of
    ``user_factors``, each without what it bought (``bought_*``), as the service excludes it: a
    household with hundreds of purchases needs items deeper in the ranking, which fewer probes
    miss. Similar items: as many items, without themselves. An item counts as found when its
    exact score reaches the 10th best (real factors hold exact ties). Seconds for a million
    items: ``sample`` exact scorings of the catalogue per kind.
    """
    index = IvfIndex(index_arrays)
    items = np.asarray(model_arrays["item_factors"], dtype=np.float32)
    users = np.asarray(model_arrays["user_factors"], dtype=np.float32)
    indptr, bought = model_arrays["bought_indptr"], model_arrays["bought_items"]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(users), size=min(sample, len(users)), replace=False)
    picked = picked[np.abs(users[picked]).sum(axis=1) > 0]
    queries = users[picked]
    excluded = [np.asarray(bought[indptr[u] : indptr[u + 1]], dtype=np.int64) for u in picked]
    tenths = _tenth_best(queries, items, excluded)

    def customers(nprobe: int) -> float:
        index.nprobe = nprobe
        return _found_share(index, queries, tenths, excluded)

    norms = np.linalg.norm(items, axis=1).astype(np.float32)
    signal = np.flatnonzero(norms > 0)
    rows = signal[rng.choice(len(signal), size=min(sample, len(signal)), replace=False)]
    divisors = np.where(norms > 0, norms, np.float32(1e-9))
    unit = items[rows] / divisors[rows, None]
    themselves = [np.array([row], dtype=np.int64) for row in rows.tolist()]
    similar_tenths = _tenth_best(unit, items, themselves, divisors)

    def similar(nprobe: int) -> float:
        index.nprobe_similar = nprobe
        return _found_share(index, unit, similar_tenths, themselves, divisors)

    # Nothing to measure on (no customer or item with a vector): the defaults, recall 0.
    nprobe, recall, lean = (
        _fewest_leaning(index, customers, target)
        if len(queries)
        else (min(DEFAULT_NPROBE, index.nlist), 0.0, RADIUS_WEIGHT)
    )
    nprobe_similar, recall_similar = (
        _fewest(similar, index.nlist, target)
        if len(rows)
        else (min(DEFAULT_NPROBE_SIMILAR, index.nlist), 0.0)
    )
    return AnnSpec(
        nprobe=nprobe,
        nprobe_similar=nprobe_similar,
        recall_target=target,
        recall_at_10=round(recall, 4),
        recall_at_10_similar=round(recall_similar, 4),
        sample=len(queries),
        lean=lean,
    )


def _fewest_leaning(
    index: IvfIndex, recall_at: Callable[[int], float], target: float
) -> tuple[int, float, float]:
    """``_fewest`` at each of ``LEANS``: the fewest probes reaching ``target`` (the first lean
    on a tie), or, when no lean reaches it, the best recall at the most probes; with the lean."""

    def rank(nprobe: int, recall: float) -> tuple[int, float]:
        return (0, nprobe) if recall >= target else (1, -recall)

    best: tuple[int, float, float] | None = None
    for lean in LEANS:
        index.lean = lean
        # Once a lean reached the target, the next ones need only try fewer probes.
        reached = best is not None and best[1] >= target
        nprobe, recall = _fewest(recall_at, index.nlist, target, below=best[0] if reached else None)
        if best is None or rank(nprobe, recall) < rank(best[0], best[1]):
            best = (nprobe, recall, lean)
    assert best is not None
    index.lean = best[2]
    return best


def _fewest(
    recall_at: Callable[[int], float], nlist: int, target: float, below: int | None = None
) -> tuple[int, float]:
    """The first of the probe steps (capped at ``nlist``; only those under ``below`` when given)
    whose recall reaches ``target``, else the last step tried."""
    steps = [n for n in _NPROBE_STEPS if n < nlist] or [nlist]
    if nlist <= _NPROBE_STEPS[-1] and steps[-1] != nlist:
        steps.append(nlist)
    if below is not None:
        steps = [n for n in steps if n < below]
        if not steps:
            return below, 0.0
    nprobe, recall = steps[0], 0.0
    for nprobe in steps:
        recall = recall_at(nprobe)
        if recall >= target:
            break
    return nprobe, recall


def _tenth_best(
    queries: NDArray[np.float32],
    items: NDArray[np.float32],
    excluded: list[Rows],
    norms: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Each query's exact 10th best score over the items it does not exclude (-inf: fewer than
    10 left), divided by ``norms`` when given."""
    out = np.full(len(queries), -np.inf, dtype=np.float32)
    k = min(10, len(items))
    if k == 0:
        return out
    step = max(1, (1 << 24) // len(items))
    for start in range(0, len(queries), step):
        scores = queries[start : start + step] @ items.T
        if norms is not None:
            scores /= norms
        for i, rows in enumerate(excluded[start : start + step]):
            scores[i, rows] = -np.inf
        out[start : start + step] = np.partition(scores, -k, axis=1)[:, -k]
    return out


def _found_share(
    index: IvfIndex,
    queries: NDArray[np.float32],
    tenths: NDArray[np.float32],
    excluded: list[Rows],
    norms: NDArray[np.float32] | None = None,
) -> float:
    """The mean share of the exact best 10 among the index's 10, searched as the service does."""
    shares = []
    for query, tenth, exclude in zip(queries, tenths.tolist(), excluded, strict=True):
        found = index.search(query, 10, exclude=exclude if len(exclude) else None, norms=norms)
        # Ties at the 10th best: any of them counts. The tolerance absorbs float32 rounding (the
        # index's products and the exact ones differ in the last bits) and must be relative:
        # ALS scores of 0.002 lie 1e-5 apart, and an absolute 1e-5 counted near misses as found
        # (movielens-latest-small: 0.986 reported against 0.921 true recall).
        bar = tenth - 1e-6 * abs(tenth)
        shares.append(0.0 if found is None else float(np.count_nonzero(found[1] >= bar)) / 10)
    return float(np.mean(shares)) if shares else 1.0


def check_index(
    arrays: Any, n_items: int, dim: int, item_factors: NDArray[np.float32] | None = None
) -> str | None:
    """What is wrong with an artifact's index arrays, or None (all absent is fine: no index)."""
    present = [name for name in INDEX_ARRAYS if name in arrays]
    if not present:
        return None
    if len(present) != len(INDEX_ARRAYS):
        missing = sorted(set(INDEX_ARRAYS) - set(present))
        return f"the ANN index is incomplete: {', '.join(missing)} missing"
    for name, (kind, ndim) in INDEX_ARRAYS.items():
        a = arrays[name]
        if a.dtype.kind != kind or a.ndim != ndim:
            return f"array {name!r} must be {ndim}-D of kind {kind!r}, got {a.dtype}"
    centroids, offsets = arrays["ann_centroids"], arrays["ann_offsets"]
    rows, factors = arrays["ann_rows"], arrays["ann_factors"]
    if centroids.shape[1] != dim or factors.shape != (n_items, dim):
        return "the ANN index's dimensions do not match item_factors"
    if len(offsets) != len(centroids) + 1 or offsets[0] != 0 or offsets[-1] != n_items:
        return "ann_offsets does not match ann_centroids and the number of items"
    if bool(np.any(np.diff(offsets) < 0)):
        return "ann_offsets must not decrease"
    if len(rows) != n_items or (n_items and (rows.min() < 0 or rows.max() >= n_items)):
        return "ann_rows must hold one valid item row per item"
    if item_factors is not None and n_items:
        # A sample of positions, not all: a full copy would cost each worker the catalogue's size.
        probe = np.unique(np.linspace(0, n_items - 1, num=min(n_items, 1024)).astype(np.int64))
        if not np.array_equal(factors[probe], item_factors[rows[probe]]):
            return "ann_factors do not match item_factors: the index belongs to another model"
    return None


class IvfIndex:
    """Search over an index's (memory-mapped) arrays; read-only, so threads may share it."""

    def __init__(
        self,
        arrays: Any,
        *,
        nprobe: int = DEFAULT_NPROBE,
        nprobe_similar: int = DEFAULT_NPROBE_SIMILAR,
        exact_below: int = 10_000,
        item_norms: NDArray[np.float32] | None = None,
        lean: float = RADIUS_WEIGHT,
    ) -> None:
        """Wrap the ``ann_*`` arrays of an artifact (or of ``build_index``).

        ``lean``: how far an inner-product probe leans from a cluster's centroid score towards
        its upper bound (``_cluster_scores``), as the model's calibration found best.

        ``item_norms``: the model's norm per item row, which cosine searches will pass as
        ``norms``; kept in the index's order too (4 MB at a million items), so a search reads the
        probed clusters' norms in runs instead of gathering them row by row from across the
        catalogue (at a million items those scattered reads were 6% of a similar-items request).
        """
        self.centroids: NDArray[np.float32] = arrays["ann_centroids"]
        self.offsets: NDArray[np.int64] = np.asarray(arrays["ann_offsets"], dtype=np.int64)
        self.rows: NDArray[np.int32] = arrays["ann_rows"]
        self.factors: NDArray[np.float32] = arrays["ann_factors"]
        self.nlist = len(self.centroids)
        self.nprobe = max(1, min(nprobe, self.nlist))
        self.nprobe_similar = max(1, min(nprobe_similar, self.nlist))
        self.exact_below = exact_below
        self.lean = lean
        self._item_norms = item_norms
        self._norms_in_order = None if item_norms is None else np.asarray(item_norms)[self.rows]
        # One view per cluster, made once: slicing per probe cost more than the products.
        bounds = self.offsets.tolist()
        self._clusters = [self.factors[s:e] for s, e in itertools.pairwise(bounds)]
        norms = np.linalg.norm(self.centroids, axis=1)
        self._unit_centroids = (self.centroids / np.where(norms > 0, norms, 1)[:, None]).astype(
            np.float32
        )
        self.radii = cluster_radii(self._clusters, self.centroids)

    def exact_for(self, n_allowed: int, n_items: int) -> bool:
        """Whether a filter that leaves ``n_allowed`` of ``n_items`` items is better scored
        exactly over those items than searched through the index.

        Up to ``exact_below`` items, always. A selective filter (at most ``SELECTIVE_SHARE`` of
        the catalogue) starves the probes: the best clusters hold too few of its items, and the
        search widens eightfold. At a million items, a category of 2% took 1.9 ms through the
        index against 0.3 ms scored exactly in one process, and 2.6-2.8 against 1.2 ms of CPU
        per request in the serving benchmark; such filters are scored exactly up to
        ``SELECTIVE_MAX`` items, or, when the model kept their items' positions (a category's)
        and they are more than ``exact_below``, searched among those alone (``search_subset``).
        """
        if n_allowed <= self.exact_below:
            return True
        return n_allowed <= SELECTIVE_MAX and n_allowed <= SELECTIVE_SHARE * n_items

    def search(
        self,
        query: NDArray[np.float32],
        k: int,
        *,
        exclude: Rows | None = None,
        allowed: NDArray[np.bool_] | None = None,
        norms: NDArray[np.float32] | None = None,
    ) -> tuple[Rows, Scores] | None:
        """The ``k`` best item rows by ``factors @ query`` (divided by ``norms`` when given).

        None when the probed clusters hold fewer than ``k`` items that pass the filters even after
        widening the search: the caller then scores exactly (the filters leave few items).
        """
        probe_scores, nprobe = self._cluster_scores(query, norms)
        for attempt in range(2):
            found = self._probe(probe_scores, nprobe, query, k, exclude, allowed, norms)
            if found is not None:
                return found
            if attempt == 0:
                nprobe = min(self.nlist, nprobe * 8)
        return None

    def search_subset(
        self,
        query: NDArray[np.float32],
        k: int,
        at: NDArray[np.int32],
        rows: NDArray[np.int32],
        bounds: NDArray[np.int32] | None = None,
        *,
        exclude: Rows | None = None,
        norms: NDArray[np.float32] | None = None,
        runs: bool = False,
    ) -> tuple[Rows, Scores] | None:
        """``search`` among some items only (a category's): ``at``, their positions in the
        index's factors, ascending; ``rows``, their item rows. ``runs``: each cluster's share of
        them is one run of the factors (``in_runs``), scored as a slice instead of gathered.

        Only the subset's own items in the best clusters that hold any are scored: as many
        clusters as a search probes, and at least as many items as it scores. A category's items
        gather in few clusters (they are alike), so those hold its best items; at a million items
        a category of 20,000 scored about 6,750 of them (a recommendation 256 µs against 337 µs
        scoring all of them, recall@10 0.9925).

        None when the subset is spread so thinly that even ``_SUBSET_WIDENING`` times the probes
        hold too few of its items, or when the clusters needed hold all of them (exact scoring
        costs as much and finds the best for sure), or fewer than ``k``. ``bounds``:
        ``subset_bounds(at)``, when kept.
        """
        probe_scores, nprobe = self._cluster_scores(query, norms)
        if bounds is None:
            bounds = self.subset_bounds(at)
        held = np.diff(bounds)
        probe_scores[held == 0] = -np.inf
        # What an unfiltered search scores: nprobe clusters of the average size.
        enough = nprobe * len(self.factors) // self.nlist
        best = largest(probe_scores, min(self.nlist, _SUBSET_WIDENING * nprobe))
        best = best[(-probe_scores[best]).argsort(kind="stable")]
        best = best[np.isfinite(probe_scores[best])]
        held_by_best = held[best].cumsum()
        if not len(held_by_best) or held_by_best[-1] < enough:
            return None  # spread thinly over the clusters
        lists = best[: max(nprobe, int(np.searchsorted(held_by_best, enough)) + 1)]
        starts, lengths = bounds[lists], held[lists]
        total = int(lengths.sum())
        if total >= len(at) or total < k:
            return None
        picks = (starts - (lengths.cumsum() - lengths)).repeat(lengths)
        picks += np.arange(total)
        if runs:
            # One product per probed cluster's run: no copy (a category of 20,000 items among a
            # million gathered 1.7 MB of factors for each request).
            factors = self.factors
            scores = np.concatenate(
                [
                    factors[first : first + n].dot(query)
                    for first, n in zip(at[starts].tolist(), lengths.tolist(), strict=True)
                ]
            )
        else:
            scores = gathered_products(self.factors, at[picks], query)
        found_rows = rows[picks]
        if norms is not None:
            scores /= norms[found_rows]
        return self._best(scores, k, exclude, found_rows.__getitem__)

    def subset_bounds(self, at: NDArray[np.int32]) -> NDArray[np.int32]:
        """Where each cluster's run of a subset's index positions ``at`` (ascending) starts, and
        where the last ends: ``at[bounds[c]:bounds[c + 1]]`` lie in cluster ``c``."""
        return np.searchsorted(at, self.offsets).astype(np.int32)

    @staticmethod
    def in_runs(at: NDArray[np.int32], bounds: NDArray[np.int32]) -> bool:
        """Whether each cluster's share of a subset (positions ``at``, ``bounds`` from
        ``subset_bounds``) is one run of consecutive positions: an index built with the items'
        categories as ``groups`` stores a category so."""
        held = np.diff(bounds)
        filled = held > 0
        first = at[bounds[:-1][filled]].astype(np.int64)
        last = at[bounds[1:][filled] - 1].astype(np.int64)
        return bool(np.array_equal(last - first, held[filled] - 1))

    def _cluster_scores(
        self, query: NDArray[np.float32], norms: NDArray[np.float32] | None
    ) -> tuple[NDArray[np.float32], int]:
        """How promising each cluster is for ``query``, and how many a search probes."""
        # Cosine queries (norms given) pick clusters by direction, inner-product ones by value.
        if norms is not None:
            return self._unit_centroids @ query, self.nprobe_similar
        # Inner products: a member x of a cluster scores at most c·q + r·|q|. Leaning part of
        # the way towards that bound finds more of the best items than the centroid alone
        # (recall@10 of ALS factors: completejourney 0.943 -> 0.976 at nprobe 32,
        # uci-online-retail 0.876 -> 0.910 and movielens-latest-small 0.483 -> 0.639 at 8).
        lean = self.lean * math.sqrt(float(query @ query))
        return self.centroids @ query + lean * self.radii, self.nprobe

    def _probe(
        self,
        probe_scores: NDArray[np.float32],
        nprobe: int,
        query: NDArray[np.float32],
        k: int,
        exclude: Rows | None,
        allowed: NDArray[np.bool_] | None,
        norms: NDArray[np.float32] | None,
    ) -> tuple[Rows, Scores] | None:
        lists = largest(probe_scores, nprobe)
        # One matrix-vector product per contiguous cluster: no copy of the candidates' factors
        # (twice as fast as gathering them at a million items). The ndarray's own dot: less
        # dispatch than np.dot (10-15% of these 32 small products) or @.
        clusters = self._clusters
        scores = np.concatenate([clusters[c].dot(query) for c in lists.tolist()])
        starts, ends = self.offsets[lists], self.offsets[lists + 1]
        lengths = ends - starts
        total = len(scores)
        if total < k:
            return None
        if norms is None and allowed is None:
            # Only the best candidates' rows are looked up: for all of them (thousands) the
            # lookup cost a quarter of the search.
            rows_of = functools.partial(self._rows_at, starts, lengths)
            return self._best(scores, k, exclude, rows_of)
        # Every position of the probed clusters, without a Python loop over the clusters.
        positions = (starts - (lengths.cumsum() - lengths)).repeat(lengths)
        positions += np.arange(total)
        rows = self.rows[positions]
        if norms is not None:
            ordered = self._norms_in_order if norms is self._item_norms else None
            scores /= norms[rows] if ordered is None else ordered[positions]
        if allowed is not None:
            keep = allowed[rows]
            if int(np.count_nonzero(keep)) < k:
                return None
            rows, scores = rows[keep], scores[keep]
        return self._best(scores, k, exclude, rows.__getitem__)

    def _rows_at(self, starts: Rows, lengths: Rows, picks: Rows) -> NDArray[np.int32]:
        """The item rows of candidates ``picks`` (positions in the probed clusters' scores)."""
        cluster_ends = lengths.cumsum()
        which = cluster_ends.searchsorted(picks, side="right")
        return self.rows[starts[which] + picks - (cluster_ends[which] - lengths[which])]

    @staticmethod
    def _best(
        scores: Scores, k: int, exclude: Rows | None, rows_of: Callable[[Rows], NDArray[Any]]
    ) -> tuple[Rows, Scores] | None:
        """The ``k`` best candidates that are not excluded; ``rows_of(picks)``: their rows."""
        # Excluded items (what the customer bought) are dropped from the best k + |exclude|, not
        # looked up among all the candidates: that many best always hold k that are not excluded.
        excluded = 0 if exclude is None else len(exclude)
        want = min(k + excluded, len(scores))
        part = largest(scores, want)
        order = part[(-scores[part]).argsort(kind="stable")]
        rows = rows_of(order)
        if excluded:
            kept = ~among(rows, exclude)  # type: ignore[arg-type]
            order, rows = order[kept], rows[kept]
        if len(order) < k:
            return None
        return rows[:k].astype(np.int64), scores[order[:k]].astype(np.float32)


def cluster_radii(
    clusters: list[NDArray[np.float32]], centroids: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Each cluster's largest distance from its centroid (0 for an empty cluster)."""
    radii = np.zeros(len(centroids), dtype=np.float32)
    for i, members in enumerate(clusters):
        if len(members):
            radii[i] = np.sqrt(float(((members - centroids[i]) ** 2).sum(axis=1).max()))
    return radii


def among(rows: Rows, others: Rows) -> NDArray[np.bool_]:
    """``np.isin(rows, others)`` for item rows, by the fastest way for the sizes a request has.

    Measured here against 330 excluded items (a grocery customer's purchases): isin's sort
    51 µs, a broadcast compare 89 µs, a binary search among the sorted others 8 µs for 330 rows;
    for 3,000 rows a table over the item range 27 µs, against 113 (sort) and 155 (search).
    """
    if len(rows) == 0 or len(others) == 0:
        return np.zeros(len(rows), dtype=bool)
    if len(rows) <= _SEARCHED_UP_TO:
        ordered = others.copy()
        ordered.sort()
        at = np.minimum(ordered.searchsorted(rows), len(ordered) - 1)
        return ordered[at] == rows  # type: ignore[no-any-return]
    return np.isin(rows, others, kind="table")


# Up to this many rows, ``among`` binary-searches the sorted others; above, a table.
_SEARCHED_UP_TO = 1024


def _nearest(x: NDArray[np.float32], centroids: NDArray[np.float32]) -> NDArray[np.int64]:
    """The nearest centroid (L2) of each row of ``x``, in chunks to bound memory."""
    c_sq = (centroids**2).sum(axis=1)
    out = np.empty(len(x), dtype=np.int64)
    step = max(1, (1 << 24) // max(len(centroids), 1))
    for start in range(0, len(x), step):
        block = x[start : start + step]
        # |x - c|² = |x|² - 2 x·c + |c|²; |x|² is the same for every c.
        out[start : start + step] = np.argmin(c_sq - 2 * (block @ centroids.T), axis=1)
    return out
