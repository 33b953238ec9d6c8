"""Events to the customer-item confidence matrix: weights per event type and channel, time decay.

Everything is vectorised over the columns of the events table (pyarrow in, numpy and scipy out),
so building the matrix stays linear in the number of events and takes seconds for millions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from numpy.typing import NDArray

from service.events import CHANNELS, CONSUMED_EVENT_TYPES, EVENT_TYPES
from training.config import Weights

_US_PER_DAY = 86_400 * 1_000_000


@dataclass(frozen=True)
class Interactions:
    """A customers x items matrix of confidences, with the ids of its rows and columns."""

    matrix: sp.csr_matrix
    customer_ids: NDArray[np.object_]
    item_ids: NDArray[np.object_]

    @property
    def shape(self) -> tuple[int, int]:
        """(customers, items)."""
        return self.matrix.shape  # type: ignore[no-any-return]


def window(table: pa.Table) -> tuple[datetime, datetime]:
    """The first and last event time of ``table`` (which must not be empty)."""
    bounds = pc.min_max(table["timestamp"])
    return bounds["min"].as_py(), bounds["max"].as_py()


def with_data_scale(weights: Weights, table: pa.Table) -> Weights:
    """``weights`` with the rating scale of ``table``'s ratings when the config sets none: their
    99.9th percentile (the highest rating, unless a stray few lie above it); unchanged when the
    events hold no positive rating.

    Raises:
        ValueError: the configured ``min_relevant_rating`` is above the data's highest rating.
    """
    if weights.rating_scale is not None:
        return weights
    rating = pc.drop_null(table["rating"].cast(pa.float64()))
    rating = rating.filter(pc.invert(pc.is_nan(rating)))
    if not len(rating):
        return weights
    highest = pc.quantile(rating, q=0.999, interpolation="higher")[0].as_py()
    if not highest > 0:
        return weights
    # Raises (``Weights.__post_init__``) when the configured threshold is above it.
    return msgspec.structs.replace(weights, rating_scale=float(highest))


def event_weights(table: pa.Table, weights: Weights, end: datetime) -> NDArray[np.float64]:
    """The weight of every event row: type x channel x decay (x rating for ratings)."""
    type_weight = _lookup(table["event_type"], EVENT_TYPES, weights.event_types)
    channel_weight = _lookup(table["channel"], CHANNELS, weights.channels)
    w = type_weight * channel_weight
    if weights.half_life_days > 0:
        ts = _micros(table["timestamp"])
        age_days = (np.int64(end.timestamp() * 1_000_000) - ts) / _US_PER_DAY
        w *= np.power(0.5, np.maximum(age_days, 0) / weights.half_life_days)
    rating = table["rating"].to_numpy(zero_copy_only=False).astype(np.float64)
    is_rating = ~np.isnan(rating)
    w[is_rating] *= rating[is_rating] / weights.scale
    # A low rating is no evidence that the customer wants the item (a 1-star 0.2 would be).
    w[rated_low(table, weights.relevant_rating)] = 0.0
    # Rows without an item (email opens) never enter the matrix.
    w[table["item_id"].is_null().to_numpy(zero_copy_only=False)] = 0.0
    return w


def rated_low(table: pa.Table, min_rating: float) -> NDArray[np.bool_]:
    """Events carrying a rating below ``min_rating``: the customer does not want the item.

    Events without a rating (purchases, a rating event without its value) are never low.
    """
    rating = table["rating"].to_numpy(zero_copy_only=False).astype(np.float64)
    return rating < min_rating  # NaN (no rating) compares False


# Events whose weight is below this share of the largest are left out of the matrix. A short
# half-life over years of events (a 2-day one on MovieLens' 22 years) gives the oldest weights
# like 1e-50: 0 in the matrix's float32, or a square of 0 when cosine similarity normalises
# them, and itemknn's factors came out NaN (`fit` failed). They carry nothing beside the newest.
MIN_RELATIVE_WEIGHT = 1e-9


def build(table: pa.Table, weights: Weights, *, end: datetime | None = None) -> Interactions:
    """The confidence matrix of ``table``; customers and items without positive weight are left out
    (and events weighing less than ``MIN_RELATIVE_WEIGHT`` of the heaviest).

    Args:
        table: events in the loaders' normalised schema.
        weights: event type and channel weights, decay and transform.
        end: the time decay is measured back from here (default: the last event).
    """
    if end is None:
        end = window(table)[1]
    w = event_weights(table, weights, end)
    keep = w > 0
    if keep.any():
        keep &= w >= w.max() * MIN_RELATIVE_WEIGHT
    kept = table.filter(pa.array(keep))
    customers, customer_ids = _codes(kept["customer_id"])
    items, item_ids = _codes(kept["item_id"])
    matrix = sp.coo_matrix(
        (w[keep].astype(np.float32), (customers, items)), shape=(len(customer_ids), len(item_ids))
    ).tocsr()  # duplicates (several events on one cell) are summed here
    matrix.sum_duplicates()
    if weights.transform == "log1p":
        matrix.data = np.log1p(matrix.data).astype(np.float32)
    return Interactions(matrix=matrix, customer_ids=customer_ids, item_ids=item_ids)


def bought(
    table: pa.Table, interactions: Interactions
) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """CSR rows (customers of ``interactions``) of the items each customer bought (or rated, low
    ratings too: production never shows a customer what they rated, liked or not)."""
    rows, cols, _, _ = _purchases(table, interactions)
    rows, cols = rows[cols >= 0], cols[cols >= 0]
    shape = interactions.shape
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    return m.indptr.astype(np.int64), m.indices.astype(np.int32)


# How long a cart lasts without a new item in it: the service's cart expires with the customer's
# recent events (``RECO_RECENT_EVENTS_TTL_DAYS``, default 90).
CART_DAYS = 90.0
_CART_EVENTS = pa.array(["add_to_cart", "remove_from_cart", "purchase"])


def carted(table: pa.Table, interactions: Interactions, *, end: datetime) -> sp.csr_matrix:
    """Customers x items, 1 for the items in a customer's cart at ``end``, as the service keeps
    it: an item's last cart event is an add (a purchase or a removal takes it out), and the
    customer added something within ``CART_DAYS`` before ``end`` (else the cart expired)."""
    shape = interactions.shape
    events = table.filter(pc.is_in(table["event_type"], value_set=_CART_EVENTS))
    rows = positions(events["customer_id"], interactions.customer_ids)
    cols = positions(events["item_id"], interactions.item_ids)
    ok = (rows >= 0) & (cols >= 0)
    if not ok.any():
        return sp.csr_matrix(shape, dtype=np.float32)
    added = pc.equal(events["event_type"], "add_to_cart").to_numpy(zero_copy_only=False)[ok]
    rows, cols, ts = rows[ok], cols[ok], _micros(events["timestamp"])[ok]
    # The cart lives while its customer keeps adding to it.
    last_add = np.full(shape[0], np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last_add, rows[added], ts[added])
    end_micros = int((end - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6)
    alive = last_add >= end_micros - int(CART_DAYS * 86_400e6)
    # Each (customer, item) pair's last cart event; at equal times a purchase outranks an add.
    pair = rows * shape[1] + cols
    order = np.lexsort((~added, ts, pair))
    last = np.ones(len(order), dtype=bool)
    last[:-1] = pair[order][1:] != pair[order][:-1]
    rows, cols, added = rows[order][last], cols[order][last], added[order][last]
    keep = added & alive[rows]
    return sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])), shape=shape
    )


def adoptions(
    table: pa.Table,
    interactions: Interactions,
    *,
    end: datetime,
    half_life_days: float,
    settle_days: float,
    min_rating: float,
) -> NDArray[np.float64]:
    """Per item: customers who bought it for the first time, each decayed by that first purchase's
    age (``half_life_days``; 0: no decay). A rating below ``min_rating`` is no adoption.

    Only a settled customer's first purchase counts: one made at least ``settle_days`` after the
    customer's own first purchase. A customer's first baskets (and any customer at the start of
    the data's window, where every purchase looks like a first one) are arrival, not adoption.
    """
    rows, cols, ts, low = _purchases(table, interactions, min_rating)
    n_customers, n_items = interactions.shape
    # A customer arrives with their first purchase or rating, a low one too.
    arrived = np.full(n_customers, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(arrived, rows, ts)
    adopted = ~low & (cols >= 0)
    rows, cols, ts = rows[adopted], cols[adopted], ts[adopted]
    if not len(rows):
        return np.zeros(n_items, dtype=np.float64)
    # Each (customer, item) pair's earliest purchase: sort by pair, then time; keep the first.
    pair = rows * n_items + cols
    order = np.lexsort((ts, pair))
    first = np.ones(len(order), dtype=bool)
    first[1:] = pair[order][1:] != pair[order][:-1]
    rows, cols, ts = rows[order][first], cols[order][first], ts[order][first]
    settled = ts - arrived[rows] >= np.int64(settle_days * _US_PER_DAY)
    w = np.ones(int(settled.sum()), dtype=np.float64)
    if half_life_days > 0:
        age_days = (np.int64(end.timestamp() * 1_000_000) - ts[settled]) / _US_PER_DAY
        w = np.power(0.5, np.maximum(age_days, 0) / half_life_days)
    return np.bincount(cols[settled], weights=w, minlength=n_items)


def popularity(
    table: pa.Table, interactions: Interactions, weights: Weights, *, end: datetime | None = None
) -> dict[str, NDArray[np.float32]]:
    """Decayed weighted popularity of every item, overall (``"all"``) and per channel present."""
    if end is None:
        end = window(table)[1]
    w = event_weights(table, weights, end)
    cols = positions(table["item_id"], interactions.item_ids)
    ok = (cols >= 0) & (w > 0)
    # Channel codes from Arrow: an object array of every event's channel string cost a Python
    # string per event and a comparison of them per channel.
    names = np.array(sorted(pc.unique(table["channel"]).to_pylist()), dtype=object)
    channels = positions(table["channel"], names)
    n = len(interactions.item_ids)
    result = {"all": np.bincount(cols[ok], weights=w[ok], minlength=n).astype(np.float32)}
    for code in np.unique(channels[ok]):
        sel = ok & (channels == code)
        result[str(names[code])] = np.bincount(cols[sel], weights=w[sel], minlength=n).astype(
            np.float32
        )
    return result


def _purchases(
    table: pa.Table, interactions: Interactions, min_rating: float = -np.inf
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """Customer row, item column (-1 for an item ``interactions`` lacks: one only rated low), time
    (µs) and whether it is ``rated_low`` (below ``min_rating``) of every purchase (or rating) of a
    customer ``interactions`` has."""
    consumed = pa.array(sorted(CONSUMED_EVENT_TYPES))
    purchases = table.filter(pc.is_in(table["event_type"], value_set=consumed))
    rows = positions(purchases["customer_id"], interactions.customer_ids)
    cols = positions(purchases["item_id"], interactions.item_ids)
    ok = rows >= 0
    low = rated_low(purchases, min_rating)
    return rows[ok], cols[ok], _micros(purchases["timestamp"])[ok], low[ok]


def _lookup(
    column: pa.ChunkedArray, vocabulary: tuple[str, ...], table: dict[str, float]
) -> NDArray[np.float64]:
    index = pc.index_in(column, value_set=pa.array(vocabulary)).to_numpy(zero_copy_only=False)
    values = np.array([table.get(v, 0.0) for v in vocabulary] + [0.0], dtype=np.float64)
    # index_in gives null (NaN here) for values outside the vocabulary: they weigh 0.
    index = np.where(np.isnan(index.astype(np.float64)), len(vocabulary), index).astype(np.int64)
    return values[index]


def _micros(column: pa.ChunkedArray) -> NDArray[np.int64]:
    return (
        pc.cast(column, pa.timestamp("us", tz="UTC"))
        .cast(pa.int64())
        .to_numpy(zero_copy_only=False)
    )


def _codes(column: pa.ChunkedArray) -> tuple[NDArray[np.int64], NDArray[np.object_]]:
    """Dense integer codes of an id column, numbered in order of first appearance, and the
    distinct values (hash-based for strings; a dictionary column's own codes renumbered)."""
    if pa.types.is_dictionary(column.type):
        coded = _combined(column)
        given = coded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        present, first = np.unique(given, return_index=True)
        order = present[np.argsort(first)]
        renumbered = np.empty(len(coded.dictionary), dtype=np.int64)
        renumbered[order] = np.arange(len(order))
        return renumbered[given], np.array(coded.dictionary.take(order).to_pylist(), dtype=object)
    encoded = pc.dictionary_encode(_combined(column))
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, np.array(encoded.dictionary.to_pylist(), dtype=object)


def positions(column: pa.ChunkedArray, ids: NDArray[np.object_]) -> NDArray[np.int64]:
    """Position of each value of ``column`` in ``ids``, -1 where absent (or null)."""
    value_set = pa.array(ids.tolist(), type=pa.string())
    if not pa.types.is_dictionary(column.type):
        found = pc.index_in(column, value_set=value_set)
        return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    # A look-up per distinct value, then one per event by its code.
    coded = _combined(column)
    found = pc.fill_null(pc.index_in(coded.dictionary, value_set=value_set), -1)
    at = np.append(found.to_numpy(zero_copy_only=False).astype(np.int64), -1)  # -1: null
    codes = pc.fill_null(coded.indices, len(coded.dictionary))
    return at[codes.to_numpy(zero_copy_only=False)]


def _combined(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


# The columns fitting and evaluation read: the loaders' others (amounts, store, session, request
# and event ids, recorded times) are for validation and erasure, done before.
FIT_COLUMNS = ("customer_id", "item_id", "event_type", "channel", "timestamp", "rating")
_CODED_COLUMNS = ("customer_id", "item_id", "event_type", "channel")


def compact(table: pa.Table) -> pa.Table:
    """``table`` with only ``FIT_COLUMNS``, its ids, event types and channels dictionary-encoded.

    Each string is then held once, not once per event and again in every period's copy: H&M's
    64-character customer ids take 2 GB per copy of its 31.8M events. The dictionaries hold the
    distinct values in sorted order, so sorting by the codes sorts by the values.
    """
    columns = {}
    for name in FIT_COLUMNS:
        column = table[name]
        if name in _CODED_COLUMNS and not pa.types.is_dictionary(column.type):
            values = pc.unique(column).drop_null()
            values = values.take(pc.sort_indices(values))
            codes = pc.index_in(column, value_set=values)
            column = pa.chunked_array(
                [pa.DictionaryArray.from_arrays(c, values) for c in codes.chunks],
                type=pa.dictionary(pa.int32(), column.type),
            )
        columns[name] = column
    return pa.table(columns)
