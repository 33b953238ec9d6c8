"""Where a recommendation request's time goes, piece by piece, measured in one process.

Run: ``python -m benchmarks.hot_path [--items 100000] [--redis-url redis://127.0.0.1:6379/15]``.
Times each step the recommendations route takes, in microseconds per call (median of repeats):
the API key check, Redis state read (one pipelined round trip), scoring (index or exact), the
business rules around scoring, building and encoding the response. The serving benchmark says how
fast the whole is; this says which part to work on.
"""

from __future__ import annotations

import os

# As the service does (service/__main__.py): one BLAS thread per process.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import msgspec  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from benchmarks.catalogue import write_catalogue  # noqa: E402
from benchmarks.serving import delete_prefix, seed_redis  # noqa: E402
from service import ann, artifact, recommend  # noqa: E402
from service.auth import ApiKeys  # noqa: E402
from service.ranking import FactorModel  # noqa: E402
from service.realtime import customer_vector  # noqa: E402
from service.schemas import RecommendationResponse  # noqa: E402
from service.store import Store  # noqa: E402


def per_call_us(fn: Callable[[], Any], n: int = 300, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean time of ``n`` calls, in microseconds."""
    fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return round(statistics.median(runs), 1)


async def redis_us(url: str, prefix: str, customer: str, n: int = 300) -> float:
    store = Store(Redis.from_url(url), prefix=prefix)
    await store.customer_state(customer)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            await store.customer_state(customer)
        runs.append((time.perf_counter() - t0) / n * 1e6)
    await store.aclose()
    return round(statistics.median(runs), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_catalogue(Path(tmp), args.items, args.users)
        loaded = artifact.load(artifact.resolve(tmp))
        model = FactorModel(loaded)
        exact = FactorModel(loaded, ann=ann.AnnConfig(mode="off"))
        customer = "c0000042"
        prefix = f"hotpath-{os.getpid()}"
        seed_redis(args.redis_url, prefix, [customer], [f"i{j:07d}" for j in range(1000)])
        try:
            state = asyncio.run(_state(args.redis_url, prefix, customer))
            query = recommend.Query(channel="web", k=10)
            user = model.user_vector(model.user_row(customer))  # type: ignore[arg-type]
            ctx = recommend.Context(now=datetime.now(UTC), state=state)
            ranked = recommend.for_customer(model, customer, query, ctx)
            response = RecommendationResponse(
                request_id=uuid.uuid4().hex,
                model_version=model.version,
                customer_id=customer,
                channel="web",
                items=ranked.items,
            )
            keys = ApiKeys({"k": frozenset({"recommend"})})
            encoder = msgspec.json.Encoder()
            steps = {
                "API key check (SHA-256 + dict)": per_call_us(lambda: keys.scopes_for("k")),
                "Redis customer_state (1 round trip)": asyncio.run(
                    redis_us(args.redis_url, prefix, customer)
                ),
                "scoring: model.recommend (as served)": per_call_us(
                    lambda: model.recommend(user, 10)
                ),
                "scoring: exact over all items": per_call_us(lambda: exact.recommend(user, 10)),
                "realtime fold-in of recent events": per_call_us(
                    lambda: customer_vector(model, customer, state.recent, ctx.now)
                ),
                "recommend.for_customer (rules + fold-in + scoring)": per_call_us(
                    lambda: recommend.for_customer(model, customer, query, ctx)
                ),
                "request id (uuid4)": per_call_us(lambda: uuid.uuid4().hex),
                "response JSON encode": per_call_us(lambda: encoder.encode(response)),
            }
        finally:
            delete_prefix(args.redis_url, prefix)
    print(f"{args.items:,} items, index: {'yes' if model.index else 'no'}")
    for name, us in steps.items():
        print(f"  {name:42} {us:>9,.1f} µs")


async def _state(url: str, prefix: str, customer: str) -> Any:
    store = Store(Redis.from_url(url), prefix=prefix)
    try:
        return await store.customer_state(customer)
    finally:
        await store.aclose()


if __name__ == "__main__":
    main()
