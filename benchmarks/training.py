"""Training benchmark: every data set in ../shared/data, ALS against popularity on a time split.

Run: ``python -m benchmarks.training [--data DIR] [--out FILE]`` (``make bench``). Prints one table
and writes JSON. For each data set: events loaded, matrix size, load/build/fit seconds, the fit
time of a bare ``implicit`` ALS on the same matrix measured side by side (the overhead ratio), and
NDCG@10 / Recall@10 / MAP@10 / coverage on the last 10% of the data window, already-bought items
excluded as in production.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import msgspec
import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from training import evaluate, matrix
from training.config import TrainConfig
from training.fit import fit_als
from training.loaders import load_events

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def bench_dataset(folder: Path, config: TrainConfig) -> dict[str, object]:
    """Load, split, fit and evaluate one data set; returns one result row."""
    files = sorted(folder.glob("events.*"))
    t0 = time.perf_counter()
    events, _ = load_events(files)
    load_s = time.perf_counter() - t0
    row: dict[str, object] = {"dataset": folder.name, "events": events.num_rows, "load_s": load_s}
    start, end = matrix.window(events)
    if (end - start).total_seconds() < 86_400:
        row["note"] = "one day of data: no time split possible"
        return row
    train, test, _ = evaluate.time_split(events, config.evaluation.holdout_fraction)
    t0 = time.perf_counter()
    inter = matrix.build(train, config.weights)
    row["build_s"] = time.perf_counter() - t0
    row["customers"], row["items"] = inter.shape
    row["nnz"] = int(inter.matrix.nnz)
    row["bare_implicit_fit_s"], row["fit_s"] = _fit_side_by_side(inter.matrix, config)
    users, items = fit_als(inter.matrix, config.als, seed=config.seed)
    indptr, bought_items = matrix.bought(train, inter)
    bought = sp.csr_matrix((np.ones(len(bought_items)), bought_items, indptr), shape=inter.shape)
    customers, relevant = evaluate.test_targets(inter, bought, test, config.weights.relevant_rating)
    k = config.evaluation.k
    pop = matrix.popularity(train, inter, config.weights)["all"]
    for name, scorer in (
        ("als", evaluate.factor_scorer(users, items)),
        ("popularity", evaluate.popularity_scorer(pop)),
    ):
        rankings = evaluate.rank(scorer, customers, bought, k)
        row[name] = msgspec.to_builtins(evaluate.summarise(rankings, relevant, k, inter.shape[1]))
    return row


def _fit_side_by_side(
    m: sp.csr_matrix, config: TrainConfig, rounds: int = 3
) -> tuple[float, float]:
    """Median seconds of a bare implicit fit and of ours, alternated so noise hits both alike."""
    from implicit.als import AlternatingLeastSquares

    p = config.als
    bare, ours = [], []
    for _ in range(rounds):
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(
                factors=p.factors,
                regularization=p.regularization,
                alpha=p.alpha,
                iterations=p.iterations,
                use_gpu=False,
                random_state=config.seed,
            )
            t0 = time.perf_counter()
            model.fit(m, show_progress=False)
            bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fit_als(m, p, seed=config.seed)
        ours.append(time.perf_counter() - t0)
    return float(np.median(bare)), float(np.median(ours))


def print_table(rows: list[dict[str, object]]) -> None:
    """One line per data set and model."""
    head = (
        f"{'dataset':<24}{'events':>10}{'matrix':>18}{'nnz':>10}{'fit s':>7}{'bare s':>7}"
        f"{'model':>12}{'NDCG@10':>9}{'Rec@10':>8}{'MAP@10':>8}{'cover':>7}{'users':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if "note" in r:
            print(f"{r['dataset']:<24}{r['events']:>10}  {r['note']}")
            continue
        size = f"{r['customers']}x{r['items']}"
        for name in ("als", "popularity"):
            m = r[name]
            assert isinstance(m, dict)
            print(
                f"{r['dataset']:<24}{r['events']:>10}{size:>18}{r['nnz']:>10}"
                f"{r['fit_s']:>7.2f}{r['bare_implicit_fit_s']:>7.2f}{name:>12}"
                f"{m['ndcg']:>9.4f}{m['recall']:>8.4f}{m['map']:>8.4f}{m['coverage']:>7.3f}{m['customers']:>7}"
            )


def main() -> None:
    """Run every data set found and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training.json"))
    args = parser.parse_args()
    config = TrainConfig()
    rows = [
        bench_dataset(folder, config)
        for folder in sorted(p for p in args.data.iterdir() if p.is_dir())
        if list(folder.glob("events.*"))
    ]
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"config": msgspec.to_builtins(config), "results": rows}, indent=2)
    )
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
