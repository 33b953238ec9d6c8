"""ANN recall@10 on real trained factors, not only on the serving benchmark's synthetic clusters.

Run: ``python -m benchmarks.ann_recall [--datasets NAME ...] [--nprobe 8,16,32]``. For each data
set in ``../shared/data`` with events: fit ALS (64 factors) on all of it as ``fit`` would, build
the index as training ships it, and measure recall@10 of ``IvfIndex.search`` against exact scoring
for every customer, at several ``nprobe`` and with the probe's lean towards each cluster's bound
(``RADIUS_WEIGHT``) off and on. Synthetic clustered factors flatter an IVF index (the serving
benchmark measures 0.999 at 100k items); ALS factors of real purchases are not clustered so well.
Prints a table and writes ``benchmarks/results/ann_recall.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.quality import DEFAULT_DATA
from service import ann
from service.topk import largest
from training.config import TrainConfig
from training.experiment import SideInfo, make_data
from training.loaders import load_events
from training.models import FITTERS

RESULTS = Path(__file__).resolve().parent / "results"


def recall_at_10(index: ann.IvfIndex, items: np.ndarray, users: np.ndarray, nprobe: int) -> float:
    index.nprobe = nprobe
    found_share = []
    for query in users:
        truth = set(largest(items @ query, 10).tolist())
        found = index.search(query, 10)
        found_share.append(len(truth & set(found[0].tolist())) / 10 if found else 0.0)
    return float(np.mean(found_share))


def bench(folder: Path, nprobes: list[int]) -> dict[str, Any]:
    events, _ = load_events(sorted(folder.glob("events.*")))
    data = make_data(events, TrainConfig(), SideInfo())
    fitted = FITTERS["als"](data, {"factors": 64})
    items = np.ascontiguousarray(fitted.item_factors, dtype=np.float32)
    users = np.ascontiguousarray(fitted.user_factors, dtype=np.float32)
    users = users[np.linalg.norm(users, axis=1) > 0]
    index = ann.IvfIndex(ann.build_index(items))
    row: dict[str, Any] = {
        "dataset": folder.name,
        "items": len(items),
        "customers": len(users),
        "nlist": index.nlist,
    }
    weight = ann.RADIUS_WEIGHT
    try:
        for lean in (0.0, weight):
            ann.RADIUS_WEIGHT = lean
            row[f"lean {lean:g}"] = {n: recall_at_10(index, items, users, n) for n in nprobes}
    finally:
        ann.RADIUS_WEIGHT = weight
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--datasets", nargs="+", metavar="NAME")
    parser.add_argument("--nprobe", default="8,16,32")
    parser.add_argument("--out", type=Path, default=RESULTS / "ann_recall.json")
    args = parser.parse_args(argv)
    nprobes = [int(n) for n in args.nprobe.split(",")]
    folders = sorted(p for p in args.data.iterdir() if p.is_dir() and list(p.glob("events.*")))
    if args.datasets:
        folders = [f for f in folders if f.name in args.datasets]
    rows = [bench(f, nprobes) for f in folders]
    leans = [k for k in rows[0] if k.startswith("lean")] if rows else []
    head = f"{'dataset':<24}{'items':>8}{'nlist':>7}  {'probe':<10}" + "".join(
        f"{'nprobe ' + str(n):>11}" for n in nprobes
    )
    print(head)
    for r in rows:
        for lean in leans:
            cells = "".join(f"{r[lean][n]:>11.4f}" for n in nprobes)
            print(f"{r['dataset']:<24}{r['items']:>8,}{r['nlist']:>7}  {lean:<10}{cells}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
