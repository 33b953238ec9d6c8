"""Which similar items lead to what customers buy next: co-interaction table vs factor cosine.

Run: ``python -m benchmarks.similar_quality [--datasets NAME ...]``. For each data set in
``../shared/data`` with events, on the validation period that tuning uses (the training side of
the holdout split, its last part held out): fit ALS (64 factors) on the past, and for each of up
to ``--customers`` customers with new purchases in the period, take the similar items of their
five strongest items, and of up to five of their rare and middling items (already-bought items
left out, as the service leaves them out of recommendations), and measure precision@10 against
what they newly took. Tables: each item's nearest by cosine of its ALS factors, and the table
training ships (``training/similar.py``: items the same customers took first, then the factor
neighbours) at several thresholds of customers two items must share.
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

from benchmarks.quality import DEFAULT_DATA, data_sets
from service.similar_table import build_similar
from training.config import TrainConfig
from training.experiment import SideInfo, capped, make_period
from training.loaders import load_events
from training.models import FITTERS
from training.similar import MIN_TOGETHER, co_interaction_table
from training.tuning import validation_split

RESULTS = Path(__file__).resolve().parent / "results"
STRONGEST = 5


# Which of a customer's items to ask for similar items: the five strongest, and up to five of
# the rare (bought or viewed by 1-10 customers) and middling (11-30) ones.
QUERIES: dict[str, tuple[int, int] | None] = {
    "strongest 5": None,
    "items of 1-10 customers": (1, 10),
    "items of 11-30 customers": (11, 30),
}


def bench(folder: Path, customers: int, min_together: list[int]) -> dict[str, Any]:
    events, _ = load_events(sorted(folder.glob("events.*")))
    config = TrainConfig()
    past, validation = validation_split(events, config)
    period = capped(make_period(past, validation, config, SideInfo()), 20_000, config.seed)
    data = period.data
    x = data.interactions.matrix.tocsr()
    support = np.asarray((x > 0).sum(axis=0)).ravel()
    factors = np.ascontiguousarray(FITTERS["als"](data, {"factors": 64}).item_factors, np.float32)
    build_s: dict[str, float] = {}
    t0 = time.perf_counter()
    tables = {"factor cosine": build_similar(factors)["similar_rows"]}
    build_s["factor cosine"] = round(time.perf_counter() - t0, 1)
    for m in min_together:
        name = f"co-interaction, {m}+ shared" + (" (shipped)" if m == MIN_TOGETHER else "")
        t0 = time.perf_counter()
        table = co_interaction_table(x, np.arange(x.shape[1]), factors, min_together=m)
        build_s[name] = round(time.perf_counter() - t0, 1)
        tables[name] = table["similar_rows"]
    targets = period.overall
    result: dict[str, Any] = {"dataset": folder.name, "items": x.shape[1], "build_s": build_s}
    for query, span in QUERIES.items():
        shares: dict[str, list[float]] = {name: [] for name in tables}
        for n, customer in enumerate(targets.customers[:customers]):
            row = x[customer]
            if span is None:
                items = row.indices[np.argsort(-row.data, kind="stable")][:STRONGEST]
            else:
                own = support[row.indices]
                items = row.indices[(own >= span[0]) & (own <= span[1])][:STRONGEST]
            seen = set(data.bought[customer].indices.tolist())
            for item in items:
                for name, table in tables.items():
                    shown = [j for j in table[item].tolist() if j not in seen][:10]
                    shares[name].append(len(targets.relevant[n] & set(shown)) / 10)
        result[query] = {
            "queries": len(shares["factor cosine"]),
            "precision_at_10": {
                k: round(float(np.mean(v)), 4) if v else None for k, v in shares.items()
            },
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--datasets", nargs="+", metavar="NAME")
    parser.add_argument("--customers", type=int, default=1500)
    parser.add_argument(
        "--min-together",
        default="1,3,4,6",
        help="co-interaction tables to compare, by the customers two items must share",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "similar_quality.json")
    args = parser.parse_args(argv)
    folders = data_sets(args.data, args.datasets)
    min_together = [int(m) for m in args.min_together.split(",")]
    rows = [bench(f, args.customers, min_together) for f in folders]
    print(f"{'dataset':<24}{'items':>8}  {'queries':<26}{'n':>6}  {'table':<40}{'prec@10':>9}")
    for r in rows:
        for query in QUERIES:
            q = r[query]
            for name, precision in q["precision_at_10"].items():
                shown = f"{precision:>9.4f}" if precision is not None else f"{'-':>9}"
                print(
                    f"{r['dataset']:<24}{r['items']:>8,}  {query:<26}{q['queries']:>6}  "
                    f"{name:<40}{shown}"
                )
        print(f"{r['dataset']:<24}  build seconds: {r['build_s']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
