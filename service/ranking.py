"""Pure numpy scoring over one artifact: recommend, similar items, popular items; (rows, scores).

No Redis and no HTTP here. Everything works on row indices of the artifact's (memory-mapped)
arrays; ``item_ids``/``user_ids`` are sorted, so ids are found by binary search.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from service.ann import (
    DEFAULT_NPROBE,
    DEFAULT_NPROBE_SIMILAR,
    RADIUS_WEIGHT,
    AnnConfig,
    IvfIndex,
    among,
    build_index,
)
from service.artifact import FOLDIN_ARRAYS, Artifact
from service.customer_table import answer_from
from service.foldin import LeastSquares, Row, confidences
from service.item_products import ItemProducts, gathered_products
from service.neighbours import History, load_neighbours
from service.offload import guard
from service.similar_table import SIMILAR_KEPT
from service.topk import top_k

log = logging.getLogger(__name__)

# Items per channel kept ranked by popularity (per model and worker: 12 KiB each).
_POPULAR_HEAD = 1000
# Customers whose training-row solution each worker keeps per model (0.25 KiB each at 64
# factors): the customers active right now, whose requests fold in new events. Fewer for models
# with many factors, so the solutions never take more than ``_SOLUTIONS_MAX_BYTES`` (at the 4,160
# of an exactly exported blend, 20,000 would be 317 MiB per worker).
_SOLUTIONS_KEPT = 20_000
_SOLUTIONS_MAX_BYTES = 32 << 20
# For an artifact without a similar-items table: items whose most similar items (``SIMILAR_KEPT``
# each, exact or from the index) each worker keeps per model (0.75 KiB each): the product pages
# being viewed right now.
_SIMILAR_CACHED = 20_000
# Without a table, up to this many items a similar-items list is computed exactly (a first request
# costs under 0.3 ms); above, a first request scanning the catalogue cost too much (1M items:
# 14 ms, 138 req/s for the benchmark's spread of items against 1,956 by the index), so the index
# answers.
_SIMILAR_EXACT_MAX_ITEMS = 50_000

Rows = NDArray[np.int64]
Scores = NDArray[np.float32]
Mask = NDArray[np.bool_]


class _Subset(NamedTuple):
    """Some items: their rows and, with an index, their positions in its copy of the factors."""

    rows: NDArray[np.int32]
    at: NDArray[np.int32] | None
    # Where each of the index's clusters starts in ``at`` (``IvfIndex.subset_bounds``), kept for
    # a category's items; None: found when searched.
    bounds: NDArray[np.int32] | None = None
    # Whether each cluster's share is one run of the index's factors (``IvfIndex.in_runs``).
    runs: bool = False


_NO_ITEMS = _Subset(np.empty(0, np.int32), np.empty(0, np.int32))


class FactorModel:
    """One loaded model version, ready to score. Read-only, so workers and threads share it.

    Large catalogues are scored through an approximate index (``service/ann.py``): the one the
    artifact ships (memory-mapped, shared by all workers) or, for an artifact without one, an index
    built at load in this process. ``ann`` decides when (by catalogue size) and how hard to search.
    """

    def __init__(self, artifact: Artifact, *, ann: AnnConfig | None = None) -> None:
        """Wrap ``artifact``; derives only small per-item vectors (norms), never copies factors."""
        # Plain ndarray views of the memory-mapped files: the same shared pages, without
        # np.memmap's per-indexing overhead (tens of thousands of lookups per second).
        a = {name: _plain(array) for name, array in artifact.arrays.items()}
        self.artifact = artifact
        self._arrays = a
        self.version = artifact.version
        self.user_ids: NDArray[np.bytes_] = a["user_ids"]
        self.item_ids: NDArray[np.bytes_] = a["item_ids"]
        self.user_factors: NDArray[np.float32] = a["user_factors"]
        self.item_factors: NDArray[np.float32] = a["item_factors"]
        self.item_category: NDArray[np.int32] = a["item_category"]
        self.popularity: NDArray[np.float32] = a["item_popularity"]
        self._bought_indptr: NDArray[Any] = a["bought_indptr"]
        self._bought_items: NDArray[Any] = a["bought_items"]
        self._category_names: list[str] = [n.decode("utf-8") for n in a["category_names"].tolist()]
        self.category_codes = {name: code for code, name in enumerate(self._category_names)}
        self._channel_rows = {
            name: row for row, name in enumerate(artifact.manifest.popularity_channels)
        }
        self.fold_in = artifact.manifest.fold_in
        window = artifact.manifest.data_window
        # Events after this are news to the model and get folded into the customer's vector.
        self.trained_until = window.end if window else artifact.manifest.created_at
        # Customers erased at or after this are strangers to the model (CustomerState.stranger_to).
        as_of = artifact.manifest.erasures_as_of
        self.erasures_as_of = as_of.timestamp() if as_of is not None else None
        # For fold-in, computed here (the loader runs off the event loop), not by the first request
        # that folds events in: at a million items that took 1.6-1.9 s on the loop of each of four
        # workers under load (the serving benchmark's p99 was over a second).
        shipped = {name: a[name] for name in FOLDIN_ARRAYS if name in a}
        self.least_squares = LeastSquares(self.item_factors, self.fold_in, shipped)
        self.products = ItemProducts(self.item_factors)
        norms = np.linalg.norm(self.item_factors, axis=1).astype(np.float32)
        # Items without signal have zero vectors; don't divide by zero in similar_items.
        self.item_norms = np.where(norms > 0, norms, np.float32(1e-9))
        # The items of the masks built from them (by the mask's id; dropped when the mask goes),
        # so the exact scoring of a filter never searches a mask for them.
        self._mask_items: dict[int, tuple[weakref.ref[Mask], _Subset]] = {}
        self._popular_heads: dict[int, tuple[Rows, Scores]] = {}
        self._overall_popularity_max = max(float(self.popularity[0].max(initial=0.0)), 1e-9)
        self._solutions: dict[int, NDArray[np.float32]] = {}
        self._solutions_kept = max(
            1,
            min(_SOLUTIONS_KEPT, _SOLUTIONS_MAX_BYTES // (4 * max(self.item_factors.shape[1], 1))),
        )
        self._similar: dict[int, tuple[Rows, Scores]] = {}
        # Each item's exact most similar items, when training shipped the table.
        self._similar_table = (
            (a["similar_rows"], a["similar_scores"]) if "similar_rows" in a else None
        )
        self.ann_config = ann or AnnConfig()
        self.index = self._index(a)
        # Each customer's best items when nothing is new, when training shipped the table. It was
        # ranked with the default search settings: a service told to search otherwise (RECO_ANN,
        # RECO_ANN_MIN_ITEMS, RECO_ANN_NPROBE) ranks live, so its answers follow its settings.
        default = AnnConfig()
        self._customer_table = (
            (a["customer_top_rows"], a["customer_top_scores"])
            if "customer_top_rows" in a
            and self.ann_config.wanted(self.n_items) == default.wanted(self.n_items)
            and (self.ann_config.nprobe, self.ann_config.exact_below)
            == (default.nprobe, default.exact_below)
            else None
        )
        # Each category's items, found here (off the event loop) for all categories at once:
        # 8 bytes per item (a kept mask per category cost one byte per item each: 50 MiB per
        # worker for 50 categories of a million items). Found on a category's first request
        # instead, each cost 1.2-2 ms on the event loop at a million items (46 ms here for 50).
        self._category_items = self._find_categories()
        # The optional sparse item-item component (service/neighbours.py), added to the scores.
        self.neighbours = load_neighbours(a, artifact.manifest.neighbours)

    def _index(self, arrays: Any) -> IvfIndex | None:
        config = self.ann_config
        if not config.wanted(self.n_items):
            return None
        # The probes the shipped index was calibrated for, unless the settings name their own.
        spec = self.artifact.manifest.ann
        nprobe = config.nprobe or (spec.nprobe if spec else DEFAULT_NPROBE)
        nprobe_similar = config.nprobe_similar or (
            spec.nprobe_similar if spec else DEFAULT_NPROBE_SIMILAR
        )
        if "ann_centroids" not in arrays:
            log.warning(
                "model %s has no ANN index: building one in this process (%d items); "
                "ship it in the artifact to share it between workers",
                self.version,
                self.n_items,
            )
            arrays = build_index(self.item_factors, groups=self.item_category)
        return IvfIndex(
            arrays,
            nprobe=nprobe,
            nprobe_similar=nprobe_similar,
            exact_below=config.exact_below,
            item_norms=self.item_norms,
            lean=spec.lean if spec else RADIUS_WEIGHT,
        )

    @property
    def n_items(self) -> int:
        """Number of items in the model's catalogue."""
        return len(self.item_ids)

    def user_row(self, customer_id: str) -> int | None:
        """The row of ``customer_id``, or None for a customer the model has not seen."""
        return _find(self.user_ids, customer_id)

    def item_row(self, item_id: str) -> int | None:
        """The row of ``item_id``, or None for an item the model does not know."""
        return _find(self.item_ids, item_id)

    def item_rows(self, item_ids: Iterable[str]) -> Rows:
        """Rows of the known ids among ``item_ids`` (unknown ids are dropped), in input order."""
        rows = self.lookup_items(list(item_ids))
        return rows[rows >= 0]

    def rows_of_encoded(self, encoded: Sequence[bytes]) -> Rows:
        """Rows of the known ids among ``encoded`` (UTF-8), in no particular order.

        For many ids at once (a store's stock): they are sorted first, so the search reads the
        model's ids in one sweep (200,000 ids of a million: 92 ms against 470 ms unsorted).
        """
        found = _find_encoded(self.item_ids, encoded, ordered=True)
        return found[found >= 0]

    def lookup_items(self, item_ids: Sequence[str]) -> Rows:
        """The row of each of ``item_ids``, -1 for ids the model does not know (one search)."""
        return _find_many(self.item_ids, item_ids)

    def item_id(self, row: int) -> str:
        """The id of item ``row``."""
        return bytes(self.item_ids[row]).decode("utf-8")

    def item_ids_of(self, rows: Rows) -> list[str]:
        """The ids of items ``rows`` (one gather for a whole answer)."""
        return [raw.decode("utf-8") for raw in self.item_ids[rows].tolist()]

    def category_of(self, row: int) -> str | None:
        """The category name of item ``row``, if it has one."""
        code = int(self.item_category[row])
        return None if code < 0 else self._category_names[code]

    def categories_of(self, rows: Rows) -> list[str | None]:
        """The category name of each of items ``rows`` (None: no category)."""
        names = self._category_names
        return [None if code < 0 else names[code] for code in self.item_category[rows].tolist()]

    def heaviest_labels(
        self, rows: Rows, weights: NDArray[np.float64], top: int
    ) -> tuple[list[str], list[str]]:
        """The ``top`` categories and brands of items ``rows`` by their summed ``weights``,
        heaviest first; items without one do not count."""
        categories = _heaviest(self.item_category[rows], weights, self._category_names, top)
        codes = self._arrays.get("item_brand")
        if codes is None:
            return categories, []
        names = self._arrays["brand_names"]
        brands = _heaviest(codes[rows], weights, names, top)
        return categories, brands

    def category_set(self, rows: Rows) -> frozenset[str]:
        """The names of the categories items ``rows`` belong to."""
        codes = np.unique(self.item_category[rows]).tolist()
        return frozenset(self._category_names[code] for code in codes if code >= 0)

    def category_name(self, code: int) -> str:
        """The name of category ``code``."""
        return self._category_names[code]

    def title_of(self, row: int) -> str | None:
        """The item's title, if the training data had titles."""
        titles = self._arrays.get("item_titles")
        return None if titles is None else (bytes(titles[row]).decode("utf-8") or None)

    def brand_of(self, row: int) -> str | None:
        """The item's brand, if known."""
        brands = self._arrays.get("item_brand")
        if brands is None or brands[row] < 0:
            return None
        return bytes(self._arrays["brand_names"][brands[row]]).decode("utf-8")

    def price_of(self, row: int) -> float | None:
        """The item's price, if known."""
        prices = self._arrays.get("item_price")
        if prices is None or np.isnan(prices[row]):
            return None
        return float(prices[row])

    def total_price(self, rows: Rows) -> float:
        """The sum of the prices of items ``rows`` (an unknown price counts 0)."""
        prices = self._arrays.get("item_price")
        if prices is None or not len(rows):
            return 0.0
        return float(np.nansum(prices[rows].astype(np.float64)))

    def category_mask(self, category: str, available: Mask | None = None) -> Mask | None:
        """Items in ``category`` (that ``available`` allows, when given); None when the model
        knows no such category."""
        code = self.category_codes.get(category)
        if code is None:
            return None
        items = self._category_items.get(code, _NO_ITEMS)
        if available is not None:
            keep = available[items.rows]
            items = _Subset(items.rows[keep], None if items.at is None else items.at[keep])
        return self._mask_of(items)

    def _find_categories(self) -> dict[int, _Subset]:
        """Every category's items. With an index, in its order and with their positions in its
        cluster-ordered copy of the factors: a category's items sit in runs there (they share
        clusters), which a gather reads about twice as fast as rows spread over the matrix (0.30
        against 0.55 ms for a category of 20,000 items among a million, categories at random).
        """
        index = self.index
        codes = np.asarray(self.item_category)
        if index is not None:
            codes = codes[index.rows]
        order = np.argsort(codes, kind="stable").astype(np.int32)
        found, starts = np.unique(codes[order], return_index=True)
        ends = [*starts[1:].tolist(), len(order)]
        rows = order if index is None else np.asarray(index.rows[order], np.int32)

        def subset(start: int, end: int) -> _Subset:
            if index is None:
                return _Subset(rows[start:end], None)
            at = order[start:end]
            # Cluster bounds only for the categories large enough to be searched (``_from_index``):
            # 8 KiB each at a million items, and a catalogue may have thousands of small ones.
            searched = end - start > index.exact_below
            if not searched:
                return _Subset(rows[start:end], at)
            bounds = index.subset_bounds(at)
            return _Subset(rows[start:end], at, bounds, index.in_runs(at, bounds))

        return {
            code: subset(start, end)
            for code, start, end in zip(found.tolist(), starts.tolist(), ends, strict=True)
            if code >= 0
        }

    def _mask_of(self, items: _Subset) -> Mask:
        """A mask of ``items``, remembered with them (0.05 ms at a million items)."""
        mask = np.zeros(self.n_items, dtype=bool)
        mask[items.rows] = True
        key = id(mask)
        self._mask_items[key] = (weakref.ref(mask), items)
        weakref.finalize(mask, self._mask_items.pop, key, None)
        return mask

    def _remembered(self, allowed: Mask) -> _Subset | None:
        kept = self._mask_items.get(id(allowed))
        return kept[1] if kept is not None and kept[0]() is allowed else None

    def allowed_rows(self, allowed: Mask) -> NDArray[np.int32] | Rows:
        """The rows ``allowed`` lets through, in no particular order: remembered for the masks
        of ``category_mask``, else searched (0.3 ms in a mask of a million items)."""
        items = self._remembered(allowed)
        return items.rows if items is not None else np.flatnonzero(allowed)

    def allowed_count(self, allowed: Mask) -> int:
        """How many items ``allowed`` lets through."""
        items = self._remembered(allowed)
        return len(items.rows) if items is not None else int(np.count_nonzero(allowed))

    def bought_rows(self, user_row: int) -> Rows:
        """Items customer ``user_row`` bought in the training data."""
        start, end = self._bought_indptr[user_row], self._bought_indptr[user_row + 1]
        return np.asarray(self._bought_items[start:end], dtype=np.int64)

    def training_row(self, user_row: int) -> tuple[Rows, NDArray[np.float64]]:
        """The customer's row of the training matrix as (item rows, weights before the transform).

        Artifacts without the matrix give the training purchases, each at the purchase weight.
        """
        a = self.artifact.arrays
        if "user_items_indptr" not in a:
            rows = self.bought_rows(user_row)
            return rows, np.full(len(rows), self.fold_in.event_weights.get("purchase", 1.0))
        start, end = a["user_items_indptr"][user_row], a["user_items_indptr"][user_row + 1]
        values = np.asarray(a["user_items_values"][start:end], dtype=np.float64)
        raw = np.expm1(values) if self.fold_in.transform == "log1p" else values
        return np.asarray(a["user_items_indices"][start:end], dtype=np.int64), raw

    def solutions(self, user_row: int, row: Row) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """The least-squares vectors of the customer's training row and of ``row``, their row
        now (the training row and newer events, after the transform): where fold-in starts from
        and where it goes.

        The first is a pure function of the model and the customer, so it is kept (first in,
        first out) for the customers seen lately: their next request solves one system. A
        customer's first request with new events solves both, through ``solve_pair``: a long
        history's Gram product (most of a solve) is computed once for the two.
        """
        before = self._solutions.get(user_row)
        if before is not None:
            return before, self.least_squares.solve(*row)
        before, after = self.least_squares.solve_pair(self._training_confidences(user_row), row)
        _keep(self._solutions, user_row, before, self._solutions_kept)
        return before, after

    def _training_confidences(self, user_row: int) -> Row:
        return confidences(self.fold_in, *self.training_row(user_row))

    def user_vector(self, user_row: int) -> NDArray[np.float32]:
        """The customer's factor vector."""
        return np.asarray(self.user_factors[user_row])

    def recommend(
        self,
        user_vector: NDArray[np.float32],
        k: int,
        *,
        exclude: Rows | None = None,
        allowed: Mask | None = None,
        history: History | None = None,
    ) -> tuple[Rows, Scores]:
        """The ``k`` best items for ``user_vector``, best first; never excluded or disallowed.

        Exactly ``min(k, items the filters leave)`` items: the index's answer when it finds ``k``
        items passing the filters, else exact scoring of the whole catalogue. A model with a
        sparse item-item component adds its scores of the customer's ``history``.
        """
        if self.neighbours is not None and history is not None and len(history[0]):
            return self.neighbours.recommend(self, user_vector, k, exclude, allowed, history)
        found = self._from_index(user_vector, k, exclude, allowed, None)
        if found is not None:
            return found
        if allowed is not None and self._subset_is_cheaper(allowed):
            return self._exact_subset(user_vector, k, exclude, allowed, None)
        guard(self.n_items)
        scores = self.products.scores(user_vector)
        return top_k(scores, k, exclude=exclude, allowed=allowed)

    def recommend_unchanged(
        self, user_row: int, k: int, *, exclude: Rows | None = None, allowed: Mask | None = None
    ) -> tuple[Rows, Scores] | None:
        """``recommend`` for customer ``user_row`` with no event since training, from the table
        training shipped (``service/customer_table.py``): ``exclude`` must hold what they bought
        in the training data, as the table left it out. None: no table, or it holds fewer than
        ``k`` items the filters leave; rank with ``recommend`` then."""
        if self._customer_table is None:
            return None
        index = self.index
        # Live ranking scores a narrow filter's items exactly; the table's were searched.
        if (
            allowed is not None
            and index is not None
            and index.exact_for(self.allowed_count(allowed), self.n_items)
        ):
            return None
        rows, scores = self._customer_table
        return answer_from(rows[user_row], scores[user_row], k, exclude, allowed)

    def similar_items(
        self, item_row: int, k: int, *, exclude: Rows | None = None, allowed: Mask | None = None
    ) -> tuple[Rows, Scores]:
        """The ``k`` items most similar to ``item_row`` (not itself).

        From the item's best ``SIMILAR_KEPT`` items: the table training shipped (items the same
        customers took, then the nearest by factors: ``service/similar_table.py``) or, by cosine
        of the factors, for an artifact without one, found on the item's first request and kept:
        up to ``_SIMILAR_EXACT_MAX_ITEMS`` items scored over the catalogue, above through the
        index, which finds cosine neighbours of real factors poorly (recall@10 0.757 on
        completejourney's ALS factors). The filters apply to that list; when they leave fewer
        than ``k``, the filtered catalogue is searched.
        """
        head = None
        if k <= SIMILAR_KEPT:
            if self._similar_table is not None:
                head = self._similar_table[0][item_row], self._similar_table[1][item_row]
            elif self.n_items <= _SIMILAR_EXACT_MAX_ITEMS:
                head = self._similar_head(item_row)
            elif self.index is not None:
                head = self._indexed_head(item_row)
        if head is not None:
            rows, scores = head
            keep = np.ones(len(rows), dtype=bool)
            if allowed is not None:
                keep &= allowed[rows]
            if exclude is not None and len(exclude):
                keep &= ~among(rows, exclude)
            # A list holding every other item is the whole answer, however few pass.
            if int(np.count_nonzero(keep)) >= k or len(rows) >= self.n_items - 1:
                found = np.flatnonzero(keep)[: max(k, 0)]
                return rows[found].astype(np.int64), scores[found].astype(np.float32)
        own = np.array([item_row], dtype=np.int64)
        exclude = own if exclude is None else np.concatenate([exclude, own])
        query = np.asarray(self.item_factors[item_row]) / self.item_norms[item_row]
        found = self._from_index(query, k, exclude, allowed, self.item_norms)
        if found is not None:
            return found
        if allowed is not None and self._subset_is_cheaper(allowed):
            return self._exact_subset(query, k, exclude, allowed, self.item_norms)
        return top_k(self._cosine_scores(item_row), k, exclude=exclude, allowed=allowed)

    def _similar_head(self, item_row: int) -> tuple[Rows, Scores]:
        """The exact best ``SIMILAR_KEPT`` items by cosine (kept first in, first out)."""
        head = self._similar.get(item_row)
        if head is None:
            own = np.array([item_row], dtype=np.int64)
            head = top_k(self._cosine_scores(item_row), SIMILAR_KEPT, exclude=own)
            _keep(self._similar, item_row, head, _SIMILAR_CACHED)
        return head

    def _indexed_head(self, item_row: int) -> tuple[Rows, Scores] | None:
        """The index's best ``SIMILAR_KEPT`` items by cosine (kept first in, first out); None
        when its probes hold too few.

        Unfiltered, and under a filter the search would apply to its candidates (stock), the
        same answers as a search per request: a search probes the same clusters whatever ``k``,
        so its best ``k`` (that pass) are the head's first ``k`` (that pass) whenever ``k`` of the
        head pass, and ``similar_items`` searches when fewer do (a head whose probes held fewer
        than ``SIMILAR_KEPT`` comes from the widened search: more clusters, no worse). A
        selective filter (a category) is answered from the head like a shipped table's: an item
        closer than the head's ``k``-th that passes would be among the exact best
        ``SIMILAR_KEPT``. A product page's similar items no longer cost a search per view: at a
        million items the search was most of a request.
        """
        head = self._similar.get(item_row)
        if head is None:
            own = np.array([item_row], dtype=np.int64)
            query = np.asarray(self.item_factors[item_row]) / self.item_norms[item_row]
            head = self._from_index(query, SIMILAR_KEPT, own, None, self.item_norms)
            if head is None:
                return None
            _keep(self._similar, item_row, head, _SIMILAR_CACHED)
        return head

    def _cosine_scores(self, item_row: int) -> Scores:
        """Every item's cosine with ``item_row``, scored exactly (a fresh array)."""
        guard(self.n_items)
        query = np.asarray(self.item_factors[item_row]) / self.item_norms[item_row]
        return self.products.scores(query) / self.item_norms

    def _from_index(
        self,
        query: NDArray[np.float32],
        k: int,
        exclude: Rows | None,
        allowed: Mask | None,
        norms: NDArray[np.float32] | None,
    ) -> tuple[Rows, Scores] | None:
        """The index's answer, or None: no index, or exact scoring is cheaper or needed."""
        index = self.index
        if index is None or k <= 0:
            return None
        if allowed is not None and index.exact_for(self.allowed_count(allowed), self.n_items):
            # A narrow or selective filter: the probes would starve on it. Its kept items (a
            # category's) are searched in the clusters that hold them, when that scores fewer.
            items = self._remembered(allowed)
            if items is not None and items.at is not None and len(items.at) > index.exact_below:
                found = index.search_subset(
                    query,
                    k,
                    items.at,
                    items.rows,
                    items.bounds,
                    exclude=exclude,
                    norms=norms,
                    runs=items.runs,
                )
                if found is not None:
                    return found
            return self._exact_subset(query, k, exclude, allowed, norms)
        return index.search(query, k, exclude=exclude, allowed=allowed, norms=norms)

    def _subset_is_cheaper(self, allowed: Mask) -> bool:
        """Whether exact scoring of just the items ``allowed`` lets through beats scoring every
        item and partitioning around the others.

        Measured here on 64 factors (best 10): a tenth of 10,000 items 32 against 95 µs, of
        100,000 items 0.26 against 1.9 ms; the gather costs more than it saves from about 40%.
        Before, a category at 10,000 items (no index) cost 1.7 times a plain recommendation in
        the serving benchmark: with most scores at -inf the partition found no short cut.
        """
        return self.allowed_count(allowed) * 3 <= self.n_items

    def _exact_subset(
        self,
        query: NDArray[np.float32],
        k: int,
        exclude: Rows | None,
        allowed: Mask,
        norms: NDArray[np.float32] | None,
    ) -> tuple[Rows, Scores]:
        items = self._remembered(allowed)
        rows = items.rows if items is not None else np.flatnonzero(allowed)
        guard(len(rows))
        if items is not None and items.at is not None and self.index is not None:
            scores = gathered_products(self.index.factors, items.at, query)
        else:
            scores = self.products.scores_of(rows, query)
        if norms is not None:
            scores = scores / np.take(norms, rows)
        # The excluded items are dropped from the best k + |exclude|, which always hold the k
        # best of the others: looking all the subset's rows up among them cost more than the
        # scoring (np.isin over 20,000 rows of a million items: a quarter of a millisecond).
        excluded = 0 if exclude is None else len(exclude)
        found, found_scores = top_k(scores.astype(np.float32), k + excluded)
        found_rows = rows[found].astype(np.int64)
        if excluded:
            kept = ~among(found_rows, exclude)  # type: ignore[arg-type]
            found_rows, found_scores = found_rows[kept][:k], found_scores[kept][:k]
        return found_rows, found_scores

    def popular(
        self, channel: str, k: int, *, exclude: Rows | None = None, allowed: Mask | None = None
    ) -> tuple[Rows, Scores]:
        """The ``k`` most popular items on ``channel`` (overall for a channel without data)."""
        row = self._channel_rows.get(channel, 0)
        head, head_scores = self._popular_head(row)
        # The channel's most popular items, scored once per model: most answers come from them.
        keep = np.ones(len(head), dtype=bool)
        if allowed is not None:
            keep &= allowed[head]
        if exclude is not None and len(exclude):
            keep &= ~among(head, exclude)
        if int(np.count_nonzero(keep)) >= k or len(head) == self.n_items:
            found = np.flatnonzero(keep)[: max(k, 0)]
            return head[found], head_scores[found]
        subset = self._remembered(allowed) if allowed is not None else None
        if subset is not None:
            # A category's own items (found at load), in row order as a scan would see them: its
            # most popular without scoring the catalogue (at a million items a scan took a worker
            # thread for milliseconds, for every unknown customer asking within a category).
            rows = np.sort(subset.rows).astype(np.int64)
            scores = self._popular_scores(row, rows)
            if exclude is not None and len(exclude):
                scores[among(rows, exclude)] = -np.inf
            found, found_scores = top_k(scores, k)
            return rows[found], found_scores
        guard(self.n_items)
        return top_k(self._popular_scores(row), k, exclude=exclude, allowed=allowed)

    def _popular_scores(self, row: int, rows: Rows | None = None) -> Scores:
        """Popularity on channel ``row`` of every item, or of ``rows``."""

        def of(channel: int) -> NDArray[np.float32]:
            values = self.popularity[channel]
            return values if rows is None else np.take(values, rows)

        scores = np.array(of(row), dtype=np.float32)
        if row != 0:
            # Break ties (and fill channels with sparse data) with overall popularity.
            scores += 1e-6 * of(0) / self._overall_popularity_max
        return scores

    def _popular_head(self, row: int) -> tuple[Rows, Scores]:
        head = self._popular_heads.get(row)
        if head is None:
            guard(self.n_items)
            # A dict assignment: two threads racing both compute the same head.
            head = top_k(self._popular_scores(row), _POPULAR_HEAD)
            self._popular_heads[row] = head
        return head

    def closest(self, item_rows: Rows, basis: Rows) -> Rows:
        """For each of ``item_rows``, the row in ``basis`` with the most similar factors."""
        if len(basis) == 0 or len(item_rows) == 0:
            return np.full(len(item_rows), -1, dtype=np.int64)
        # Each row's best basis item by cosine: dividing a row by its own norm would not change
        # which basis item is best, so only the basis is normalised.
        b = self.item_factors[basis] / self.item_norms[basis, None]
        return basis[(self.item_factors[item_rows] @ b.T).argmax(axis=1)]


def _heaviest(
    codes: NDArray[np.integer], weights: NDArray[np.float64], names: Any, top: int
) -> list[str]:
    """The names of the ``top`` codes (-1: none) with the largest summed weights; ties go to the
    lower code (``artifact.pack`` numbers names in sorted order, so to the first name)."""
    known = codes >= 0
    present, inverse = np.unique(codes[known], return_inverse=True)
    sums = np.bincount(inverse, weights=weights[known], minlength=len(present))
    # Only the winners' names are read: a grocery history holds hundreds of brands.
    best = np.lexsort((present, -sums))[:top]
    return [_label(names[code]) for code in present[best].tolist()]


def _label(name: Any) -> str:
    return name if isinstance(name, str) else bytes(name).decode("utf-8")


def _keep(cache: dict[int, Any], key: int, value: Any, limit: int) -> None:
    """``cache[key] = value``, first dropping the oldest entry when ``cache`` holds ``limit``."""
    if len(cache) >= limit:
        # Another thread may change the dict meanwhile: then skip this eviction.
        with contextlib.suppress(RuntimeError, StopIteration):
            cache.pop(next(iter(cache)), None)
    cache[key] = value


def _plain(array: NDArray[Any]) -> NDArray[Any]:
    return array.view(np.ndarray) if isinstance(array, np.memmap) else array


def _find_many(ids: NDArray[np.bytes_], keys: Sequence[str]) -> Rows:
    """``_find`` for many keys in one binary search (a few µs, not a few µs per key)."""
    return _find_encoded(ids, [k.encode("utf-8") for k in keys])


def _find_encoded(ids: NDArray[np.bytes_], encoded: Sequence[bytes], ordered: bool = False) -> Rows:
    """``_find_many`` for UTF-8 ``encoded`` keys. ``ordered``: a row per key that could be an
    id, in the keys' sorted order, not theirs: sorted keys are searched in one sweep."""
    if not len(encoded) or not len(ids):
        return np.full(len(encoded), -1, dtype=np.int64)
    # Ids longer than the array holds are unknown (numpy would silently truncate them), and so
    # are empty ids and ids ending in NUL (numpy would strip it).
    size = ids.dtype.itemsize
    fits = [0 < len(raw) <= size and raw[-1] != 0 for raw in encoded]
    if ordered:
        wanted = np.array([raw for raw, ok in zip(encoded, fits, strict=True) if ok], ids.dtype)
        wanted.sort()
        fits = [True]
    else:
        wanted = np.array(
            [raw if ok else b"\x00" for raw, ok in zip(encoded, fits, strict=True)], ids.dtype
        )
    # A key past the last id lands on len(ids): clipped, it compares unequal like any miss.
    pos = np.minimum(ids.searchsorted(wanted), len(ids) - 1)
    found = np.where(ids[pos] == wanted, pos, -1)
    if not all(fits):
        found[~np.asarray(fits)] = -1
    return found.astype(np.int64, copy=False)


def _find(ids: NDArray[np.bytes_], key: str) -> int | None:
    raw = key.encode("utf-8")
    if not raw or len(raw) > ids.dtype.itemsize or len(ids) == 0:
        return None
    pos = int(ids.searchsorted(raw))
    if pos < len(ids) and bytes(ids[pos]) == raw:
        return pos
    return None
