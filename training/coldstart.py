"""Cold start, measured apart: new customers folded in from their first events, and new items.

New items get factors from their attributes: LightFM and content affinity score them natively;
any other model learns a ridge map from the attribute one-hots to its item factors on the items
with events (``from_attributes``), so whatever ships can place a launch it has no events for.

The service folds a new customer's events into a vector at request time (``service.foldin``:
event weights, decay, then implicit's ``recalculate_user`` with the manifest's ``FoldIn``). Here
the same code folds in each new customer's first ``context`` events of the test period; the
targets are the items they bought afterwards (never the ones bought in the context, which the
production filter hides). The fold-in's regularization and alpha are chosen on validation, so
they suit whatever model ships, not only ALS.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from service.artifact import FoldIn
from service.events import CONSUMED_EVENT_TYPES
from service.foldin import LeastSquares, age_in_days, confidences, event_weight
from service.topk import largest
from training import evaluate, matrix
from training.config import TrainConfig
from training.experiment import SideInfo
from training.matrix import Interactions, positions
from training.models import PRIORS
from training.models.base import Data, Fitted


@dataclass(frozen=True)
class NewCustomer:
    """One customer unknown to training: context events (item rows) and later new purchases."""

    rows: list[int]
    event_types: list[str]
    channels: list[str]
    ages: list[float]
    ratings: list[float | None]  # None: the event carries no rating
    excluded: set[int]  # bought or in the cart within the context: never shown
    relevant: set[int]


def new_customers(
    interactions: Interactions, future: pa.Table, min_rating: float, context: int = 3
) -> list[NewCustomer]:
    """Customers of ``future`` that ``interactions`` lacks, with ``context`` events and a target
    (a purchase or a rating of ``min_rating`` or more after them, as ``evaluate.test_targets``)."""
    known = positions(future["customer_id"], interactions.customer_ids) >= 0
    items = positions(future["item_id"], interactions.item_ids)
    table = future.filter(pa.array(~known & (items >= 0)))
    # Ordered by the ids' text (Arrow sorts no dictionary column): the cases' order, and so
    # their seeded samples, whatever the ids' encoding.
    where = table.schema.get_field_index("customer_id")
    table = table.set_column(where, "customer_id", table["customer_id"].cast(pa.string()))
    table = table.sort_by([("customer_id", "ascending"), ("timestamp", "ascending")])
    rows = positions(table["item_id"], interactions.item_ids).tolist()
    customers = table["customer_id"].to_pylist()
    types = table["event_type"].to_pylist()
    channels = table["channel"].to_pylist()
    times = table["timestamp"].to_pylist()
    ratings = [None if r != r else r for r in table["rating"].to_pylist()]  # NaN: none
    wanted = (~matrix.rated_low(table, min_rating)).tolist()
    found: list[NewCustomer] = []
    start = 0
    for end in range(1, len(customers) + 1):
        if end < len(customers) and customers[end] == customers[start]:
            continue
        case = _case(
            rows[start:end],
            types[start:end],
            channels[start:end],
            times[start:end],
            ratings[start:end],
            wanted[start:end],
            context,
        )
        if case is not None:
            found.append(case)
        start = end
    return found


def _case(
    rows: list[int],
    types: list[str],
    channels: list[str],
    times: list[datetime],
    ratings: list[float | None],
    wanted: list[bool],
    context: int,
) -> NewCustomer | None:
    if len(rows) <= context:
        return None
    now = times[context - 1]
    excluded = _left_out(rows[:context], types[:context])
    later = {
        r
        for r, t, w in zip(rows[context:], types[context:], wanted[context:], strict=True)
        if t in CONSUMED_EVENT_TYPES and w
    }
    relevant = later - excluded
    if not relevant:
        return None
    return NewCustomer(
        rows=rows[:context],
        event_types=types[:context],
        channels=channels[:context],
        ages=[age_in_days(t, now) for t in times[:context]],
        ratings=ratings[:context],
        excluded=excluded,
        relevant=relevant,
    )


def _left_out(rows: list[int], types: list[str]) -> set[int]:
    """What the service leaves out after these events: items bought, and items whose last
    cart event is an add (a purchase or a removal takes an item out of the cart)."""
    bought = {r for r, t in zip(rows, types, strict=True) if t in CONSUMED_EVENT_TYPES}
    in_cart: set[int] = set()
    for r, t in zip(rows, types, strict=True):
        if t == "add_to_cart":
            in_cart.add(r)
        elif t in ("remove_from_cart", "purchase"):
            in_cart.discard(r)
    return bought | in_cart


def fold_in_vectors(
    fitted: Fitted, cases: list[NewCustomer], params: FoldIn
) -> NDArray[np.float32]:
    """Each new customer's vector, computed exactly as the service computes it."""
    least_squares = LeastSquares(fitted.item_factors, params)
    vectors = np.zeros((len(cases), fitted.item_factors.shape[1]), dtype=np.float32)
    for n, case in enumerate(cases):
        weights = [
            event_weight(params, t, c, a, r)
            for t, c, a, r in zip(
                case.event_types, case.channels, case.ages, case.ratings, strict=True
            )
        ]
        rows, values = confidences(params, case.rows, weights)
        vectors[n] = least_squares.solve(rows, values)
    return vectors


def score_cold(
    fitted: Fitted, cases: list[NewCustomer], params: FoldIn, k: int
) -> evaluate.Metrics:
    """Metrics of the folded-in vectors on the new customers' later purchases.

    A model with a sparse item-item component adds its scores of the context events, as the
    service does (``service.neighbours``).
    """
    rankings = _rankings(fitted, cases, params, k)
    return evaluate.summarise(
        rankings, [c.relevant for c in cases], k, fitted.item_factors.shape[0]
    )


def _rankings(fitted: Fitted, cases: list[NewCustomer], params: FoldIn, k: int) -> list[list[int]]:
    """Each case's top ``k`` by its folded-in vector (``score_cold``).

    The catalogue is scored for ``_BATCH`` cases at a time (one matrix product instead of one
    matrix-vector product per case) and only each row's ``k`` best are ordered, as
    ``top_k_stable`` orders them: a full sort per case and a product per case took 240 s of a
    13.7-minute fit at 60,000 items and 20,000 new test customers.
    """
    vectors = fold_in_vectors(fitted, cases, params)
    component = fitted.neighbours.served() if fitted.neighbours is not None else None
    rankings = []
    for start in range(0, len(cases), _BATCH):
        block = cases[start : start + _BATCH]
        scores = vectors[start : start + len(block)] @ fitted.item_factors.T
        for row, case in zip(scores, block, strict=True):
            if component is not None:
                weights = [
                    event_weight(params, t, c, a, r)
                    for t, c, a, r in zip(
                        case.event_types, case.channels, case.ages, case.ratings, strict=True
                    )
                ]
                row += component.dense(*confidences(params, case.rows, weights))
            row[list(case.excluded)] = -np.inf
            rankings.append(top_k_stable(row, k).tolist())
    return rankings


# New customers scored together: a block of their scores over a million items is 256 MB.
_BATCH = 64


def top_k_stable(scores: NDArray[np.float32], k: int) -> NDArray[np.intp]:
    """``np.argsort(-scores, kind="stable")[:k]`` without sorting every score: the ``k`` best,
    best first, ties in position order (NaN last)."""
    finite_enough = len(scores) > k and not np.isnan(scores).any()
    if not finite_enough:
        return np.argsort(-scores, kind="stable")[:k]
    kth = scores[largest(scores, k)].min()
    candidates = np.flatnonzero(scores >= kth)  # in position order, so ties stay in it
    return candidates[np.argsort(-scores[candidates], kind="stable")[:k]]


def score_cold_popularity(
    popularity: NDArray[np.float32], cases: list[NewCustomer], k: int
) -> evaluate.Metrics:
    """The popularity list for the same new customers (their context purchases hidden)."""
    rankings = _popular_rankings(popularity, cases, k)
    return evaluate.summarise(rankings, [c.relevant for c in cases], k, len(popularity))


def _popular_rankings(
    popularity: NDArray[np.float32], cases: list[NewCustomer], k: int
) -> list[list[int]]:
    """Each case's ``k`` most popular items but those it excludes: one ranking of the catalogue,
    read past each case's few exclusions (as the stable sort of the scores with them at -inf
    would rank them)."""
    order = np.argsort(-np.asarray(popularity, dtype=np.float32), kind="stable")
    finite = np.isfinite(np.asarray(popularity)[order])
    # Rank (in ``order``) of the first score that is not finite: a list reaching it is checked.
    finite_up_to_rank = int(np.argmin(finite)) if not finite.all() else len(order)
    rank_of = np.empty(len(order), dtype=np.int64)
    rank_of[order] = np.arange(len(order))
    rankings = []
    for case in cases:
        head = order[: k + len(case.excluded)].tolist()
        shown = [i for i in head if i not in case.excluded][:k]
        if len(shown) < k or rank_of[shown[-1]] >= finite_up_to_rank:
            # Fewer finite scores than k besides the exclusions (a catalogue of a few items),
            # where the sort puts the excluded before the NaN: the sort.
            scores = np.array(popularity, dtype=np.float32)
            scores[list(case.excluded)] = -np.inf
            shown = np.argsort(-scores, kind="stable")[:k].tolist()
        rankings.append(shown)
    return rankings


def sampled(cases: list[NewCustomer], limit: int, seed: int = 0) -> list[NewCustomer]:
    """At most ``limit`` of ``cases`` (a seeded sample, in their order)."""
    if len(cases) <= limit:
        return cases
    pick = np.random.default_rng(seed).choice(len(cases), limit, replace=False)
    return [cases[i] for i in sorted(pick)]


def fit_fold_in(
    fitted: Fitted, cases: list[NewCustomer], params: FoldIn, k: int, limit: int = 300
) -> tuple[FoldIn, float]:
    """The regularization and alpha of the fold-in that rank ``cases`` best (NDCG@k).

    At most ``limit`` cases are used (seeded sample); single-threaded BLAS, as the solves are
    small and many.
    """
    if not cases:
        return params, 0.0
    cases = sampled(cases, limit)
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


# Context sizes (a new customer's first events) at which the fold-in is weighed against
# popularity, and the fewest new customers a comparison needs to count: with fewer, the fold-in
# stands (completejourney's test period holds 6 new customers).
POLICY_CONTEXTS = (1, 2, 3, 5, 8)
POLICY_MIN_CASES = 30


def new_customer_policy(
    fitted: Fitted,
    popularity: NDArray[np.float32],
    interactions: Interactions,
    future: pa.Table,
    params: FoldIn,
    min_rating: float,
    k: int,
    limit: int = 300,
) -> tuple[FoldIn, list[dict[str, float]]]:
    """``params`` with ``popular_until_events``: the largest context size up to which popularity
    ranks ``future``'s new customers better than ``fitted`` folded in, at every size measured.

    Some data's new customers take the best sellers first (MovieLens' new raters: popularity
    NDCG@10 0.334 against the folded-in blend's 0.202 on the test period), where the blend,
    tuned for known customers, subtracts popularity; others' follow their own taste from the
    first purchase (uci-online-retail: 0.154 folded in, 0.052 popularity). The sizes are tried in
    ``POLICY_CONTEXTS`` order and the search stops at the first where the fold-in wins or fewer
    than ``POLICY_MIN_CASES`` customers remain. Returns the comparisons made, for the report.
    """
    until, compared = 0, []
    with threadpool_limits(limits=1, user_api="blas"):
        for context in POLICY_CONTEXTS:
            cases = new_customers(interactions, future, min_rating, context=context)
            if len(cases) < POLICY_MIN_CASES:
                break
            cases = sampled(cases, limit)
            folded = score_cold(fitted, cases, params, k).ndcg
            popular = score_cold_popularity(popularity, cases, k).ndcg
            compared.append(
                {"events": context, "customers": len(cases), "fold_in": folded, "popular": popular}
            )
            if folded >= popular:
                break
            until = context
    return msgspec.structs.replace(params, popular_until_events=until), compared


def cold_report(
    fitted: Fitted,
    popularity: Fitted,
    cases: list[NewCustomer],
    params: FoldIn,
    k: int,
    fallback: NDArray[np.float32],
) -> dict[str, object]:
    """The cold-start section of the report: the model folded in, against all-time popularity
    and the ``fallback`` list the artifact ships (``training/fallback.py``), and what the service
    serves these customers (the fallback list for those with at most
    ``params.popular_until_events`` context events, the fold-in for the others)."""
    with threadpool_limits(limits=1, user_api="blas"):
        rankings = _rankings(fitted, cases, params, k)
        folded = evaluate.summarise(
            rankings, [c.relevant for c in cases], k, fitted.item_factors.shape[0]
        )
        served = score_served(fitted, fallback, cases, params, k, folded_rankings=rankings)
    return {
        "customers": len(cases),
        fitted.name: msgspec.to_builtins(folded),
        "popularity": msgspec.to_builtins(
            score_cold_popularity(popularity.item_factors[:, 0], cases, k)
        ),
        "fallback": msgspec.to_builtins(score_cold_popularity(fallback, cases, k)),
        "served": msgspec.to_builtins(served),
        "fold_in": {
            "regularization": params.regularization,
            "alpha": params.alpha,
            "popular_until_events": params.popular_until_events,
        },
    }


def score_served(
    fitted: Fitted,
    popularity: NDArray[np.float32],
    cases: list[NewCustomer],
    params: FoldIn,
    k: int,
    *,
    folded_rankings: list[list[int]] | None = None,
) -> evaluate.Metrics:
    """The metrics of what the service answers ``cases``: popularity for those with at most
    ``params.popular_until_events`` context events, the fold-in for the others
    (``folded_rankings``: every case's folded-in ranking, when already made)."""
    popular = [len(c.rows) <= params.popular_until_events for c in cases]
    if folded_rankings is not None:
        rankings = iter([r for r, p in zip(folded_rankings, popular, strict=True) if not p])
    else:
        folded = [c for c, p in zip(cases, popular, strict=True) if not p]
        rankings = iter(_rankings(fitted, folded, params, k) if folded else [])
    shown = [c for c, p in zip(cases, popular, strict=True) if p]
    listed = iter(_popular_rankings(popularity, shown, k))
    merged = [next(listed) if p else next(rankings) for p in popular]
    return evaluate.summarise(merged, [c.relevant for c in cases], k, len(popularity))


# Ridge penalty of the map from attribute one-hots to item factors: an attribute value few items
# share predicts little beyond the catalogue's mean.
MAPPING_L2 = 10.0


def from_attributes(fitted: Fitted, data: Data) -> Fitted:
    """``fitted``, able to give new items factors from their attributes.

    A model that cannot already gets the ridge regression of its item factors on the items'
    attribute one-hots (an intercept, the mean factor row, included): a new item gets what items
    with its category, brand and price band have. Unchanged for the ``PRIORS``, for parts that score
    nothing through factors, and when there are no attributes or no new items to place.
    """
    a = data.item_attributes
    if fitted.cold_items is not None or a is None or a.shape[1] == 0 or not data.cold_item_ids:
        return fitted
    if fitted.name in PRIORS or not np.any(fitted.user_factors):
        # A prior's value is the item's own record, which a new item lacks (mapped, a subtracted
        # popularity pushed new items of popular categories down: completejourney's ranking among
        # new items fell below a random order); a sparse item-item part scores no factors.
        return fitted
    y = fitted.item_factors.astype(np.float64)
    mean = y.mean(axis=0)
    gram = (a.T @ a).toarray().astype(np.float64) + MAPPING_L2 * np.eye(a.shape[1])
    coef = np.linalg.solve(gram, np.asarray(a.T @ (y - mean)))
    mapped = partial(_mapped, coef.astype(np.float32), mean.astype(np.float32))
    return dataclasses.replace(fitted, cold_items=mapped)


def _mapped(
    coef: NDArray[np.float32], mean: NDArray[np.float32], attributes: sp.csr_matrix
) -> NDArray[np.float32]:
    return np.asarray(attributes @ coef, dtype=np.float32) + mean


def cold_item_factors(fitted: Fitted, data: Data) -> NDArray[np.float32] | None:
    """Item factor rows of ``data``'s catalogue items without events, from their features.

    None when there are none or ``fitted`` cannot score an item from its features (a model fitted
    through ``selection``, or a blend of such parts, can wherever the items have attributes).
    """
    if not data.cold_item_ids or data.cold_attributes is None or fitted.cold_items is None:
        return None
    vectors = np.asarray(fitted.cold_items(data.cold_attributes), dtype=np.float32)
    if vectors.shape != (len(data.cold_item_ids), fitted.item_factors.shape[1]):
        raise ValueError(f"{fitted.name}: new item vectors of shape {vectors.shape}")
    return vectors


def cold_items_report(
    past: pa.Table,
    future: pa.Table,
    config: TrainConfig,
    side: SideInfo,
    algorithm: str,
    weights: dict[str, float],
    fraction: float = 0.1,
) -> dict[str, object]:
    """New items, measured apart: hold out some items' events and rank them from features alone.

    A seeded ``fraction`` of the items that have features and are bought in ``future`` lose all
    their ``past`` events, so the model meets them as catalogue items without events (exported
    from their features, as ``fit`` does). For each known customer who bought held-out items in
    ``future``: NDCG@k of the model's ranking of the held-out items among themselves, against a
    random order, and recall@100 of them in the whole catalogue (known items and new ones).
    """
    from training.experiment import make_data
    from training.selection import fit_named

    k = config.evaluation.k
    bought_later = set(pc.unique(future["item_id"]).to_pylist()) & set(
        pc.unique(past["item_id"]).to_pylist()
    )
    candidates = sorted(i for i in bought_later if i is not None and side.items.get(i))
    rng = np.random.default_rng(config.seed)
    held = set(rng.choice(candidates, max(1, int(len(candidates) * fraction)), replace=False))
    kept = past.filter(pc.invert(pc.is_in(past["item_id"], value_set=pa.array(sorted(held)))))
    data = make_data(kept, config, side, end=matrix.window(past)[1])
    fitted = fit_named(algorithm, data, config, weights)
    vectors = cold_item_factors(fitted, data)
    cold_ids = list(data.cold_item_ids)
    held_cols = [n for n, i in enumerate(cold_ids) if i in held]
    if vectors is None or not held_cols:
        return {"items": len(held), "scored": False}
    known = matrix.positions(future["customer_id"], data.interactions.customer_ids)
    targets: dict[int, set[int]] = {}
    position = {cold_ids[c]: n for n, c in enumerate(held_cols)}
    for row, item in zip(known.tolist(), future["item_id"].to_pylist(), strict=True):
        if row >= 0 and item in position:
            targets.setdefault(row, set()).add(position[item])
    rows = np.array(sorted(targets), dtype=np.int64)
    relevant = [targets[r] for r in rows.tolist()]
    held_vectors = vectors[held_cols]
    among = fitted.user_factors[rows] @ held_vectors.T
    ranked = [np.argsort(-s, kind="stable")[:k].tolist() for s in among]
    shuffled = [rng.permutation(len(held_cols))[:k].tolist() for _ in rows]
    full = np.hstack([fitted.scores(rows), fitted.user_factors[rows] @ vectors.T])
    bought = data.excluded[rows]
    r, c = bought.nonzero()
    full[r, c] = -np.inf
    n_known = data.shape[1]
    top = np.argpartition(-full, 99, axis=1)[:, :100]
    found = [
        len({int(t) - n_known for t in top_u if t >= n_known} & {held_cols[j] for j in rel})
        / len(rel)
        for top_u, rel in zip(top, relevant, strict=True)
    ]
    return {
        "items": len(held_cols),
        "customers": len(rows),
        "ndcg_among_new": evaluate.summarise(ranked, relevant, k, len(held_cols)).ndcg,
        "ndcg_among_new_random": evaluate.summarise(shuffled, relevant, k, len(held_cols)).ndcg,
        "recall_at_100_catalogue": float(np.mean(found)),
    }
