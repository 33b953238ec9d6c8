"""One period of an experiment: fit data for the past, targets for what came next, and scoring.

A ``Period`` holds what every model is fitted on (``Data``) and the customers and items of the
following period to rank for, overall and per channel. Scoring ranks as production does: the
customer's already-bought items are excluded before the top k is taken.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from numpy.typing import NDArray

from training import evaluate, matrix
from training.config import TrainConfig
from training.models.base import Data, Fitted
from training.models.hybrid import attribute_matrix, item_feature_matrix, user_feature_matrix


@dataclass(frozen=True)
class SideInfo:
    """What the data has besides events: item metadata and customer attributes, by id."""

    items: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    customers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Targets:
    """Customers to rank for and, for each, the items they newly bought afterwards."""

    customers: NDArray[np.int64]
    relevant: list[set[int]]


@dataclass(frozen=True)
class Period:
    """Fit on ``data``; rank for ``overall`` and ``by_channel`` targets."""

    data: Data
    overall: Targets
    by_channel: dict[str, Targets]
    item_counts: NDArray[np.float64]


def make_data(
    events: pa.Table, config: TrainConfig, side: SideInfo, *, end: datetime | None = None
) -> Data:
    """The fit data of ``events``: confidence matrix, purchases, item and customer features."""
    end = end or matrix.window(events)[1]
    interactions = matrix.build(events, config.weights, end=end)
    indptr, items = matrix.bought(events, interactions)
    bought = sp.csr_matrix(
        (np.ones(len(items), np.float32), items, indptr), shape=interactions.shape
    )
    # What production leaves out of an answer at the period's end: the cart as well.
    excluded = ((bought + matrix.carted(events, interactions, end=end)) > 0).astype(np.float32)
    ids = interactions.item_ids.tolist()
    meta = [side.items.get(i, {}) for i in ids]
    described = _described(meta)
    attributes = attribute_matrix(*described)
    # An item its customers only ever rated low is left out of the matrix, but it is no launch
    # to score from its features either: it is known, and was not wanted.
    low = events.filter(pa.array(matrix.rated_low(events, config.weights.relevant_rating)))
    known = set(ids) | set(pc.unique(low["item_id"]).to_pylist())
    cold_ids = tuple(sorted(i for i in side.items if i not in known))
    cold = attribute_matrix(*_described([side.items[i] for i in cold_ids]), like=described)
    # Only items the features describe can be scored from them.
    described_rows = np.flatnonzero(np.diff(cold.indptr) > 0)
    cold_ids, cold = tuple(cold_ids[r] for r in described_rows), cold[described_rows]
    return Data(
        events=events,
        interactions=interactions,
        excluded=excluded.tocsr(),
        end=end,
        weights=config.weights,
        item_features=item_feature_matrix(attributes),
        item_attributes=attributes,
        user_features=user_feature_matrix(
            channel_share(events, interactions),
            customer_attributes(interactions.customer_ids.tolist(), side.customers),
        ),
        seed=config.seed,
        cold_item_ids=cold_ids,
        cold_attributes=cold,
    )


def _described(
    meta: list[Mapping[str, Any]],
) -> tuple[list[str | None], list[str | None], list[float | None]]:
    """Categories, brands and prices of items with metadata ``meta``."""
    return (
        [m.get("category") for m in meta],
        [m.get("brand") for m in meta],
        [m.get("price") for m in meta],
    )


def channel_share(events: pa.Table, interactions: matrix.Interactions) -> NDArray[np.float32]:
    """Customers x channels present: the share of each customer's item events per channel."""
    rows = matrix.positions(events["customer_id"], interactions.customer_ids)
    # Codes from Arrow, not a dict look-up per event (a Python string per event: 31.8M at H&M).
    names = sorted(pc.unique(events["channel"]).to_pylist())
    cols = matrix.positions(events["channel"], np.array(names, dtype=object))
    ok = rows >= 0
    counts = np.zeros((interactions.shape[0], len(names)), dtype=np.float32)
    np.add.at(counts, (rows[ok], cols[ok]), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    return counts / np.where(totals > 0, totals, 1.0)


def customer_attributes(
    customer_ids: list[str], customers: Mapping[str, Mapping[str, str]]
) -> sp.csr_matrix:
    """Customers x one-hots of their attribute values (``age=45-54``...); none: 0 columns."""
    values = [
        [f"{k}={v}" for k, v in customers.get(c, {}).items() if v not in (None, "")]
        for c in customer_ids
    ]
    names = sorted({v for row in values for v in row})
    code = {v: i for i, v in enumerate(names)}
    rows = [r for r, row in enumerate(values) for _ in row]
    cols = [code[v] for row in values for v in row]
    return sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(customer_ids), len(names))
    )


def make_period(past: pa.Table, future: pa.Table, config: TrainConfig, side: SideInfo) -> Period:
    """Fit data of ``past`` and the targets of ``future``, overall and per channel."""
    data = make_data(past, config, side)
    min_rating = config.weights.relevant_rating
    overall = Targets(*evaluate.test_targets(data.interactions, data.excluded, future, min_rating))
    by_channel = {}
    for channel in sorted(set(pc.unique(future["channel"]).to_pylist())):
        found = Targets(
            *evaluate.test_targets(data.interactions, data.excluded, future, min_rating, channel)
        )
        if len(found.customers):
            by_channel[channel] = found
    counts = np.asarray((data.interactions.matrix > 0).sum(axis=0), dtype=np.float64).ravel()
    return Period(data=data, overall=overall, by_channel=by_channel, item_counts=counts)


def checked_period(
    past: pa.Table, future: pa.Table, config: TrainConfig, side: SideInfo, what: str
) -> Period:
    """``make_period``, refusing a ``past`` with nothing to learn from and a ``future`` (the
    ``what``: "validation period"...) without a customer to evaluate.

    Raises:
        evaluate.SplitError: one of the two (the message says which).
    """
    if not (matrix.event_weights(past, config.weights, matrix.window(past)[1]) > 0).any():
        raise evaluate.SplitError(f"no event before the {what} has a positive weight")
    period = make_period(past, future, config, side)
    if len(period.overall.customers) == 0:
        raise evaluate.SplitError(f"the {what} has no customer to evaluate")
    return period


def score(
    fitted: Fitted, period: Period, k: int, *, targets: Targets | None = None, exact: bool = False
) -> evaluate.Metrics:
    """Metrics of ``fitted`` on ``targets`` (default: all of the period's), already-bought excluded.

    ``exact`` scores with the model's own scores instead of its exported factors, where it has
    them (EASE, item-item), to measure what the export costs.
    """
    t = targets or period.overall
    scorer = fitted.exact if exact and fitted.exact is not None else fitted.scores
    rankings = evaluate.rank(scorer, t.customers, period.data.excluded, k)
    return evaluate.summarise(
        rankings, t.relevant, k, period.data.shape[1], item_counts=period.item_counts
    )


def report(fitted: Fitted, period: Period, k: int) -> dict[str, Any]:
    """Overall and per-channel metrics of ``fitted`` as plain data for the manifest.

    A customer's ranking does not depend on the channel whose targets it is measured against,
    so each customer is ranked once for all the reports (ranking is most of this stage's time:
    a customer's scores over the whole catalogue).
    """
    targets = [period.overall, *period.by_channel.values()]
    customers = np.unique(np.concatenate([t.customers for t in targets]))
    ranked = evaluate.rank(fitted.scores, customers, period.data.excluded, k)
    ranking_of = dict(zip(customers.tolist(), ranked, strict=True))

    def metrics(t: Targets) -> Any:
        rankings = [ranking_of[c] for c in t.customers.tolist()]
        return msgspec.to_builtins(
            evaluate.summarise(
                rankings, t.relevant, k, period.data.shape[1], item_counts=period.item_counts
            )
        )

    result: dict[str, Any] = metrics(period.overall)
    result["by_channel"] = {ch: metrics(t) for ch, t in period.by_channel.items()}
    result["fit_s"] = round(fitted.fit_s, 3)
    return result


def capped(period: Period, limit: int, seed: int) -> Period:
    """``period`` with at most ``limit`` customers ranked overall and per channel (seeded)."""
    return dataclasses.replace(
        period,
        overall=subsample(period.overall, limit, seed),
        by_channel={ch: subsample(t, limit, seed) for ch, t in period.by_channel.items()},
    )


def subsample(targets: Targets, limit: int, seed: int) -> Targets:
    """At most ``limit`` of the customers (seeded), to keep tuning cheap."""
    if len(targets.customers) <= limit:
        return targets
    keep = np.sort(np.random.default_rng(seed).choice(len(targets.customers), limit, replace=False))
    return Targets(targets.customers[keep], [targets.relevant[i] for i in keep])
