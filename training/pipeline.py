"""The training job: load events, evaluate on a time-based holdout, fit, write the artifact."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from service import ann, artifact
from service.store.erasure import customer_hash
from training import evaluate, matrix
from training.config import TrainConfig
from training.export import SUPPRESSIONS_FILE
from training.fit import fit_als
from training.loaders import OnBadRows, load_customers, load_events, load_items

log = logging.getLogger(__name__)


class TrainingError(Exception):
    """The job cannot produce a model from this input (the message says why)."""


class Inputs(msgspec.Struct, frozen=True, kw_only=True):
    """Where the job reads from and what it does with bad rows."""

    events: list[str]
    items: str | None = None
    customers: str | None = None
    on_bad_rows: OnBadRows = "skip"
    # Erased customers (SHA-256 of their ids) to drop; the exporter's _suppressions.json in an
    # events folder is read too.
    suppressions: str | None = None


def run(
    inputs: Inputs, model_dir: str | Path, config: TrainConfig, *, progress: bool = False
) -> Path:
    """Train one model version and publish it as ``model_dir/LATEST``; returns its folder.

    Raises:
        TrainingError: no usable events.
        training.loaders.BadFileError: an input file is unusable, or has bad rows in reject mode.
    """
    started = time.perf_counter()
    events, bad_rows = _load_events(inputs)
    catalogue = _catalogue(inputs)
    n_customers = _count_customers(inputs)
    start, end = matrix.window(events)
    metrics = _evaluate(events, config, progress) if _can_evaluate(events, config) else {}
    _stage("fit on all events", started)
    interactions = matrix.build(events, config.weights, end=end)
    if interactions.matrix.nnz == 0:
        raise TrainingError("no event has a positive weight: nothing to learn from")
    user_factors, item_factors = fit_als(
        interactions.matrix, config.als, seed=config.seed, progress=progress
    )
    indptr, bought = matrix.bought(events, interactions)
    item_ids = interactions.item_ids.tolist()
    meta = {i: catalogue.get(i, {}) for i in item_ids}
    arrays, channels = artifact.pack(
        user_ids=interactions.customer_ids.tolist(),
        user_factors=user_factors,
        item_ids=item_ids,
        item_factors=item_factors,
        item_categories=[meta[i].get("category") for i in item_ids],
        popularity=matrix.popularity(events, interactions, config.weights, end=end),
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
    )
    if len(item_ids) >= ann.AnnConfig().min_items:
        # Large catalogues ship their approximate index, so every service worker maps one copy.
        arrays.update(ann.build_index(arrays["item_factors"], seed=config.seed))
    manifest = artifact.Manifest(
        format_version=artifact.FORMAT_VERSION,
        model_version=artifact.new_version(config.algorithm),
        algorithm=config.algorithm,
        created_at=datetime.now(UTC),
        params=msgspec.to_builtins(config.als),
        data_window=artifact.DataWindow(start=start, end=end),
        counts={
            "events": events.num_rows,
            "bad_rows_skipped": bad_rows,
            "customers": interactions.shape[0],
            "items": interactions.shape[1],
            "interactions": int(interactions.matrix.nnz),
            "customers_file_rows": n_customers,
        },
        popularity_channels=channels,
        metrics=metrics,
        config=msgspec.to_builtins(config),
        fold_in=fold_in(config),
    )
    path = artifact.save(model_dir, manifest, arrays)
    _stage(f"wrote {path} and switched {artifact.LATEST}", started)
    return path


def _load_events(inputs: Inputs) -> tuple[pa.Table, int]:
    events, reports = load_events(inputs.events, on_bad_rows=inputs.on_bad_rows)
    bad = sum(r.bad_rows for r in reports)
    log.info(
        "read %d events from %d file(s), %d bad rows skipped", events.num_rows, len(reports), bad
    )
    events = drop_suppressed(events, suppressions(inputs))
    if events.num_rows == 0:
        raise TrainingError(f"no valid events in {', '.join(inputs.events)}")
    return events, bad


def suppressions(inputs: Inputs) -> set[str]:
    files = [Path(p) / SUPPRESSIONS_FILE for p in inputs.events if Path(p).is_dir()]
    if inputs.suppressions:
        files.append(Path(inputs.suppressions))
    hashes: set[str] = set()
    for file in files:
        if file.is_file():
            hashes.update(json.loads(file.read_text())["sha256"])
    return hashes


def drop_suppressed(events: pa.Table, hashes: set[str]) -> pa.Table:
    """``events`` without the events of erased customers (given as SHA-256 of their ids)."""
    if not hashes:
        return events
    customers = pc.unique(events["customer_id"]).to_pylist()
    erased = [c for c in customers if customer_hash(c) in hashes]
    if not erased:
        return events
    kept = events.filter(pc.invert(pc.is_in(events["customer_id"], value_set=pa.array(erased))))
    log.info(
        "dropped %d events of %d erased customer(s)", events.num_rows - kept.num_rows, len(erased)
    )
    return kept


def _catalogue(inputs: Inputs) -> dict[str, dict[str, object]]:
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
    )


def _count_customers(inputs: Inputs) -> int:
    if inputs.customers is None:
        return 0
    customers, _ = load_customers(inputs.customers, on_bad_rows=inputs.on_bad_rows)
    return int(customers.num_rows)


def _can_evaluate(events: pa.Table, config: TrainConfig) -> bool:
    start, end = matrix.window(events)
    if config.evaluation.holdout_fraction <= 0:
        return False
    if end - start < timedelta(days=1):
        log.warning("events span less than a day: no time-based holdout, metrics left out")
        return False
    return True


def _evaluate(events: pa.Table, config: TrainConfig, progress: bool) -> dict[str, object]:
    """Fit on the past, rank the holdout customers like production, against popularity."""
    started = time.perf_counter()
    train, test, cutoff = evaluate.time_split(events, config.evaluation.holdout_fraction)
    interactions = matrix.build(train, config.weights)
    if interactions.matrix.nnz == 0 or test.num_rows == 0:
        log.warning("holdout split left no training or no test data: metrics left out")
        return {}
    indptr, bought_items = matrix.bought(train, interactions)
    bought = sp.csr_matrix(
        (np.ones(len(bought_items), np.float32), bought_items, indptr), shape=interactions.shape
    )
    customers, relevant = evaluate.test_targets(interactions, bought, test)
    k = config.evaluation.k
    user_factors, item_factors = fit_als(
        interactions.matrix, config.als, seed=config.seed, progress=progress
    )
    pop = matrix.popularity(train, interactions, config.weights)["all"]
    n_items = interactions.shape[1]
    results: dict[str, object] = {"cutoff": cutoff.isoformat(), "test_events": test.num_rows}
    for name, scorer in (
        (config.algorithm, evaluate.factor_scorer(user_factors, item_factors)),
        ("popularity", evaluate.popularity_scorer(pop)),
    ):
        rankings = evaluate.rank(scorer, customers, bought, k)
        results[name] = msgspec.to_builtins(evaluate.summarise(rankings, relevant, k, n_items))
    _stage(f"evaluated on {len(customers)} holdout customers", started)
    log.info("holdout metrics: %s", results)
    return results


def _stage(what: str, started: float) -> None:
    log.info("%s (%.1fs since start)", what, time.perf_counter() - started)
