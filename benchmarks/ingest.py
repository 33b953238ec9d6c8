"""Event ingestion benchmark: events/s and latency of POST /v1/events, single and batched.

Run: ``python -m benchmarks.ingest [--duration 10] [--batch 50] [--connections 32]``. The service
runs as its own process (one worker) on a generated 10k-item model, first on the Redis at
``--redis-url`` (appendfsync as that server is configured), then on the embedded Redis (AOF fsynced
on every write: what `make run` uses). ``wrk`` posts events for random customers and items: one
event per request, then ``--batch`` events per request. Prints a table and writes
``benchmarks/results/ingest.json``; every acknowledged event is checked to be in the stream.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import redis

from benchmarks.catalogue import write_catalogue
from benchmarks.serving import API_KEY, delete_prefix, ensure_wrk, free_port, run_wrk, serve


def lua_post(path: Path, batch: int, customers: int, items: int) -> Path:
    """A wrk script posting ``batch`` view/add-to-cart/purchase events per request."""
    path.write_text(
        "math.randomseed(os.time())\n"
        "local kinds = {'view', 'view', 'view', 'add_to_cart', 'purchase'}\n"
        "local channels = {'web', 'app', 'store', 'email'}\n"
        "local function one()\n"
        f'  return string.format(\'{{"customer_id":"c%07d","item_id":"i%07d",\'\n'
        '    .. \'"event_type":"%s","channel":"%s"}\',\n'
        f"    math.random(0, {customers - 1}), math.random(0, {items - 1}),\n"
        "    kinds[math.random(#kinds)], channels[math.random(#channels)])\n"
        "end\n"
        "request = function()\n"
        "  local parts = {}\n"
        f"  for n = 1, {batch} do parts[n] = one() end\n"
        "  local body = '[' .. table.concat(parts, ',') .. ']'\n"
        '  return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json", '
        f'["Authorization"] = "Bearer {API_KEY}"}}, body)\n'
        "end\n"
    )
    return path


def bench(
    args: argparse.Namespace, redis_url: str | None, label: str, work: Path
) -> list[dict[str, Any]]:
    """Single and batched ingestion against one Redis; one row each."""
    prefix = f"ingest-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env.update(
        {
            "MODEL_DIR": str(work / "models"),
            "DATA_DIR": str(work / f"data-{label}"),
            "API_KEYS": f"{API_KEY}=events+recommend",
            "PORT": str(port),
            "LOG_LEVEL": "WARNING",
            "RECO_KEY_PREFIX": prefix,
            "RECO_MAX_BATCH_EVENTS": str(max(args.batch, 1000)),
            "RECO_WORKERS": "1",  # one worker's figures, as documented
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    wrk = ensure_wrk()
    rows = []
    log = work / f"service-{label}.log"
    with serve([sys.executable, "-m", "service"], env, port, log, "/health/ready") as server:
        url = redis_url or _embedded_url(work / f"data-{label}")
        for batch in (1, args.batch):
            script = lua_post(work / f"post-{batch}.lua", batch, args.customers, args.items)
            result = run_wrk(wrk, server, script, args.duration, args.connections, 2)
            result.pop("raw")
            rows.append(
                {
                    "redis": label,
                    "events_per_request": batch,
                    **result,
                    "events_per_s": round(result["rps"] * batch, 1),
                }
            )
        stored = redis.Redis.from_url(url).xlen(f"{prefix}:events")
        # Every acknowledged (202) event must be in the stream. wrk counts the answers it got;
        # requests still in flight when it stopped may be stored too, so stored >= acknowledged.
        acknowledged = sum((r["requests"] - r["errors"]) * r["events_per_request"] for r in rows)
        for r in rows:
            r["lost_events"] = max(0, acknowledged - stored)
        if redis_url:
            delete_prefix(redis_url, prefix)
    return rows


def _embedded_url(data_dir: Path) -> str:
    settings = json.loads((data_dir / "redis" / "dump.rdb.settings").read_text())
    return f"unix://{settings['unixsocket']}"


def main() -> None:
    """Run both Redis set-ups and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ingest.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_catalogue(work / "models", args.items, 20_000)
        rows = bench(args, args.redis_url, "external", work) + bench(args, None, "embedded", work)
    print(
        f"\nPOST /v1/events, 1 worker, {args.connections} connections, {args.duration:g} s each\n"
    )
    print(
        "| redis | events/request | requests/s | events/s | p50 ms | p99 ms | errors "
        "| lost | server CPU µs/request |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['redis']} | {r['events_per_request']} | {r['rps']:,.0f} "
            f"| {r['events_per_s']:,.0f} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['errors']} | {r['lost_events']} | "
            f"{r['server_cpu_us_per_request']} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": rows}, indent=2)
    )
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
