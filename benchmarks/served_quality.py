"""Recommendation quality measured end to end: the CLI fits, the HTTP service answers.

Run: ``python -m benchmarks.served_quality [--datasets NAME ...] [--holdout 0.15]
[--max-customers N] [--channel CHANNEL] [--redis-url URL]``.

For each data set folder of ``../shared/data`` (``--data``): the events are split by time with
training's own ``time_split`` (the window from the 0.1% quantile of the event times to the last
event; its last ``--holdout``, 15% by default, is held out). The earlier part is written to a
temporary data folder as Parquet beside copies of the data set's ``items.csv.gz`` and
``customers.csv.gz``, ``python -m training fit`` is run on it (a subprocess, its default
config), and ``python -m service`` serves the model (one worker, ``REDIS_URL`` db 10 under a
fresh key prefix deleted afterwards, or the embedded Redis with ``--redis-url embedded``). Then
``GET /v1/customers/{id}/recommendations?k=10`` is asked for each held-out customer, as an
outside evaluator would, and scored against what they bought in the held-out period:

- relevance as ``training/evaluate.py`` defines it: purchases, and ratings of at least the
  model's ``min_relevant_rating`` (every event with an item for data without either);
- ``new``: only items the customer had not bought (or rated) before the cutoff, as training's
  report counts them, and only customers left with one; ``all``: every item bought in the held-out
  period, repeat purchases included (what an evaluator that knows nothing of the service's rules
  would count). Items the model does not know count as relevant (a served answer cannot hold
  them; training's report leaves them out).
- ``known``: customers with events before the cutoff; ``new customers``: the others (at most
  ``--max-customers`` each, a seeded sample).

Beside it: the NDCG@10 the fit's own report claims for its test period (the last 10% of the
training part, ``metrics`` of the manifest), and the same HTTP scoring of a second model fitted
with ``algorithm = "popularity"`` (the popularity baseline). Prints a table and writes
``benchmarks/results/served_quality.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks import serving
from benchmarks.quality import DEFAULT_DATA
from benchmarks.serving import delete_prefix, free_port
from service.events import CONSUMED_EVENT_TYPES
from training.evaluate import SplitError, ndcg_at_k, recall_at_k, time_split
from training.loaders import load_events
from training.matrix import rated_low

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ["uci-online-retail", "movielens-100k", "completejourney-8451", "hm-fixture-day1"]
API_KEY = "served-quality-key"
K = 10


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--datasets", nargs="*", default=DATASETS)
    parser.add_argument("--holdout", type=float, default=0.15)
    parser.add_argument("--max-customers", type=int, default=3000)
    parser.add_argument("--channel", default=None, help="channel to ask for (default: none)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--no-popularity", action="store_true", help="skip the baseline")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the service")
    parser.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    parser.add_argument("--out", type=Path, default=RESULTS / "served_quality.json")
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    results = []
    for name in args.datasets:
        print(f"== {name}", file=sys.stderr, flush=True)
        results.append(bench(args.data / name, args, extra_env))
        print(table(results[-1:]), file=sys.stderr, flush=True)
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


def bench(folder: Path, args: argparse.Namespace, extra_env: dict[str, str]) -> dict[str, Any]:
    events, _ = load_events(sorted(folder.glob("events.*")))
    if events.num_rows == 0:
        raise FileNotFoundError(f"no events in {folder}")
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f"served-{folder.name}-"))
    try:
        try:
            past, future, cutoff = time_split(events, args.holdout)
        except SplitError as e:
            return unsplittable(folder, events, work, args, extra_env, str(e))
        data = work / "data"
        side = write_data(folder, past, data)
        # Training's own evaluation of this very held-out period: a fit of every event whose
        # test period is the one held out here (its candidates are fitted on the same past).
        whole = work / "whole"
        write_data(folder, events, whole)
        config = work / "holdout.toml"
        config.write_text(f"[evaluation]\nholdout_fraction = {args.holdout}\n")
        fit(whole, side, work / "whole-models", config)
        offline = latest_manifest(work / "whole-models")
        shutil.rmtree(work / "whole-models")
        model_dir = work / "models"
        fit_s, report = fit(data, side, model_dir, None)
        manifest = latest_manifest(model_dir)
        min_rating = float(manifest["fold_in"].get("min_relevant_rating") or 0.0)
        truth = targets(past, future, min_rating, args.max_customers)
        result: dict[str, Any] = {
            "dataset": folder.name,
            "holdout": args.holdout,
            "cutoff": cutoff.isoformat(),
            "train_events": past.num_rows,
            "test_events": future.num_rows,
            "algorithm": manifest["algorithm"],
            "fit_s": round(fit_s, 1),
            "fit_report_ndcg": fit_ndcg(manifest),
            "training_eval": {
                "algorithm": offline["algorithm"],
                "known": offline.get("metrics", {}).get(offline["algorithm"]),
                "new_customers": offline.get("metrics", {}).get("cold_start", {}).get("served"),
                "popularity": offline.get("metrics", {}).get("popularity"),
            },
            "repeat_share": truth["repeat_share"],
        }
        with serve(model_dir, work / "var", args, extra_env) as port:
            result["served"] = score_all(port, truth, args.channel)
            result["invariants"] = invariants(port, truth, manifest)
        if not args.no_popularity:
            pop_dir = work / "popularity"
            config = work / "popularity.toml"
            config.write_text('algorithm = "popularity"\n')
            fit(data, side, pop_dir, config)
            with serve(pop_dir, work / "var-pop", args, extra_env) as port:
                result["popularity"] = score_all(port, truth, args.channel)
        result["fit_stdout_tail"] = report[-2000:]
        result["seconds"] = round(time.perf_counter() - started, 1)
        return result
    finally:
        if args.keep:
            shutil.copytree(work, args.keep / folder.name, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)


def unsplittable(
    folder: Path,
    events: pa.Table,
    work: Path,
    args: argparse.Namespace,
    extra_env: dict[str, str],
    why: str,
) -> dict[str, Any]:
    """A data set no time split divides (one day): fit every event, serve it, check the API."""
    data = work / "data"
    side = write_data(folder, events, data)
    fit_s, report = fit(data, side, work / "models", None)
    manifest = latest_manifest(work / "models")
    customers = sorted(set(events["customer_id"].to_pylist()))
    truth = {"known": random.Random(7).sample(customers, min(200, len(customers)))}
    truth["items"] = sorted(set(events["item_id"].to_pylist()))
    channels = sorted(set(events["channel"].to_pylist()))
    with serve(work / "models", work / "var", args, extra_env) as port:
        checks = invariants(port, truth, manifest)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        stranger = uuid.uuid4().hex
        popular = {
            channel: [
                i["item_id"]
                for i in get(conn, f"/v1/customers/{stranger}/recommendations?channel={channel}")[
                    "items"
                ]
            ]
            for channel in [*channels, "app"]
        }
        answers = ask_many(port, truth["known"], None)
        conn.close()
    return {
        "dataset": folder.name,
        "split": why,
        "algorithm": manifest["algorithm"],
        "fit_s": round(fit_s, 1),
        "metrics": manifest.get("metrics", {}),
        "invariants": checks,
        "popular_for_a_stranger": popular,
        "fallback_share": sum(a["fallback"] for a in answers.values()) / max(len(answers), 1),
        "fit_stdout_tail": report[-2000:],
    }


def write_data(folder: Path, events: pa.Table, data: Path) -> list[str]:
    """A data folder at ``data``: ``events`` as Parquet beside ``folder``'s items and customers
    files; returns the names of those side files."""
    data.mkdir()
    pq.write_table(events, data / "events.parquet")
    side = [p for p in ("items.csv.gz", "customers.csv.gz") if (folder / p).exists()]
    for name in side:
        shutil.copy(folder / name, data / name)
    return side


def fit(data: Path, side: list[str], model_dir: Path, config: Path | None) -> tuple[float, str]:
    command = [sys.executable, "-m", "training", "fit", "--events", str(data / "events.parquet")]
    for name in side:
        flag = "--items" if name.startswith("items") else "--customers"
        command += [flag, str(data / name)]
    command += ["--model-dir", str(model_dir), "--force"]
    if config is not None:
        command += ["--config", str(config)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=_env({}))
    if done.returncode != 0:
        raise RuntimeError(f"fit failed ({done.returncode}): {done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def latest_manifest(model_dir: Path) -> dict[str, Any]:
    version = (model_dir / "LATEST").read_text().strip()
    return json.loads((model_dir / version / "manifest.json").read_text())


def fit_ndcg(manifest: dict[str, Any]) -> float | None:
    """The test NDCG@10 the fit reported for the model it shipped (None: no evaluation)."""
    chosen = manifest.get("metrics", {}).get(manifest["algorithm"])
    value = chosen.get("ndcg") if isinstance(chosen, dict) else None
    return None if value is None else round(float(value), 4)


def targets(past: pa.Table, future: pa.Table, min_rating: float, cap: int) -> dict[str, Any]:
    """Each held-out customer's relevant items, ``all`` and ``new`` (not consumed before)."""

    def consumed(table: pa.Table) -> pa.Table:
        mask = pc.is_in(table["event_type"], value_set=pa.array(sorted(CONSUMED_EVENT_TYPES)))
        kept = table.filter(mask) if pc.any(mask).as_py() else table
        kept = kept.filter(pc.is_valid(kept["item_id"]))
        return kept

    def pairs(table: pa.Table) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        customers = table["customer_id"].to_pylist()
        for c, i in zip(customers, table["item_id"].to_pylist(), strict=True):
            out.setdefault(c, set()).add(i)
        return out

    before = pairs(consumed(past))  # bought or rated (any rating: the service excludes them)
    future_kept = consumed(future)
    future_kept = future_kept.filter(pa.array(~rated_low(future_kept, min_rating)))
    after = pairs(future_kept)
    seen_before = set(past["customer_id"].to_pylist())
    rng = random.Random(7)
    known = sorted(c for c in after if c in seen_before)
    new = sorted(c for c in after if c not in seen_before)
    known = rng.sample(known, min(cap, len(known)))
    new = rng.sample(new, min(cap, len(new)))
    repeats = [len(after[c] & before.get(c, set())) / len(after[c]) for c in known]
    trained_items = set(past["item_id"].to_pylist())
    return {
        "all": after,
        "fresh": {c: (after[c] - before.get(c, set())) & trained_items for c in after},
        "known": known,
        "new_customers": new,
        "repeat_share": round(float(np.mean(repeats)), 4) if repeats else None,
        "items": sorted({i for s in after.values() for i in s}),
    }


def score_all(port: int, truth: dict[str, Any], channel: str | None) -> dict[str, Any]:
    """NDCG@10 and recall@10 of the served answers, per customer group and relevance."""
    out: dict[str, Any] = {}
    for group in ("known", "new_customers"):
        customers = truth[group]
        answers = ask_many(port, customers, channel)
        fallback = sum(a["fallback"] for a in answers.values()) / max(len(answers), 1)
        scores: dict[str, Any] = {"customers_asked": len(customers), "fallback": fallback}
        for relevance in ("fresh", "all"):
            rel = [(answers[c]["items"], truth[relevance][c]) for c in customers]
            rel = [(r, t) for r, t in rel if t]
            scores[relevance] = {
                "customers": len(rel),
                "ndcg": _mean([ndcg_at_k(r, t, K) for r, t in rel]),
                "recall": _mean([recall_at_k(r, t, K) for r, t in rel]),
            }
        out[group] = scores
    return out


def _mean(values: list[float]) -> float:
    return round(float(np.mean(values)), 4) if values else 0.0


def ask_many(port: int, customers: list[str], channel: str | None) -> dict[str, dict[str, Any]]:
    def batch(part: list[str]) -> dict[str, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        found = {}
        for c in part:
            extra = f"&channel={channel}" if channel else ""
            body = get(conn, f"/v1/customers/{quote(c, safe='')}/recommendations?k={K}{extra}")
            found[c] = {
                "items": [i["item_id"] for i in body["items"]],
                "fallback": bool(body.get("fallback")),
            }
        conn.close()
        return found

    parts = [customers[i::4] for i in range(4)]
    answers: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(4) as pool:
        for found in pool.map(batch, parts):
            answers.update(found)
    return answers


def get(conn: http.client.HTTPConnection, path: str) -> Any:
    conn.request("GET", path, headers={"Authorization": f"Bearer {API_KEY}"})
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:500]!r}")
    return json.loads(body)


def invariants(port: int, truth: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """Basic promises of the API on the real model; each failure is listed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    failures: list[str] = []
    sample = truth["known"][:50]
    n_items = manifest.get("counts", {}).get("items", 0)
    categories: set[str] = set()
    for c in sample:
        body = get(conn, f"/v1/customers/{quote(c, safe='')}/recommendations?k=25")
        items = [i["item_id"] for i in body["items"]]
        categories.update(i["category"] for i in body["items"] if i.get("category"))
        if len(items) != len(set(items)):
            failures.append(f"duplicates for {c}")
        if len(items) < min(25, n_items - 500):
            failures.append(f"{len(items)} items for {c} (k=25)")
        if any(i["score"] is None for i in body["items"]):
            failures.append(f"no score for {c}")
    for category in sorted(categories)[:5]:
        for c in sample[:10]:
            path = f"/v1/customers/{quote(c, safe='')}/recommendations?k=10&category="
            body = get(conn, path + quote(category, safe=""))
            if any(i["category"] != category for i in body["items"]):
                failures.append(f"category {category!r} not respected for {c}")
    stranger = get(conn, f"/v1/customers/{uuid.uuid4().hex}/recommendations?k=10")
    if not stranger["fallback"] or len(stranger["items"]) != min(10, n_items):
        failures.append("a stranger got no popular fallback of k items")
    for item in truth["items"][:30]:
        conn.request(
            "GET",
            f"/v1/items/{quote(item, safe='')}/similar?k=10",
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        response = conn.getresponse()
        body = json.loads(response.read())
        if response.status == 200 and item in [i["item_id"] for i in body["items"]]:
            failures.append(f"similar items of {item} contain it")
    conn.close()
    return {"checked_customers": len(sample), "failures": failures[:20]}


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@contextlib.contextmanager
def serve(
    model_dir: Path, data_dir: Path, args: argparse.Namespace, extra: dict[str, str]
) -> Iterator[int]:
    """``python -m service`` on ``model_dir`` (1 worker, measurement off), ready; its port."""
    port = free_port()
    prefix = f"served-quality-{uuid.uuid4().hex[:8]}"
    env = {
        "PORT": str(port),
        "MODEL_DIR": str(model_dir),
        "DATA_DIR": str(data_dir),
        "API_KEYS": f"{API_KEY}=recommend+admin",
        "RECO_WORKERS": "1",
        "RECO_KEY_PREFIX": prefix,
        "RECO_TRACKING": "false",
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    if args.redis_url != "embedded":
        env["REDIS_URL"] = args.redis_url
    argv = [sys.executable, "-m", "service"]
    log = data_dir.parent / f"service-{port}.log"
    try:
        with serving.serve(argv, _env(env), port, log, "/health/ready") as server:
            yield server.port
    finally:
        if args.redis_url != "embedded":
            delete_prefix(args.redis_url, prefix)


def table(results: list[dict[str, Any]]) -> str:
    """One row per data set: training's claims beside what HTTP answers."""
    head = (
        "| data set | model | fit report NDCG@10 | training's NDCG@10 here (customers) "
        "| HTTP NDCG@10 / recall@10 fresh (customers) | HTTP NDCG@10 / recall@10 all "
        "(customers) | repeat share | popularity HTTP NDCG@10 fresh / all "
        "| new customers: training's / HTTP NDCG@10 fresh (customers) |\n" + "| --- " * 9 + "|"
    )
    rows = [head]
    for r in results:
        if "served" not in r:
            rows.append(f"| {r['dataset']} | {r['algorithm']} | no split: {r['split']} |")
            continue
        s, n = r["served"]["known"], r["served"]["new_customers"]
        p = r.get("popularity", {}).get("known")
        t = r["training_eval"]
        known, cold = t.get("known") or {}, t.get("new_customers") or {}
        popularity = f"{p['fresh']['ndcg']:.4f} / {p['all']['ndcg']:.4f}" if p else "-"
        rows.append(
            f"| {r['dataset']} | {r['algorithm']} | {_f(r['fit_report_ndcg'])} | "
            f"{_f(known.get('ndcg'))} ({known.get('customers', 0)}) | "
            f"{_f(s['fresh']['ndcg'])} / {_f(s['fresh']['recall'])} ({s['fresh']['customers']}) | "
            f"{_f(s['all']['ndcg'])} / {_f(s['all']['recall'])} ({s['all']['customers']}) | "
            f"{r['repeat_share']} | {popularity} | {_f(cold.get('ndcg'))} / "
            f"{_f(n['fresh']['ndcg'])} ({n['fresh']['customers']}) |"
        )
    return "\n".join(rows)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    main()
