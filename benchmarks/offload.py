"""Does heavy scoring block the event loop? Health checks under a load of exact rankings.

Run: ``python -m benchmarks.offload [--items 300000] [--duration 8]`` (needs wrk and a Redis, as
``benchmarks.serving``). One artifact without an index (``RECO_ANN=off``), so every recommendation
scores the whole catalogue exactly: what happens at any size when filters defeat the index. Two
1-worker services in turn, identical but for ``RECO_INLINE_SCORING_MAX_ITEMS``: one so high that
every ranking runs on the event loop (the behaviour before ``service/offload.py``), one at the
default (rankings above 50,000 items run in a worker thread). Each is driven by two wrk processes
at once: recommendations (16 connections) and ``/health/live`` (4 connections), which needs no
scoring and so measures how long the loop keeps other requests waiting. Prints a table and writes
``benchmarks/results/offload.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.catalogue import write_catalogue
from benchmarks.serving import (
    RESULTS,
    delete_prefix,
    ensure_wrk,
    free_port,
    lua_script,
    run_wrk,
    seed_redis,
    serve,
    service_env,
)

MODES = {"inline (every ranking on the loop)": 10**12, "offload (default)": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--out", type=Path, default=RESULTS / "offload.json")
    args = parser.parse_args(argv)
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="offload-bench-"))
    model_dir, data_dir = work / "models", work / "var"
    data_dir.mkdir(parents=True)
    write_catalogue(model_dir, args.items, args.users, seed=5, with_index=False)
    rng = np.random.default_rng(3)
    customers = [f"c{i:07d}" for i in rng.choice(args.users, size=2000, replace=False)]
    items = [f"i{j:07d}" for j in rng.choice(args.items, size=2000, replace=False)]
    prefix = f"offload-bench-{os.getpid()}"
    seed_redis(args.redis_url, prefix, customers[:1000], items)
    recommend = lua_script(work / "recommendations.lua", "recommendations", customers, items)
    health = work / "health.lua"
    health.write_text('request = function()\n  return wrk.format("GET", "/health/live")\nend\n')
    rows: list[dict[str, Any]] = []
    settings = argparse.Namespace(redis_url=args.redis_url, ann="off")
    try:
        for mode, limit in MODES.items():
            port = free_port()
            env = service_env(settings, model_dir, data_dir, prefix, port, 1)
            if limit is not None:
                env["RECO_INLINE_SCORING_MAX_ITEMS"] = str(limit)
            log = work / f"service-{len(rows)}.log"
            argv = [sys.executable, "-m", "service"]
            found: dict[str, Any] = {}
            with serve(argv, env, port, log, "/health/ready") as server:
                run_wrk(wrk, server, recommend, 2, 16, 1)  # warm up: touch the mapped arrays

                def drive(s: Any = server, out: dict[str, Any] = found) -> None:
                    out["rec"] = run_wrk(wrk, s, recommend, args.duration, 16, 1)

                load = threading.Thread(target=drive)
                load.start()
                time.sleep(0.5)
                found["health"] = run_wrk(wrk, server, health, args.duration - 1, 4, 1)
                load.join()
            row = {"mode": mode, "inline_limit": limit or "default"}
            for name, result in found.items():
                result.pop("raw")
                row[name] = result
            rows.append(row)
    finally:
        delete_prefix(args.redis_url, prefix)
    print(format_table(rows, args.items))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"items": args.items, "rows": rows}, indent=2))
    print(f"\nwritten {args.out}")
    return 0


def format_table(rows: list[dict[str, Any]], n_items: int) -> str:
    lines = [
        f"{n_items:,} items, no index: every recommendation scores the catalogue exactly",
        f"{'mode':<38}{'rec req/s':>10}{'rec p99 ms':>11}{'health req/s':>13}"
        f"{'health p50 ms':>14}{'health p99 ms':>14}{'errors':>7}",
    ]
    for r in rows:
        rec, health = r["rec"], r["health"]
        lines.append(
            f"{r['mode']:<38}{rec['rps']:>10,.0f}{rec['p99_ms']:>11.1f}{health['rps']:>13,.0f}"
            f"{health['p50_ms']:>14.2f}{health['p99_ms']:>14.2f}"
            f"{rec['errors'] + health['errors']:>7}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
