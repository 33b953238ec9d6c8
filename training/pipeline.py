"""The training job: load events, evaluate on a time-based holdout, fit, write the artifact."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from service import ann, artifact
from service.customer_table import build_customer_table
from service.foldin import LeastSquares
from service.neighbours import dense_block
from service.ranking import FactorModel
from training import coldstart, evaluate, fallback, matrix
from training.config import TrainConfig
from training.errors import TrainingError
from training.experiment import Period, SideInfo, capped, checked_period, make_data, report
from training.loaders import LoadReport, OnBadRows, load_customers, load_events, load_items
from training.models.base import Data
from training.selection import choose, fit_all, fit_named, guard, make_blend, shipped_ndcg
from training.similar import co_interaction_table
from training.suppression import Erased, drop_suppressed, read_suppressions, suppression_files

log = logging.getLogger(__name__)


class Inputs(msgspec.Struct, frozen=True, kw_only=True):
    """Where the job reads from and what it does with bad rows."""

    events: list[str]
    items: str | None = None
    customers: str | None = None
    on_bad_rows: OnBadRows = "skip"
    # Erased customers (SHA-256 of their ids) whose events up to their erasure are dropped; the
    # exporter's _suppressions.json files that lie with the event files are read too
    # (training/suppression.py).
    suppressions: str | None = None


def run(
    inputs: Inputs,
    model_dir: str | Path,
    config: TrainConfig,
    *,
    progress: bool = False,
    force: bool = False,
) -> Path:
    """Train one model version and publish it as ``model_dir/LATEST``; returns its folder.

    With ``config.algorithm = "auto"`` the candidates compete on a validation period carved from
    the training side; the winner (or the named algorithm) is checked on the test period beside
    the baselines, refitted on all events and written with its report.

    Raises:
        TrainingError: no usable events.
        WorseModelError: the new model is worse than LATEST by more than the margin (``force``
            skips this check).
        training.loaders.BadFileError: an input file is unusable, or has bad rows in reject mode.
    """
    started = time.perf_counter()
    erased = suppressions(inputs)
    events, bad_rows = read_events(inputs, erased)
    config = with_data_scale(config, events)
    catalogue = read_catalogue(inputs)
    customers = read_customers(inputs)
    side = SideInfo(items=catalogue, customers=customers)
    start, end = matrix.window(events)
    # Checked before the evaluation, whose fits would fail on an empty matrix less clearly.
    if not (matrix.event_weights(events, config.weights, end) > 0).any():
        raise TrainingError("no event has a positive weight: nothing to learn from")
    algorithm, weights, metrics, folding, half_life = _evaluate(events, config, side)
    if config.evaluation.holdout_fraction == 0:
        log.warning("evaluation is off (holdout_fraction = 0): LATEST is replaced unchecked")
    elif not force:
        guard(model_dir, shipped_ndcg(metrics, algorithm), config.selection.margin)
    _stage(f"fit {algorithm} on all events", started)
    data = make_data(events, config, side, end=end)
    if data.interactions.matrix.nnz == 0:
        raise TrainingError("no event has a positive weight: nothing to learn from")
    fitted = fit_named(algorithm, data, config, weights)
    interactions = data.interactions
    indptr, bought = matrix.bought(events, interactions)
    # What the service serves customers it cannot place, decayed from the last event of the
    # training window (not from the clock) with the half-life chosen on validation.
    popularity = fallback.lists(events, interactions, config.weights, half_life, end)
    item_ids = interactions.item_ids.tolist()
    item_factors = fitted.item_factors
    neighbours = fitted.neighbours.csr() if fitted.neighbours is not None else None
    cold = coldstart.cold_item_factors(fitted, data)
    if cold is not None:
        # Catalogue items without events, scored from their features; no popularity, and no
        # neighbours (empty rows of the sparse component).
        item_ids += list(data.cold_item_ids)
        item_factors = np.vstack([item_factors, cold])
        popularity = {
            ch: np.concatenate([p, np.zeros(len(cold), p.dtype)]) for ch, p in popularity.items()
        }
        if neighbours is not None:
            extra = np.full(len(cold), neighbours[0][-1], dtype=neighbours[0].dtype)
            neighbours = (np.concatenate([neighbours[0], extra]), *neighbours[1:])
        log.info("%d catalogue items without events exported from their features", len(cold))
    meta = {i: catalogue.get(i, {}) for i in item_ids}
    arrays, channels = artifact.pack(
        user_ids=interactions.customer_ids.tolist(),
        user_factors=fitted.user_factors,
        item_ids=item_ids,
        item_factors=item_factors,
        item_categories=[meta[i].get("category") for i in item_ids],
        popularity=popularity,
        bought_indptr=indptr,
        bought_items=bought,
        item_titles=[meta[i].get("title") for i in item_ids] if catalogue else None,
        item_brands=[meta[i].get("brand") for i in item_ids] if catalogue else None,
        item_prices=[meta[i].get("price") for i in item_ids] if catalogue else None,
        user_items=(
            interactions.matrix.indptr,
            interactions.matrix.indices,
            interactions.matrix.data,
        ),
        neighbours=neighbours,
    )
    calibration = None
    if len(item_ids) >= config.ann_min_items:
        # Large catalogues ship their approximate index, so every service worker maps one copy.
        index = ann.build_index(
            arrays["item_factors"], seed=config.seed, groups=arrays["item_category"]
        )
        calibration = ann.calibrate(
            index, arrays, target=config.ann_recall_target, seed=config.seed
        )
        arrays.update(index)
        _stage(
            f"ANN index calibrated: {calibration.nprobe} probes leaning {calibration.lean:g}, "
            f"recall@10 {calibration.recall_at_10}",
            started,
        )
    if len(item_ids) <= config.similar_table_max_items:
        ids = np.array([i.encode("utf-8") for i in interactions.item_ids.tolist()], dtype="S")
        matrix_rows = np.searchsorted(arrays["item_ids"], ids).astype(np.int64)
        table = co_interaction_table(interactions.matrix, matrix_rows, arrays["item_factors"])
        arrays.update(table)
        _stage("similar-items table built", started)
    # A model with more factors than items (an exactly exported blend) ships its fold-in's
    # products, so every service worker maps one copy instead of computing its own.
    arrays.update(LeastSquares(arrays["item_factors"], folding).shippable())
    # Likewise the item-item component's dense block, when it fits (service/neighbours.py).
    arrays.update(dense_block(arrays))
    manifest = artifact.Manifest(
        format_version=artifact.FORMAT_VERSION,
        model_version=artifact.new_version(algorithm),
        algorithm=algorithm,
        created_at=datetime.now(UTC),
        params=msgspec.to_builtins(fitted.params),
        data_window=artifact.DataWindow(start=start, end=end),
        erasures_as_of=erased.as_of,
        counts={
            "events": events.num_rows,
            "bad_rows_skipped": bad_rows,
            "customers": interactions.shape[0],
            "items": len(item_ids),
            "cold_items": len(item_ids) - interactions.shape[1],
            "interactions": int(interactions.matrix.nnz),
            "customers_file_rows": len(customers),
        },
        popularity_channels=channels,
        popularity_half_life_days=half_life,
        metrics=metrics,
        config=msgspec.to_builtins(config),
        fold_in=folding,
        neighbours=fitted.neighbours.spec() if fitted.neighbours is not None else None,
        ann=calibration,
    )
    if 0 < len(arrays["user_ids"]) <= config.customer_table_max_customers:
        ranked = FactorModel(
            artifact.Artifact(path=Path(model_dir), manifest=manifest, arrays=arrays)
        )
        arrays.update(build_customer_table(ranked))
        _stage("each customer's best items ranked", started)
    path = artifact.save(model_dir, manifest, arrays)
    _stage(f"wrote {path} and switched {artifact.LATEST}", started)
    return path


def with_data_scale(config: TrainConfig, events: pa.Table) -> TrainConfig:
    """``config`` with the events' rating scale where it sets none (``matrix.with_data_scale``);
    the manifest records the scale used."""
    weights = matrix.with_data_scale(config.weights, events)
    if weights.rating_scale != config.weights.rating_scale:
        log.info("ratings on a scale of %g (weights.rating_scale: the data's highest)",
                 weights.scale)  # fmt: skip
    return msgspec.structs.replace(config, weights=weights)


def read_events(inputs: Inputs, erased: Erased | None = None) -> tuple[pa.Table, int]:
    """The events ``inputs`` name, without erased customers' events from before their erasure
    (``erased``: read from the suppression files ``inputs`` lead to when not given), and how
    many bad rows were skipped. The table holds the columns fitting reads, its ids encoded
    (``matrix.compact``)."""
    events, reports = load_events(inputs.events, on_bad_rows=inputs.on_bad_rows)
    bad = sum(r.bad_rows for r in reports)
    log.info(
        "read %d events from %d file(s), %d bad rows skipped", events.num_rows, len(reports), bad
    )
    events = drop_suppressed(events, suppressions(inputs) if erased is None else erased)
    events = matrix.compact(events)
    if events.num_rows == 0:
        raise TrainingError(f"no valid events in {', '.join(inputs.events)}{_why_none(reports)}")
    return events, bad


def _why_none(reports: list[LoadReport]) -> str:
    """The first bad row, when bad rows are why no event is left: the one line a failed fit
    prints must say what to fix ("price '£2.55' is not a number"), not only that nothing loaded."""
    if not reports:
        return ": no .csv, .csv.gz or .parquet file there"
    first = next((r.errors[0] for r in reports if r.errors), None)
    if first is None:
        return ""
    bad = sum(r.bad_rows for r in reports)
    return f": {bad} bad row(s), the first {first.file}:{first.line}: {first.reason}"


def suppressions(inputs: Inputs) -> Erased:
    """The erased customers from the suppression files ``inputs`` lead to."""
    return read_suppressions(suppression_files(inputs.events, inputs.suppressions))


def read_catalogue(inputs: Inputs) -> dict[str, dict[str, object]]:
    """Item id -> its metadata (title, category, brand, price) from the items file, if given."""
    if inputs.items is None:
        return {}
    items, _ = load_items(inputs.items, on_bad_rows=inputs.on_bad_rows)
    return {row.pop("item_id"): row for row in items.to_pylist()}


def fold_in(config: TrainConfig) -> artifact.FoldIn:
    """What the service needs to weight real-time events exactly as this training run did."""
    w = config.weights
    return artifact.FoldIn(
        regularization=config.als.regularization,
        alpha=config.als.alpha,
        event_weights=dict(w.event_types),
        channel_weights=dict(w.channels),
        half_life_days=w.half_life_days,
        transform=w.transform,
        rating_scale=w.scale,
        min_relevant_rating=w.relevant_rating,
    )


def read_customers(inputs: Inputs) -> dict[str, dict[str, str]]:
    """Customer id -> its attributes from the customers file, if given."""
    if inputs.customers is None:
        return {}
    customers, _ = load_customers(inputs.customers, on_bad_rows=inputs.on_bad_rows)
    return {row.pop("customer_id"): row for row in customers.to_pylist()}


# What ``auto`` ships when no validation period can choose: the one model that needs no
# evidence to be sensible (every customer gets the best sellers).
UNSELECTED = "popularity"


def _can_evaluate(events: pa.Table, config: TrainConfig) -> bool:
    start, end = matrix.window(events)
    if config.evaluation.holdout_fraction <= 0:
        return False
    if end - start < timedelta(days=1):
        log.warning("events span less than a day: no time-based holdout, metrics left out")
        return False
    return True


def _split(
    events: pa.Table, fraction: float, what: str
) -> tuple[pa.Table, pa.Table, datetime] | None:
    """The two sides of a time split and its cutoff, or None (with a warning) when one side is
    empty."""
    try:
        return evaluate.time_split(events, fraction)
    except evaluate.SplitError as e:
        log.warning("no %s: %s", what, e)
        return None


def _period(
    past: pa.Table, future: pa.Table, config: TrainConfig, side: SideInfo, what: str
) -> Period | None:
    """The period to fit on ``past`` and score on ``future``, or None (with a warning) when the
    past has nothing to learn from or the future no customer to evaluate."""
    try:
        return checked_period(past, future, config, side, what)
    except evaluate.SplitError as e:
        log.warning("%s", e)
        return None


def _evaluate(
    events: pa.Table, config: TrainConfig, side: SideInfo
) -> tuple[str, dict[str, float], dict[str, Any], artifact.FoldIn, float]:
    """Select on validation (``auto``), then fit on the past and score the test period.

    Returns:
        The algorithm to ship, its blend weights, the metrics for the manifest (one report per
        model, overall and per channel; ``selected``; the ``validation`` scores; ``cold_start``;
        ``fallback_popularity``; empty when the data allow no test), the fold-in parameters
        (regularization and alpha fitted on validation for ``auto``) and the half-life of the
        popular lists the service falls back on (chosen on validation, ``training/fallback.py``;
        the matrix's when nothing could choose).
    """
    algorithm = config.algorithm
    selection = config.selection
    weights = dict(selection.blend_weights) or dict.fromkeys(selection.blend_parts, 1.0)
    folding = fold_in(config)
    k = config.evaluation.k
    half_life = config.weights.half_life_days
    unselected = UNSELECTED if algorithm == "auto" else algorithm
    if not _can_evaluate(events, config):
        return unselected, weights, {}, folding, half_life
    started = time.perf_counter()
    split = _split(events, config.evaluation.holdout_fraction, "test period")
    if split is None:
        log.warning("metrics left out")
        return unselected, weights, {}, folding, half_life
    train, test, cutoff = split
    results: dict[str, Any] = {"cutoff": cutoff.isoformat(), "test_events": test.num_rows}
    inner = _split(train, config.selection.validation_fraction, "validation period")
    if algorithm != "auto" and inner is not None:
        half_life, results["fallback_popularity"] = _fallback_half_life(inner[0], inner[1], config)
    if algorithm == "auto":
        found = inner and _period(inner[0], inner[1], config, side, "validation period")
        if inner is None or found is None:
            log.warning("nothing to select on: %s is shipped, metrics left out", UNSELECTED)
            return UNSELECTED, weights, {}, folding, half_life
        validation_period, validation = found, inner[1]
        choice = choose(validation_period, config)
        algorithm, weights = choice.algorithm, choice.blend_weights
        results["validation"] = choice.validation
        past = validation_period.data
        half_life, results["fallback_popularity"] = fallback.choose(
            past.events, past.interactions, validation, config.weights, past.end, k
        )
        popular = fallback.lists(
            past.events, past.interactions, config.weights, half_life, past.end
        )["all"]
        cases = coldstart.new_customers(
            validation_period.data.interactions, validation, config.weights.relevant_rating
        )
        folding, _ = coldstart.fit_fold_in(choice.fitted[algorithm], cases, folding, k)
        folding, compared = coldstart.new_customer_policy(
            choice.fitted[algorithm],
            popular,
            validation_period.data.interactions,
            validation,
            folding,
            config.weights.relevant_rating,
            k,
        )
        results["new_customer_policy"] = compared
        if folding.popular_until_events:
            log.info(
                "new customers with up to %d events get popular items: they ranked them better "
                "than the folded-in model on validation (%s)",
                folding.popular_until_events,
                compared,
            )
        _stage(f"selected {algorithm} on validation", started)
        # The validation period's tables, matrices and fitted candidates are done with: freed
        # before the test period's are built (at 4M events they held 2-3 GB of the peak).
        del inner, found, validation_period, validation, choice, cases
    test_period = _period(train, test, config, side, "test period")
    if test_period is None:
        log.warning("metrics left out")
        return algorithm, weights, {}, folding, half_life
    period = capped(test_period, config.evaluation.max_customers, config.seed)
    names = [algorithm, "popularity"]
    if config.algorithm == "auto":
        names = list(dict.fromkeys([*config.selection.candidates, algorithm]))
    fitted = fit_all(names, period.data, config)  # the blend's parts too, fitted once
    if "blend" in names and any(w > 0 for w in weights.values()):
        fitted["blend"] = make_blend(fitted, {n: w for n, w in weights.items() if w != 0})
    elif "blend" in names:
        names.remove("blend")  # selection found no part to blend (all of them flat)
    for name in names:
        results[name] = report(fitted[name], period, config.evaluation.k)
    results["selected"] = algorithm
    results["blend_weights"] = weights
    data = period.data
    popular = fallback.lists(data.events, data.interactions, config.weights, half_life, data.end)
    cases = coldstart.sampled(
        coldstart.new_customers(data.interactions, test, config.weights.relevant_rating),
        config.evaluation.max_customers,
    )
    if cases:
        results["cold_start"] = coldstart.cold_report(
            fitted[algorithm], fitted["popularity"], cases, folding, k, popular["all"]
        )
    unplaced = fallback.customers_without_events(
        data.interactions, test, config.weights.relevant_rating
    )
    if unplaced:
        results["without_events"] = _without_events(data, unplaced, popular["all"], config)
    _stage(f"evaluated on {len(period.overall.customers)} test customers", started)
    log.info("test metrics:\n%s", format_table(results))
    return algorithm, weights, results, folding, half_life


def _fallback_half_life(
    past: pa.Table, future: pa.Table, config: TrainConfig
) -> tuple[float, dict[str, Any]]:
    """``fallback.choose`` on a validation split, for a named algorithm (``auto`` reuses the
    matrix its selection built)."""
    interactions = matrix.build(past, config.weights)
    end = matrix.window(past)[1]
    k = config.evaluation.k
    return fallback.choose(past, interactions, future, config.weights, end, k)


def _without_events(
    data: Data, cases: list[coldstart.NewCustomer], popular: Any, config: TrainConfig
) -> dict[str, Any]:
    """The test period's new customers as the service first meets them (no event of theirs):
    the fallback list shipped, and every candidate half-life's list for comparison."""
    k = config.evaluation.k
    half_lives = list(dict.fromkeys([config.weights.half_life_days, *fallback.HALF_LIVES]))
    return {
        "customers": len(cases),
        "fallback": msgspec.to_builtins(coldstart.score_cold_popularity(popular, cases, k)),
        "candidates": fallback.compare(
            data.events, data.interactions, config.weights, data.end, cases, k, half_lives
        ),
    }


def format_table(metrics: dict[str, Any]) -> str:
    """The test report as a table: one line per model, then per channel."""
    head = f"{'model':<20}{'channel':<9}{'NDCG@10':>9}{'Rec@10':>8}{'MAP@10':>8}{'Hit@10':>8}"
    head += f"{'cover':>7}{'popbias':>8}{'users':>7}{'fit s':>7}"
    lines = [head, "-" * len(head)]
    for name, m in metrics.items():
        if not isinstance(m, dict) or "ndcg" not in m:
            continue
        rows = [("all", m), *sorted(m.get("by_channel", {}).items())]
        for channel, r in rows:
            mark = "*" if name == metrics.get("selected") and channel == "all" else " "
            lines.append(
                f"{mark + name:<20}{channel:<9}{r['ndcg']:>9.4f}{r['recall']:>8.4f}"
                f"{r['map']:>8.4f}{r['hit_rate']:>8.4f}{r['coverage']:>7.3f}"
                f"{r['popularity_bias']:>8.3f}{r['customers']:>7}{m.get('fit_s', 0):>7.1f}"
            )
    cold = metrics.get("cold_start", {})
    for name, r in cold.items():
        if isinstance(r, dict) and "ndcg" in r:
            lines.append(
                f"{'new:' + name:<20}{'all':<9}{r['ndcg']:>9.4f}{r['recall']:>8.4f}"
                f"{r['map']:>8.4f}{r['hit_rate']:>8.4f}{r['coverage']:>7.3f}"
                f"{r['popularity_bias']:>8.3f}{r['customers']:>7}"
            )
    unplaced = metrics.get("without_events", {}).get("fallback")
    if unplaced:
        r = unplaced
        lines.append(
            f"{'no events:fallback':<20}{'all':<9}{r['ndcg']:>9.4f}{r['recall']:>8.4f}"
            f"{r['map']:>8.4f}{r['hit_rate']:>8.4f}{r['coverage']:>7.3f}"
            f"{r['popularity_bias']:>8.3f}{r['customers']:>7}"
        )
    chosen = metrics.get("fallback_popularity")
    if chosen:
        lines.append(
            f"fallback half-life {chosen['half_life_days']:g} days (0: none), chosen on "
            f"{chosen['customers']} new customers of the validation period"
        )
    for where, found in (
        ("validation", (chosen or {}).get("candidates")),
        ("test", metrics.get("without_events", {}).get("candidates")),
    ):
        if found:
            tried = " ".join(f"{c['half_life_days']:g}:{c['ndcg']:.4f}" for c in found)
            lines.append(f"  no-events NDCG@10 by half-life, {where}: {tried}")
    return "\n".join(lines)


def _stage(what: str, started: float) -> None:
    log.info("%s (%.1fs since start)", what, time.perf_counter() - started)
