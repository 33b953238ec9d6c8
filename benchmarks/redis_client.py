"""What a customer-state read costs the worker's client: redis-py against the shared connection.

Run: ``python -m benchmarks.redis_client [--callers 1,8,32] [--reads 30000] [--repeats 3]``
(needs a Redis, ``--redis-url``). One process, uvloop, as a service worker runs: ``callers``
concurrent tasks each read customer states (the service's own script, ``EVALSHA`` over the four
keys of a seeded customer) until ``reads`` are done, through

- **redis-py**: its asyncio client, a command per read (the pool, a connection per caller);
- **redis-py pipelined**: the reads of one turn of the loop sent as one redis-py pipeline.
  Until the shared connection the store sent a read alone at once (the first row) and the reads
  of concurrent callers this way (``store/pipelined.py`` at 33eb495, restated here);
- **shared connection**: ``service.store.connection.SharedConnection``, as the store does now.

Prints the client process's CPU µs per read (``time.process_time``: the Redis server's CPU is not
in it) and reads/s, the median of the repeats, in alternating order; JSON in
``benchmarks/results/redis_client.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from redis.asyncio import Redis

from benchmarks.serving import RESULTS
from service.store.connection import SharedConnection
from service.store.customers import _READ_STATE
from service.store.wire import Endpoint

CUSTOMERS = 200
Read = Callable[[list[Any]], Awaitable[Any]]


class TurnPipeline:
    """The earlier store's sharing: commands of one turn of the loop as one redis-py pipeline."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.queue: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self.sending: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    async def execute(self, command: list[Any]) -> Any:
        future = asyncio.get_running_loop().create_future()
        if not self.queue:
            asyncio.get_running_loop().call_soon(self._send)
        self.queue.append((command, future))
        return await future

    def _send(self) -> None:
        batch, self.queue = self.queue, []
        task = asyncio.ensure_future(self._run(batch))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _run(self, batch: list[tuple[list[Any], asyncio.Future[Any]]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for command, _ in batch:
            pipe.execute_command(*command)
        for (_, future), reply in zip(batch, await pipe.execute(), strict=True):
            future.set_result(reply)


async def measure(read: Read, sha: str, prefix: str, callers: int, reads: int) -> dict[str, float]:
    each = reads // callers

    async def caller(offset: int) -> None:
        for n in range(each):
            c = f"{prefix}:{{c:{(offset + n) % CUSTOMERS}}}"
            await read(
                ["EVALSHA", sha, 4, f"{c}:recent", f"{c}:bought", f"{c}:cart", f"{c}:consent", 9]
            )

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(i * 7) for i in range(callers)))
    done = each * callers
    return {
        "cpu_us_per_read": 1e6 * (time.process_time() - cpu) / done,
        "reads_per_s": done / (time.perf_counter() - wall),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"bench-client-{time.time_ns()}"
    client = Redis.from_url(args.redis_url, socket_timeout=5)
    try:
        for n in range(CUSTOMERS):  # ten recent events, three purchases, a cart, consent
            c = f"{prefix}:{{c:{n}}}"
            await client.rpush(f"{c}:recent", *[b"e" * 80] * 10)
            await client.sadd(f"{c}:bought", "i1", "i2", "i3")
            await client.hset(f"{c}:cart", mapping={"i4": "1", "i5": "2"})
            await client.set(f"{c}:consent", b"c" * 40)
        sha = await client.script_load(_READ_STATE)
        shared = SharedConnection(Endpoint.of(client))
        turn = TurnPipeline(client)

        async def one_by_one(command: list[Any]) -> Any:
            return await client.execute_command(*command)

        async def on_shared(command: list[Any]) -> Any:
            return (await shared.execute([tuple(command)]))[0]

        clients: dict[str, Read] = {
            "redis-py": one_by_one,
            "redis-py pipelined": turn.execute,
            "shared connection": on_shared,
        }
        results: dict[str, Any] = {}
        for callers in (int(c) for c in args.callers.split(",")):
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in clients}
            for repeat in range(args.repeats):
                order = list(clients) if repeat % 2 == 0 else list(clients)[::-1]
                for name in order:
                    runs[name].append(
                        await measure(clients[name], sha, prefix, callers, args.reads)
                    )
            results[str(callers)] = {
                name: {
                    field: round(statistics.median(r[field] for r in rs), 1)
                    for field in ("cpu_us_per_read", "reads_per_s")
                }
                for name, rs in runs.items()
            }
        await shared.aclose()
        return results
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", default="1,8,32")
    parser.add_argument("--reads", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--out", type=Path, default=RESULTS / "redis_client.json")
    args = parser.parse_args(argv)
    results = uvloop.run(run(args))
    print("| concurrent callers | client | CPU µs/read | reads/s | CPU / shared connection's |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for callers, by_client in results.items():
        shared = by_client["shared connection"]["cpu_us_per_read"]
        for name, r in by_client.items():
            print(
                f"| {callers} | {name} | {r['cpu_us_per_read']:,.1f} | {r['reads_per_s']:,.0f} "
                f"| {r['cpu_us_per_read'] / shared:.2f} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
