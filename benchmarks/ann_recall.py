"""ANN recall@10 on real trained factors, not only on the serving benchmark's synthetic clusters.

Run: ``python -m benchmarks.ann_recall [--datasets NAME ...] [--nprobe 8,16,32]``. For each data
set in ``../shared/data`` with events: fit ALS (64 factors) on all of it as ``fit`` would, build
the index as training ships it, and measure recall@10 of ``IvfIndex.search`` against exact scoring
for every customer, at several ``nprobe`` and with the probe's lean towards each cluster's bound
off and at each lean calibration tries (``ann.LEANS``); and recall@10 of similar items (cosine)
through the index at the same ``nprobe`` values, beside the exact table training ships
(``service/similar_table.py``). Then the probes (and lean) ``ann.calibrate`` picks from a sample
of 300 customers, and the recall they give over all customers.
Synthetic clustered factors flatter an IVF index (the serving benchmark measures 0.999 at 100k
items); ALS factors of real purchases are not clustered so well.
Prints a table and writes ``benchmarks/results/ann_recall.json``.
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
from service import ann
from service.similar_table import build_similar, unit_rows
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


def similar_recall_at_10(
    index: ann.IvfIndex, items: np.ndarray, queries: np.ndarray, nprobe: int, table: np.ndarray
) -> tuple[float, float]:
    """recall@10 of cosine neighbours: the index's at ``nprobe`` (searched as the service
    searches it), and the shipped table's."""
    index.nprobe_similar = nprobe
    unit = unit_rows(items)
    norms = np.linalg.norm(items, axis=1).astype(np.float32)
    norms = np.where(norms > 0, norms, np.float32(1e-9))
    found_share, table_share = [], []
    for row in queries:
        scores = unit @ unit[row]
        scores[row] = -np.inf
        # Real factors hold many exact ties (items bought by one household point the same way):
        # an item counts when its cosine reaches the 10th best, whichever of the tied it is.
        tenth = float(scores[largest(scores, 10)].min()) - 1e-6
        found = index.search(unit[row], 10, exclude=np.array([row]), norms=norms)
        found_share.append(float(np.sum(scores[found[0]] >= tenth)) / 10 if found else 0.0)
        table_share.append(float(np.sum(scores[table[row, :10]] >= tenth)) / 10)
    return float(np.mean(found_share)), float(np.mean(table_share))


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
    # Calibration as training ships it (on a sample of 300 customers), checked on all of them:
    # does the sample's probe count hold for the customers it did not see?
    none_bought = {"bought_indptr": np.zeros(len(users) + 1, np.int64), "bought_items": []}
    spec = ann.calibrate(
        ann.build_index(items), {"item_factors": items, "user_factors": users, **none_bought}
    )
    index.lean = spec.lean
    row["calibrated"] = {
        "nprobe": spec.nprobe,
        "lean": spec.lean,
        "recall_sample": spec.recall_at_10,
        "recall_all": recall_at_10(index, items, users, spec.nprobe),
        "nprobe_similar": spec.nprobe_similar,
        "recall_similar_sample": spec.recall_at_10_similar,
    }
    for lean in (0.0, *ann.LEANS):
        index.lean = lean
        row[f"lean {lean:g}"] = {n: recall_at_10(index, items, users, n) for n in nprobes}
    # Similar items: the index built on the raw factors (as served), probed by unit centroids,
    # against each item's exact cosine neighbours; and the table training ships instead.
    t0 = time.perf_counter()
    table = build_similar(items)["similar_rows"]
    row["similar_table_s"] = round(time.perf_counter() - t0, 1)
    queries = np.random.default_rng(0).choice(len(items), size=min(500, len(items)), replace=False)
    similar = {n: similar_recall_at_10(index, items, queries, n, table) for n in nprobes}
    row["similar index"] = {n: r[0] for n, r in similar.items()}
    row["similar table"] = {n: r[1] for n, r in similar.items()}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--datasets", nargs="+", metavar="NAME")
    parser.add_argument("--nprobe", default="8,16,32")
    parser.add_argument("--out", type=Path, default=RESULTS / "ann_recall.json")
    args = parser.parse_args(argv)
    nprobes = [int(n) for n in args.nprobe.split(",")]
    folders = data_sets(args.data, args.datasets)
    rows = [bench(f, nprobes) for f in folders]
    leans = [k for k in rows[0] if k.startswith(("lean", "similar "))] if rows else []
    head = f"{'dataset':<24}{'items':>8}{'nlist':>7}  {'probe':<14}" + "".join(
        f"{'nprobe ' + str(n):>11}" for n in nprobes
    )
    print(head)
    for r in rows:
        for lean in leans:
            cells = "".join(f"{r[lean][n]:>11.4f}" for n in nprobes)
            print(f"{r['dataset']:<24}{r['items']:>8,}{r['nlist']:>7}  {lean:<14}{cells}")
    print(f"\ncalibrated to recall@10 {ann.RECALL_TARGET} on 300 customers, then all of them:")
    for r in rows:
        c = r["calibrated"]
        print(
            f"{r['dataset']:<24} nprobe {c['nprobe']:>4}  sample {c['recall_sample']:.4f}  "
            f"all customers {c['recall_all']:.4f}  similar: nprobe {c['nprobe_similar']:>4}  "
            f"sample {c['recall_similar_sample']:.4f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
