"""Cold start, measured apart: customers new in the test period, folded in from their first events.

The service folds a new customer's events into a vector at request time (``service.foldin``:
event weights, decay, then implicit's ``recalculate_user`` with the manifest's ``FoldIn``). Here
the same code folds in each new customer's first ``context`` events of the test period; the
targets are the items they bought afterwards (never the ones bought in the context, which the
production filter hides). The fold-in's regularization and alpha are chosen on validation, so
they suit whatever model ships, not only ALS.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import msgspec
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from service.artifact import FoldIn
from service.events import CONSUMED_EVENT_TYPES
from service.foldin import age_in_days, confidences, event_weight, gramian, recalculate_user
from training import evaluate
from training.matrix import Interactions, positions
from training.models.base import Fitted


@dataclass(frozen=True)
class NewCustomer:
    """One customer unknown to training: context events (item rows) and later new purchases."""

    rows: list[int]
    event_types: list[str]
    channels: list[str]
    ages: list[float]
    bought: set[int]
    relevant: set[int]


def new_customers(
    interactions: Interactions, future: pa.Table, context: int = 3
) -> list[NewCustomer]:
    """Customers of ``future`` that ``interactions`` lacks, with ``context`` events and a target."""
    known = positions(future["customer_id"], interactions.customer_ids) >= 0
    items = positions(future["item_id"], interactions.item_ids)
    table = future.filter(pa.array(~known & (items >= 0))).sort_by(
        [("customer_id", "ascending"), ("timestamp", "ascending")]
    )
    rows = positions(table["item_id"], interactions.item_ids).tolist()
    customers = table["customer_id"].to_pylist()
    types = table["event_type"].to_pylist()
    channels = table["channel"].to_pylist()
    times = table["timestamp"].to_pylist()
    found: list[NewCustomer] = []
    start = 0
    for end in range(1, len(customers) + 1):
        if end < len(customers) and customers[end] == customers[start]:
            continue
        case = _case(
            rows[start:end], types[start:end], channels[start:end], times[start:end], context
        )
        if case is not None:
            found.append(case)
        start = end
    return found


def _case(
    rows: list[int], types: list[str], channels: list[str], times: list[datetime], context: int
) -> NewCustomer | None:
    if len(rows) <= context:
        return None
    now = times[context - 1]
    bought = {
        r for r, t in zip(rows[:context], types[:context], strict=True) if t in CONSUMED_EVENT_TYPES
    }
    later = {
        r for r, t in zip(rows[context:], types[context:], strict=True) if t in CONSUMED_EVENT_TYPES
    }
    relevant = later - bought
    if not relevant:
        return None
    return NewCustomer(
        rows=rows[:context],
        event_types=types[:context],
        channels=channels[:context],
        ages=[age_in_days(t, now) for t in times[:context]],
        bought=bought,
        relevant=relevant,
    )


def fold_in_vectors(
    fitted: Fitted, cases: list[NewCustomer], params: FoldIn
) -> NDArray[np.float32]:
    """Each new customer's vector, computed exactly as the service computes it."""
    gram = gramian(fitted.item_factors)
    vectors = np.zeros((len(cases), fitted.item_factors.shape[1]), dtype=np.float32)
    for n, case in enumerate(cases):
        weights = [
            event_weight(params, t, c, a)
            for t, c, a in zip(case.event_types, case.channels, case.ages, strict=True)
        ]
        rows, values = confidences(params, case.rows, weights)
        vectors[n] = recalculate_user(fitted.item_factors, gram, rows, values, params)
    return vectors


def score_cold(
    fitted: Fitted, cases: list[NewCustomer], params: FoldIn, k: int
) -> evaluate.Metrics:
    """Metrics of the folded-in vectors on the new customers' later purchases.

    A model with a sparse item-item component adds its scores of the context events, as the
    service does (``service.neighbours``).
    """
    vectors = fold_in_vectors(fitted, cases, params)
    component = fitted.neighbours.served() if fitted.neighbours is not None else None
    rankings = []
    for n, case in enumerate(cases):
        scores = fitted.item_factors @ vectors[n]
        if component is not None:
            weights = [
                event_weight(params, t, c, a)
                for t, c, a in zip(case.event_types, case.channels, case.ages, strict=True)
            ]
            scores += component.dense(*confidences(params, case.rows, weights))
        scores[list(case.bought)] = -np.inf
        rankings.append(np.argsort(-scores, kind="stable")[:k].tolist())
    return evaluate.summarise(
        rankings, [c.relevant for c in cases], k, fitted.item_factors.shape[0]
    )


def score_cold_popularity(
    popularity: NDArray[np.float32], cases: list[NewCustomer], k: int
) -> evaluate.Metrics:
    """The popularity list for the same new customers (their context purchases hidden)."""
    rankings = []
    for case in cases:
        scores = np.array(popularity, dtype=np.float32)
        scores[list(case.bought)] = -np.inf
        rankings.append(np.argsort(-scores, kind="stable")[:k].tolist())
    return evaluate.summarise(rankings, [c.relevant for c in cases], k, len(popularity))


def fit_fold_in(
    fitted: Fitted, cases: list[NewCustomer], params: FoldIn, k: int, limit: int = 300
) -> tuple[FoldIn, float]:
    """The regularization and alpha of the fold-in that rank ``cases`` best (NDCG@k).

    At most ``limit`` cases are used (seeded sample); single-threaded BLAS, as the solves are
    small and many.
    """
    if not cases:
        return params, 0.0
    if len(cases) > limit:
        pick = np.random.default_rng(0).choice(len(cases), limit, replace=False)
        cases = [cases[i] for i in sorted(pick)]
    with threadpool_limits(limits=1, user_api="blas"):
        best = (params, score_cold(fitted, cases, params, k).ndcg)
        for regularization in (0.1, 1.0, 10.0, 100.0):
            for alpha in (1.0, 10.0, 40.0):
                candidate = msgspec.structs.replace(
                    params, regularization=regularization, alpha=alpha
                )
                ndcg = score_cold(fitted, cases, candidate, k).ndcg
                if ndcg > best[1]:
                    best = (candidate, ndcg)
    return best


def cold_report(
    fitted: Fitted, popularity: Fitted, cases: list[NewCustomer], params: FoldIn, k: int
) -> dict[str, object]:
    """The cold-start section of the report: the model folded in, against popularity."""
    with threadpool_limits(limits=1, user_api="blas"):
        folded = score_cold(fitted, cases, params, k)
    return {
        "customers": len(cases),
        fitted.name: msgspec.to_builtins(folded),
        "popularity": msgspec.to_builtins(
            score_cold_popularity(popularity.item_factors[:, 0], cases, k)
        ),
        "fold_in": {"regularization": params.regularization, "alpha": params.alpha},
    }
