"""Quality benchmark: every model on every data set in ../shared/data, same split, same seeds.

Run: ``python -m benchmarks.quality [--datasets NAME ...] [--quick] [--out FILE]``. For each
data set with more than a day of events: the configuration is tuned on a validation period carved
from the training side (weights and decay, every model's hyperparameters, the blend), the
selected model is picked on validation, and every tuned baseline and the selected model are
fitted on the training side and scored on the last 10% of the window, already-bought items
excluded as in production. MovieLens-100k is also run under the classic protocol (random 75/25
split per user, every held-out rating relevant) so its numbers sit next to published ones.
New items are measured apart (time protocol, data sets with item features): 10% of the items
bought in the test period lose their training events and are ranked from their features alone.
Prints one table and writes JSON (default ``benchmarks/results/quality.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training import evaluate, matrix
from training.coldstart import cold_items_report
from training.config import TrainConfig
from training.experiment import Period, SideInfo, make_period
from training.loaders import load_customers, load_events, load_items
from training.models import Fitted
from training.selection import choose, fit_all, fit_named
from training.tuning import tune

# ../shared/data next to the checkout (a worktree sits one level deeper, so look upwards).
DEFAULT_DATA = next(
    (
        p / "shared" / "data"
        for p in Path(__file__).resolve().parents
        if (p / "shared" / "data").is_dir()
    ),
    Path("../shared/data"),
)
BASELINES = [
    "popularity",
    "recent_popularity",
    "adoption",
    "als",
    "bpr",
    "itemknn",
    "ease",
    "lightfm",
]
CLASSIC = "movielens-100k"
log = logging.getLogger("benchmarks.quality")


def data_sets(data: Path, names: list[str] | None = None) -> list[Path]:
    """The folders of ``data`` that hold events (only ``names``, when given), sorted."""
    folders = sorted(p for p in data.iterdir() if p.is_dir() and list(p.glob("events.*")))
    return [f for f in folders if f.name in names] if names else folders


def per_user_split(events: pa.Table, fraction: float, seed: int) -> tuple[pa.Table, pa.Table]:
    """Each customer's events split at random: ``1 - fraction`` to train, ``fraction`` to test."""
    rng = np.random.default_rng(seed)
    customers = events["customer_id"].to_numpy(zero_copy_only=False)
    order = np.lexsort((rng.random(len(customers)), customers))
    _, first, counts = np.unique(customers[order], return_index=True, return_counts=True)
    rank = np.arange(len(order)) - np.repeat(first, counts)
    n_train = np.repeat(np.round(counts * (1 - fraction)).astype(np.int64), counts)
    is_train = np.empty(len(order), dtype=bool)
    is_train[order] = rank < n_train
    mask = pa.array(is_train)
    return events.filter(mask), events.filter(pc.invert(mask))


def side_info(folder: Path) -> SideInfo:
    """Item metadata and customer attributes of the data set, where it has them."""
    items, customers = sorted(folder.glob("items.*")), sorted(folder.glob("customers.*"))
    return SideInfo(
        items={r.pop("item_id"): r for r in load_items(items[0])[0].to_pylist()} if items else {},
        customers=(
            {r.pop("customer_id"): r for r in load_customers(customers[0])[0].to_pylist()}
            if customers
            else {}
        ),
    )


def run_protocol(
    splits: tuple[tuple[pa.Table, pa.Table], tuple[pa.Table, pa.Table]],
    config: TrainConfig,
    meta: SideInfo,
    quick: bool,
    cold_items: bool = True,
) -> dict[str, Any]:
    """Tune and select on the validation split, then score every model on the test split."""
    (past, validation), (train, test) = splits
    t0 = time.perf_counter()
    events = pa.concat_tables([train, test])
    config, tuned = tune(
        events,
        config,
        meta,
        models=BASELINES,
        trials=2 if quick else 5,
        weight_trials=2 if quick else 5,
        splits=(past, validation),
    )
    tune_s = time.perf_counter() - t0
    choice = choose(make_period(past, validation, config, meta), config)
    period = make_period(train, test, config, meta)
    fitted = fit_all(BASELINES, period.data, config)
    if "blend" not in fitted:
        fitted["blend"] = fit_named("blend", period.data, config, choice.blend_weights)
    rows = [_row(name, f, period, config) for name, f in fitted.items()]
    rows += [
        _row(f"{n}-exact", f, period, config, exact=True) for n, f in fitted.items() if f.exact
    ]
    cold = None
    if meta.items and cold_items:
        cold = cold_items_report(
            train, test, config, meta, choice.algorithm, dict(choice.blend_weights)
        )
    return {
        "cold_items": cold,
        "selected": choice.algorithm,
        "validation": choice.validation,
        "tuned": tuned,
        "tune_s": tune_s,
        "config": msgspec.to_builtins(config),
        "customers": len(period.overall.customers),
        "rows": rows,
    }


def _row(
    name: str, fitted: Fitted, period: Period, config: TrainConfig, exact: bool = False
) -> dict[str, Any]:
    k = config.evaluation.k
    scorer = fitted.exact if exact and fitted.exact else fitted.scores
    t = period.overall
    rankings = evaluate.rank(scorer, t.customers, period.data.bought, k)
    m = evaluate.summarise(rankings, t.relevant, k, period.data.shape[1], period.item_counts)
    pairs = list(zip(rankings, t.relevant, strict=True))
    precision = float(np.mean([evaluate.precision_at_k(r, s, k) for r, s in pairs]))
    # MAP as the Recommenders benchmark computes it: precision at hits over all relevant items.
    map_all = float(
        np.mean(
            [evaluate.average_precision_at_k(r, s, k) * min(len(s), k) / len(s) for r, s in pairs]
        )
    )
    return {
        "model": name,
        **msgspec.to_builtins(m),
        "precision": precision,
        "map_all_relevant": map_all,
        "fit_s": fitted.fit_s,
    }


def bench_dataset(folder: Path, quick: bool) -> list[dict[str, Any]]:
    """The time-split result of one data set, and the classic one for MovieLens-100k."""
    files = sorted(folder.glob("events.*"))
    events, _ = load_events(files)
    start, end = matrix.window(events)
    base = {"dataset": folder.name, "events": events.num_rows}
    if (end - start).total_seconds() < 86_400 * 2:
        return [{**base, "protocol": "time", "note": "one day of data: no time split possible"}]
    meta = side_info(folder)
    config = TrainConfig()
    if quick:
        config = msgspec.structs.replace(
            config, selection=msgspec.structs.replace(config.selection, blend_trials=15)
        )
    train, test, _ = evaluate.time_split(events, config.evaluation.holdout_fraction)
    past, validation, _ = evaluate.time_split(train, config.selection.validation_fraction)
    results = [
        {
            **base,
            "protocol": "time",
            **run_protocol(((past, validation), (train, test)), config, meta, quick),
        }
    ]
    if folder.name == CLASSIC:
        # Every rating is a positive interaction, as in the published implicit-feedback tables.
        classic = msgspec.structs.replace(
            config,
            weights=msgspec.structs.replace(
                config.weights,
                half_life_days=0.0,
                transform="none",
                rating_scale=1.0,
                min_relevant_rating=0.0,
            ),
        )
        train, test = per_user_split(events, 0.25, config.seed)
        past, validation = per_user_split(train, 0.25, config.seed + 1)
        results.append(
            {
                **base,
                "protocol": "classic 75/25",
                **run_protocol(
                    ((past, validation), (train, test)), classic, meta, quick, cold_items=False
                ),
            }
        )
    return results


def print_table(results: list[dict[str, Any]]) -> None:
    """One line per data set, protocol and model; the selected model is starred."""
    head = (
        f"{'dataset':<24}{'protocol':<15}{'model':<20}{'NDCG@10':>9}{'Rec@10':>8}{'MAP@10':>8}"
        f"{'Prec@10':>8}{'cover':>7}{'popbias':>8}{'fit s':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        if "note" in r:
            print(f"{r['dataset']:<24}{r['protocol']:<15}{r['note']}")
            continue
        for m in sorted(r["rows"], key=lambda m: -m["ndcg"]):
            name = ("*" if m["model"] == r["selected"] else " ") + m["model"]
            print(
                f"{r['dataset']:<24}{r['protocol']:<15}{name:<20}{m['ndcg']:>9.4f}"
                f"{m['recall']:>8.4f}{m['map']:>8.4f}{m['precision']:>8.4f}{m['coverage']:>7.3f}"
                f"{m['popularity_bias']:>8.3f}{m['fit_s']:>7.1f}"
            )
        print(_verdict(r))
        if cold := r.get("cold_items"):
            print(
                f"  -> new items ({cold['items']} held out, {cold.get('customers', 0)} customers):"
                + (
                    f" NDCG@10 among them {cold['ndcg_among_new']:.4f} (random order "
                    f"{cold['ndcg_among_new_random']:.4f}); recall@100 in the whole catalogue "
                    f"{cold['recall_at_100_catalogue']:.4f}"
                    if cold.get("scored", True)
                    else " the selected model cannot score items from features"
                )
            )


def _verdict(r: dict[str, Any]) -> str:
    """The selected model against the best tuned baseline, as served and with exact scores."""
    rows = {m["model"]: m for m in r["rows"]}
    selected = rows[r["selected"]]["ndcg"]
    parts = []
    for label, names in (
        ("served", [n for n in rows if n in BASELINES]),
        ("exact", [n for n in rows if n in BASELINES or n.endswith("-exact")]),
    ):
        others = {n: rows[n]["ndcg"] for n in names if n != r["selected"]}
        best = max(others, key=others.__getitem__)
        gain = selected / others[best] - 1 if others[best] else float("inf")
        parts.append(f"best {label} baseline {best} {others[best]:.4f}: {gain:+.1%}")
    return (
        f"  -> selected {r['selected']} NDCG@10 {selected:.4f}; "
        + "; ".join(parts)
        + f" ({r['customers']} customers, tuning {r['tune_s']:.0f}s)"
    )


def main() -> None:
    """Run the data sets and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--datasets", nargs="+", metavar="NAME", help="folder names (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller tuning budget")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    folders = data_sets(args.data, args.datasets)
    results: list[dict[str, Any]] = []
    for folder in folders:
        t0 = time.perf_counter()
        results += bench_dataset(folder, args.quick)
        print(f"{folder.name}: {time.perf_counter() - t0:.0f}s", flush=True)
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
