"""Offer export benchmark: audience throughput, and the online p99 while an export runs.

Run: ``python -m benchmarks.offers_export [--users 100000] [--items 20000] [--offers 50]
[--redis-url redis://127.0.0.1:6379/15] [--out FILE]``. It generates a random factor model with
``--users`` customers, writes their consent and some recent events (views, carts, purchases)
into Redis under a fresh key prefix, stores ``--offers`` offers, starts ``python -m service``
(one worker) on a free port, then measures:

1. the p99 of ``GET /v1/customers/{id}/recommendations`` alone (baseline),
2. an export of every customer on email (``POST /v1/exports/offers``, read by ``curl`` in its
   own process) and, during it, the same p99,
3. customers per second of that export, and of an export with no online load first (recording
   no contacts, so the caps leave the second export its audience).

Every key it wrote is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import redis

from service import artifact
from service.events import Event, msgpack_encoder
from service.state import CartLine, Consent
from service.store.keys import Keys

KEY = "bench-key"


def make_model(model_dir: Path, users: int, items: int, factors: int, seed: int) -> None:
    """A random model: scores around 0..1, 50 categories, prices, three purchases per customer."""
    rng = np.random.default_rng(seed)
    uf = rng.normal(0, 1 / np.sqrt(factors), (users, factors)).astype(np.float32) + 0.1
    itf = rng.normal(0, 1 / np.sqrt(factors), (items, factors)).astype(np.float32) + 0.1
    bought = rng.integers(0, items, (users, 3))
    arrays, channels = artifact.pack(
        user_ids=[f"c{i:06d}" for i in range(users)],
        user_factors=uf,
        item_ids=[f"i{j:06d}" for j in range(items)],
        item_factors=itf,
        item_categories=[f"cat{j % 50:02d}" for j in range(items)],
        popularity={"all": rng.random(items).astype(np.float32)},
        bought_indptr=np.arange(0, users * 3 + 1, 3, dtype=np.int64),
        bought_items=bought.reshape(-1).astype(np.int32),
        item_prices=[float(p) for p in rng.uniform(5, 200, items).round(2)],
    )
    manifest = artifact.Manifest(
        format_version=artifact.FORMAT_VERSION,
        model_version="bench-offers",
        algorithm="random",
        created_at=datetime.now(UTC) - timedelta(days=30),
        popularity_channels=channels,
        counts={"users": users, "items": items},
    )
    artifact.save(model_dir, manifest, arrays)


def make_state(client: redis.Redis, keys: Keys, users: int, items: int, seed: int) -> None:
    """Consent for 90% of customers; a fifth of them have recent views, carts and purchases."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    pipe = client.pipeline(transaction=False)
    for i in range(users):
        c = f"c{i:06d}"
        if rng.random() < 0.9:
            consent = Consent(marketing={"email": True, "app": True})
            pipe.set(keys.consent(c), msgpack_encoder.encode(consent))
        if rng.random() < 0.2:
            for n in range(5):
                item = f"i{rng.randrange(items):06d}"
                at = now - timedelta(hours=rng.uniform(1, 24 * 20))
                kind = ("view", "view", "add_to_cart", "view", "purchase")[n]
                e = Event(customer_id=c, item_id=item, event_type=kind, channel="web", timestamp=at)
                pipe.lpush(keys.recent(c), msgpack_encoder.encode(e))
                if kind == "add_to_cart":
                    line = CartLine(added_at=at, channel="web")
                    pipe.hset(keys.cart(c), item, msgpack_encoder.encode(line))
                if kind == "purchase":
                    pipe.sadd(keys.bought(c), item)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def make_offers(
    n: int, categories: list[str], items: list[str], seed: int
) -> list[dict[str, object]]:
    """A realistic mix over ``categories`` and ``items``: category discounts, item offers, cart
    and win-back offers, capped. A catalogue without categories gets item offers instead of
    category discounts."""
    rng = random.Random(seed)
    offers: list[dict[str, object]] = []
    for i in range(n):
        body: dict[str, object] = {
            "offer_id": f"o{i:02d}",
            "title": f"offer {i}",
            "kind": "percent_off",
            "amount": 10,
            "target": (
                {"categories": [rng.choice(categories)]}
                if categories
                else {"items": [rng.choice(items) for _ in range(5)]}
            ),
            "channels": ["email", "app", "web"],
            "value": rng.uniform(5, 30),
            "cost": rng.uniform(0, 3),
            "caps": [{"max": 3, "period_days": 30}],
        }
        if i % 10 == 1:
            body["target"] = {"items": [rng.choice(items) for _ in range(5)]}
        if i % 10 in (2, 3):
            body |= {"kind": "free_delivery", "amount": None, "target": {}}
        if i % 10 == 3:
            body["eligibility"] = {"trigger": "abandoned_cart"}
        if i % 10 == 4:
            body["eligibility"] = {"trigger": "win_back"}
        if i % 10 == 5:
            body["eligibility"] = {"segments": ["vip"]}
        offers.append(body)
    return offers


def free_port() -> int:
    """A port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(base: str, users: int, stop: asyncio.Event, concurrency: int) -> list[float]:
    """Closed-loop GET recommendations from ``concurrency`` clients until ``stop``; latencies."""
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:

        async def one() -> None:
            rng = random.Random()
            while not stop.is_set():
                c = f"c{rng.randrange(users):06d}"
                t0 = time.perf_counter()
                r = await client.get(f"/v1/customers/{c}/recommendations?channel=web&k=10")
                latencies.append(time.perf_counter() - t0)
                r.raise_for_status()

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return latencies


async def timed_load(base: str, users: int, seconds: float, concurrency: int) -> list[float]:
    """``load`` for ``seconds``."""
    stop = asyncio.Event()
    task = asyncio.create_task(load(base, users, stop, concurrency))
    await asyncio.sleep(seconds)
    stop.set()
    return await task


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    """Requests, rate and percentiles in milliseconds."""
    a = np.array(latencies) * 1000
    return {
        "requests": len(a),
        "rps": round(len(a) / seconds, 1),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "max_ms": round(float(a.max()), 2),
    }


async def export_with_load(
    base: str, users: int, out: Path, concurrency: int, *, record: bool = True
) -> tuple[dict[str, float], dict[str, float]]:
    """Run the export (curl, its own process) and, with ``concurrency``, the online load until
    the export ends. ``record``: the export records the contacts (caps then apply to the next)."""
    body = json.dumps({"channel": "email", "offers": 1, "items": 5, "record": record})
    cmd = [
        "curl", "-sS", "-N", "-X", "POST", "-H", f"Authorization: Bearer {KEY}",
        "-H", "content-type: application/json", "-d", body, "-o", str(out),
        f"{base}/v1/exports/offers",
    ]  # fmt: skip
    stop = asyncio.Event()
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*cmd)
    task = asyncio.create_task(load(base, users, stop, concurrency)) if concurrency else None
    await proc.wait()
    seconds = time.perf_counter() - t0
    stop.set()
    latencies = await task if task is not None else []
    lines = sum(1 for _ in out.open("rb"))
    export = {
        "customers_in_audience": users,
        "lines": lines,
        "seconds": round(seconds, 2),
        "customers_per_s": round(users / seconds, 1),
    }
    return export, summary(latencies, seconds) if latencies else {}


def main() -> int:
    """Build, serve, measure, clean up; prints and writes JSON."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--offers", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--baseline-seconds", type=float, default=10)
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/offers_export.json"))
    args = p.parse_args()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(args.redis_url)
    tmp = Path(tempfile.mkdtemp(prefix="offers-bench-"))
    server = None
    try:
        t0 = time.perf_counter()
        make_model(tmp / "models", args.users, args.items, args.factors, seed=1)
        make_state(client, Keys(prefix), args.users, args.items, seed=2)
        print(f"data generated in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        port = free_port()
        env = os.environ | {
            "PORT": str(port),
            "REDIS_URL": args.redis_url,
            "MODEL_DIR": str(tmp / "models"),
            "DATA_DIR": str(tmp / "var"),
            "API_KEYS": f"{KEY}=recommend+offers+admin",
            "RECO_KEY_PREFIX": prefix,
            "LOG_LEVEL": "WARNING",
            "RECO_MODEL_POLL_SECONDS": "0",
            "RECO_WORKERS": "1",  # one worker's figures, as documented
        }
        server = subprocess.Popen([sys.executable, "-m", "service"], env=env)
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base)
        categories = [f"cat{c:02d}" for c in range(50)]
        item_ids = [f"i{j:06d}" for j in range(args.items)]
        for offer in make_offers(args.offers, categories, item_ids, seed=3):
            r = httpx.put(
                f"{base}/v1/offers/{offer['offer_id']}",
                json=offer,
                headers={"Authorization": f"Bearer {KEY}"},
            )
            r.raise_for_status()
        result = asyncio.run(_measure(base, args, tmp))
        result["setup"] = {
            "users": args.users,
            "items": args.items,
            "factors": args.factors,
            "offers": args.offers,
            "concurrency": args.concurrency,
            "workers": 1,
            "cpus": os.cpu_count(),
        }
        print(json.dumps(result, indent=2))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=10_000))
        for lo in range(0, len(keys), 10_000):
            client.delete(*keys[lo : lo + 10_000])
        client.close()


async def _measure(base: str, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    await timed_load(base, args.users, 2, args.concurrency)  # warm up
    baseline = summary(
        await timed_load(base, args.users, args.baseline_seconds, args.concurrency),
        args.baseline_seconds,
    )
    out = tmp / "export.ndjson"
    # Alone first, recording nothing (the contact caps would thin out the next export's lines).
    alone, _ = await export_with_load(base, args.users, out, 0, record=False)
    export, during = await export_with_load(base, args.users, out, args.concurrency)
    return {
        "recommendations_alone": baseline,
        "export_alone": alone,
        "export": export,
        "recommendations_during": during,
    }


def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health/ready").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the service did not become ready")


if __name__ == "__main__":
    sys.exit(main())
