"""Where a recommendation request's time goes, piece by piece, measured in one process.

Run: ``python -m benchmarks.hot_path [--items 100000 | --trained MODEL_DIR] [--customers 300]
[--redis-url redis://127.0.0.1:6379/15] [--out benchmarks/results/hot_path.json]``.

Times each step the recommendations route takes, in microseconds per request: the API key check,
the Redis state read (one pipelined round trip), the fold-in of recent events (with each
customer's training-row solution kept, as a returning customer finds it, and without, as their
first request does), the item-item component's sums (a trained blend's EASE part, when the
model has one), scoring as served (index or exact, the component included) and exact, the whole
ranking with its business rules (``recommend.for_customer``), and building and encoding the
response. The ranking steps are means over ``--customers`` of the model's customers, half of
them with 10 recent views and a purchase (as the serving benchmark seeds Redis), the best of 5
passes: a trained model's customers differ (a grocery history of 300 items costs several times
one of 10), so one customer says little. ``--trained`` measures the ``LATEST`` model of a folder
``python -m training fit`` wrote instead of a generated catalogue. The serving benchmark says
how fast the whole is; this says which part to work on. Prints a table and writes JSON.
"""

from __future__ import annotations

import os

# As the service does (service/__main__.py): one BLAS thread per process.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from benchmarks.catalogue import write_catalogue  # noqa: E402
from benchmarks.serving import RESULTS, delete_prefix, seed_redis  # noqa: E402
from service import ann, artifact, recommend  # noqa: E402
from service.auth import ApiKeys  # noqa: E402
from service.events import Event, EventType  # noqa: E402
from service.history import customer_history  # noqa: E402
from service.ranking import FactorModel  # noqa: E402
from service.realtime import customer_vector  # noqa: E402
from service.schemas import RecommendationResponse  # noqa: E402
from service.state import CustomerState  # noqa: E402
from service.store import Store  # noqa: E402

# Views and a purchase per customer with recent events, as benchmarks/serving.py seeds them.
_RECENT: list[EventType] = ["view"] * 10 + ["purchase"]


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


def per_request_us(fn: Callable[[Any], Any], inputs: Sequence[Any], repeats: int = 5) -> float:
    """The best over ``repeats`` passes of ``fn`` over all ``inputs``: mean µs per input."""
    for x in inputs:  # warm: the model's caches (training solutions) as a serving worker has them
        fn(x)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in inputs:
            fn(x)
        best = min(best, time.perf_counter() - t0)
    return round(best / max(len(inputs), 1) * 1e6, 1)


class Request(msgspec.Struct, frozen=True):
    """One sampled customer's request, with what each step takes as input."""

    customer_id: str
    user_row: int
    ctx: recommend.Context
    vector: Any
    history: Any


def sample(model: FactorModel, n: int, seed: int = 2) -> list[Request]:
    """``n`` of the model's customers; every other one with 10 recent views and a purchase of
    random catalogue items, newer than the model."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    picked = rng.choice(len(model.user_ids), size=min(n, len(model.user_ids)), replace=False)
    requests = []
    for i, row in enumerate(picked.tolist()):
        customer = model.user_ids[row].decode("utf-8")
        state = CustomerState()
        if i % 2 == 0:
            items = [model.item_id(j) for j in rng.choice(model.n_items, size=len(_RECENT))]
            recent = [
                Event(
                    customer_id=customer,
                    item_id=item,
                    event_type=kind,
                    channel="web",
                    timestamp=now,
                )
                for item, kind in zip(items, _RECENT, strict=True)
            ][::-1]  # newest first, as Redis holds them
            state = CustomerState(recent=recent, bought=frozenset(items[-1:]))
        ctx = recommend.Context(now=now, state=state)
        found = customer_vector(model, customer, state.recent, now)
        history = customer_history(model, customer, state.recent, now, row=found.row)
        requests.append(Request(customer, row, ctx, found.vector, history))
    return requests


def describe(model: FactorModel, requests: Sequence[Request]) -> dict[str, Any]:
    """What shapes the costs: catalogue, dimensions, index, component, history lengths."""
    index, component = model.index, model.neighbours
    lengths = [len(model.training_row(r.user_row)[0]) for r in requests]
    shape: dict[str, Any] = {
        "model_version": model.version,
        "items": model.n_items,
        "customers": len(model.user_ids),
        "dimensions": int(model.item_factors.shape[1]),
        "index": None if index is None else f"{index.nlist} clusters, {index.nprobe} probes",
        "component": None,
        "training_row_median": float(np.median(lengths)) if lengths else 0.0,
        "sampled_customers": len(requests),
    }
    if component is not None:
        dense = model.artifact.arrays.get("neighbours_dense")
        shape["component"] = (
            f"dense {dense.shape[0]:,} x {dense.shape[1]:,}"
            if dense is not None
            else f"sparse, {len(component.indices):,} stored neighbours"
        )
    return shape


def measure(
    model: FactorModel, exact: FactorModel, requests: Sequence[Request]
) -> dict[str, float]:
    """The ranking steps, µs per request over ``requests``."""
    query = recommend.Query(channel="web", k=10)
    steps = {
        "fold-in of recent events (customer_vector)": per_request_us(
            lambda r: customer_vector(model, r.customer_id, r.ctx.state.recent, r.ctx.now),
            requests,
        ),
    }

    def first_request(r: Request) -> Any:
        # As a customer's first request with new events finds it: their training row's solution
        # not kept yet (``FactorModel.solutions``).
        model._solutions.pop(r.user_row, None)
        return customer_vector(model, r.customer_id, r.ctx.state.recent, r.ctx.now)

    steps["fold-in, each customer's first request (no kept solution)"] = per_request_us(
        first_request, requests
    )
    component = model.neighbours
    if component is not None:
        steps["item-item component's sums (of the history)"] = per_request_us(
            lambda r: component.scores(*r.history), requests
        )
    steps["scoring as served (model.recommend)"] = per_request_us(
        lambda r: model.recommend(r.vector, 10, history=r.history), requests
    )
    steps["scoring, exact over all items"] = per_request_us(
        lambda r: exact.recommend(r.vector, 10, history=r.history), requests
    )
    steps["recommend.for_customer (rules + fold-in + scoring)"] = per_request_us(
        lambda r: recommend.for_customer(model, r.customer_id, query, r.ctx), requests
    )
    # The sample's two halves: customers with nothing new are answered from the customer table
    # when the model ships one (service/customer_table.py).
    for label, half in (
        ("with new events", [r for r in requests if r.ctx.state.recent]),
        ("with nothing new", [r for r in requests if not r.ctx.state.recent]),
    ):
        if not half:
            continue
        steps[f"recommend.for_customer, customers {label}"] = per_request_us(
            lambda r: recommend.for_customer(model, r.customer_id, query, r.ctx), half
        )
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument(
        "--trained", type=Path, default=None, help="measure this trained model folder's LATEST"
    )
    parser.add_argument("--customers", type=int, default=300, help="customers sampled")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--out", type=Path, default=RESULTS / "hot_path.json")
    args = parser.parse_args(argv)
    if args.customers < 1:
        parser.error("--customers must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        if args.trained is None:
            write_catalogue(Path(tmp), args.items, args.users)
        loaded = artifact.load(artifact.resolve(args.trained or Path(tmp)))
        model = FactorModel(loaded)
        exact = FactorModel(loaded, ann=ann.AnnConfig(mode="off"))
        requests = sample(model, args.customers)
        if not requests:
            parser.error("the model has no customers to sample (a popularity-only model?)")
        shape = describe(model, requests)
        steps = {"API key check (SHA-256 + dict)": per_call_us(_key_check())}
        steps["Redis customer_state (1 round trip)"] = _redis_us(args.redis_url, model)
        steps.update(measure(model, exact, requests))
        steps.update(_response_steps(model, requests[0]))
    report = {"model": shape, "us_per_request": steps}
    print(format_table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written to {args.out}")
    return 0


def format_table(report: dict[str, Any]) -> str:
    shape = report["model"]
    lines = [
        f"{shape['items']:,} items, {shape['customers']:,} customers, "
        f"{shape['dimensions']} dimensions; index: {shape['index'] or 'none'}; item-item "
        f"component: {shape['component'] or 'none'}; training row median "
        f"{shape['training_row_median']:g} items; {shape['sampled_customers']} customers sampled",
        "",
        "| step | µs per request |",
        "| --- | ---: |",
    ]
    lines += [f"| {name} | {us:,.1f} |" for name, us in report["us_per_request"].items()]
    return "\n".join(lines)


def _key_check() -> Callable[[], Any]:
    keys = ApiKeys({"k": frozenset({"recommend"})})
    return lambda: keys.scopes_for("k")


def _redis_us(url: str, model: FactorModel) -> float:
    """One customer's state read, seeded as the serving benchmark seeds it."""
    customer = model.user_ids[0].decode("utf-8")
    prefix = f"hotpath-{os.getpid()}"
    items = [model.item_id(j) for j in range(min(model.n_items, 1000))]
    seed_redis(url, prefix, [customer], items)
    try:
        return asyncio.run(_state_read_us(url, prefix, customer))
    finally:
        delete_prefix(url, prefix)


async def _state_read_us(url: str, prefix: str, customer: str, n: int = 300) -> float:
    store = Store(Redis.from_url(url), prefix=prefix)
    try:
        await store.customer_state(customer)
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                await store.customer_state(customer)
            runs.append((time.perf_counter() - t0) / n * 1e6)
        return round(statistics.median(runs), 1)
    finally:
        await store.aclose()


def _response_steps(model: FactorModel, request: Request) -> dict[str, float]:
    query = recommend.Query(channel="web", k=10)
    ranked = recommend.for_customer(model, request.customer_id, query, request.ctx)
    response = RecommendationResponse(
        request_id=uuid.uuid4().hex,
        model_version=model.version,
        customer_id=request.customer_id,
        channel="web",
        items=ranked.items,
    )
    encoder = msgspec.json.Encoder()
    return {
        "request id (uuid4)": per_call_us(lambda: uuid.uuid4().hex),
        "response JSON encode": per_call_us(lambda: encoder.encode(response)),
    }


if __name__ == "__main__":
    raise SystemExit(main())
