"""Which similar items lead to what customers buy next: co-interaction table vs factor cosine.

Run: ``python -m benchmarks.similar_quality [--datasets NAME ...]``. For each data set in
``../shared/data`` with events, on the validation period that tuning uses (the training side of
the holdout split, its last part held out): fit ALS (64 factors) on the past, and for each of up
to ``--customers`` customers with new purchases in the period, take the similar items of their
five strongest items (already-bought items left out, as the service leaves them out of
recommendations) and measure precision@10 and the hit rate against what they newly bought. Two
tables: each item's nearest by cosine of its ALS factors, and the table training ships
(``training/similar.py``: items the same customers took first, then the factor neighbours).
Prints a table and writes ``benchmarks/results/similar_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.quality import DEFAULT_DATA
from service.similar_table import build_similar
from training.config import TrainConfig
from training.experiment import SideInfo, capped, make_period
from training.loaders import load_events
from training.models import FITTERS
from training.similar import co_interaction_table
from training.tuning import validation_split

RESULTS = Path(__file__).resolve().parent / "results"
STRONGEST = 5


def bench(folder: Path, customers: int) -> dict[str, Any]:
    events, _ = load_events(sorted(folder.glob("events.*")))
    config = TrainConfig()
    past, validation = validation_split(events, config)
    period = capped(make_period(past, validation, config, SideInfo()), 20_000, config.seed)
    data = period.data
    x = data.interactions.matrix.tocsr()
    factors = np.ascontiguousarray(FITTERS["als"](data, {"factors": 64}).item_factors, np.float32)
    t0 = time.perf_counter()
    by_factors = build_similar(factors)["similar_rows"]
    factors_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    shipped = co_interaction_table(x, np.arange(x.shape[1]), factors)["similar_rows"]
    shipped_s = time.perf_counter() - t0
    tables = {"factor cosine": by_factors, "shipped (co-interaction)": shipped}
    shares: dict[str, list[float]] = {name: [] for name in tables}
    targets = period.overall
    for n, customer in enumerate(targets.customers[:customers]):
        row = x[customer]
        strongest = row.indices[np.argsort(-row.data, kind="stable")][:STRONGEST]
        seen = set(data.bought[customer].indices.tolist())
        for item in strongest:
            for name, table in tables.items():
                shown = [j for j in table[item].tolist() if j not in seen][:10]
                shares[name].append(len(targets.relevant[n] & set(shown)) / 10)
    return {
        "dataset": folder.name,
        "items": x.shape[1],
        "queries": len(shares["factor cosine"]),
        "build_s": {"factor cosine": round(factors_s, 1), "shipped": round(shipped_s, 1)},
        "precision_at_10": {k: round(float(np.mean(v)), 4) for k, v in shares.items()},
        "hit_rate": {k: round(float(np.mean(np.array(v) > 0)), 4) for k, v in shares.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--datasets", nargs="+", metavar="NAME")
    parser.add_argument("--customers", type=int, default=800)
    parser.add_argument("--out", type=Path, default=RESULTS / "similar_quality.json")
    args = parser.parse_args(argv)
    folders = sorted(p for p in args.data.iterdir() if p.is_dir() and list(p.glob("events.*")))
    if args.datasets:
        folders = [f for f in folders if f.name in args.datasets]
    rows = [bench(f, args.customers) for f in folders]
    print(f"{'dataset':<24}{'items':>8}{'queries':>9}  {'table':<26}{'prec@10':>9}{'hit':>8}")
    for r in rows:
        for name, precision in r["precision_at_10"].items():
            print(
                f"{r['dataset']:<24}{r['items']:>8,}{r['queries']:>9}  {name:<26}"
                f"{precision:>9.4f}{r['hit_rate'][name]:>8.4f}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
