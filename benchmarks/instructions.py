"""Instructions per request: each endpoint of the service beside the bare route, by callgrind.

Run: ``python -m benchmarks.instructions [--items 100000] [--requests 500] [--trained MODEL_DIR]``
(``make bench-instructions``). Needs valgrind (Debian: ``apt-get install -y valgrind``) and a
Redis (``--redis-url``, keys under a unique prefix, deleted afterwards).

Requests/s and CPU time per request move with whatever else this shared machine runs; the number
of instructions a request executes barely does (callgrind counts them). So this is the figure that
compares two versions of the code, and the serving benchmark's requests/s the one that says what a
machine serves: instructions are not time (a cache miss costs more than an add). What the worker
does each second besides the requests is counted with them, and under callgrind a request's wall
time moves with the machine's load: model polling is off here for that reason, but the tracking's
flush each second is not (it is part of what a request costs). Three runs of one version on a
busy machine counted 1,740,620, 1,866,482 (polling on) and 1,815,319 (off) instructions per
recommendation, the bare route 382,900-384,705: differences of a few percent are not a result.

The service (and the bare route's app) runs under ``valgrind --tool=callgrind
--instr-atstart=no``: it loads its model and answers a warm-up uninstrumented, then counting is
switched on and each endpoint gets ``--requests`` requests, one at a time, from a fixed random
sequence of the serving benchmark's customers (half with recent events in Redis, 5% unknown),
items and channels, with the same A/B test running; the counters are dumped after each endpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.serving import (
    API_KEY,
    EXPERIMENT,
    RESULTS,
    Server,
    Workload,
    bare_argv,
    delete_prefix,
    free_port,
    generated_workload,
    http_put_json,
    seed_redis,
    service_env,
    trained_workload,
)

# (method, path, body) of one request.
Request = tuple[str, str, bytes | None]
CHANNELS = ("web", "app", "email", "store")
BARE_ENDPOINTS = ("bare route", "bare route, service's signature")
SERVICE_ENDPOINTS = ("recommendations", "similar", "offers", "events")


def requests_for(
    endpoint: str, workload: Workload, n: int, seed: int, placement: str | None = None
) -> list[Request]:
    """``n`` requests to ``endpoint``, picked as the serving benchmark's wrk scripts pick them
    (recommendations and similar items naming ``placement``, when given)."""
    rng = random.Random(seed)
    q = functools.partial(urllib.parse.quote, safe="")
    slot = f"&placement={placement}" if placement else ""

    def one() -> Request:
        customer, item = rng.choice(workload.customers), rng.choice(workload.items)
        channel = rng.choice(CHANNELS)
        if endpoint == "bare route":
            return "GET", f"/bare/{q(customer)}", None
        if endpoint == "bare route, service's signature":
            return "GET", f"/shaped/{q(customer)}?k=10&channel={channel}", None
        if endpoint == "recommendations":
            return (
                "GET",
                f"/v1/customers/{q(customer)}/recommendations?k=10&channel={channel}{slot}",
                None,
            )
        if endpoint == "similar":
            return "GET", f"/v1/items/{q(item)}/similar?k=10{slot}", None
        if endpoint == "offers":
            return "GET", f"/v1/customers/{q(customer)}/offers?channel=email", None
        body = {"customer_id": customer, "item_id": item, "event_type": "view", "channel": channel}
        return "POST", "/v1/events", json.dumps(body).encode()

    return [one() for _ in range(n)]


class Callgrind:
    """Counting control of a server running under callgrind."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid, self.out = str(pid), out

    def start(self) -> None:
        """Switch counting on, from zero."""
        for command in (["-i", "on"], ["-z"]):
            control = ["callgrind_control", *command, self.pid]
            subprocess.run(control, check=True, capture_output=True)

    def take(self, label: str) -> int:
        """The instructions executed since ``start`` or the previous ``take`` (a dump resets)."""
        dumps = f"{self.out.name}.{self.pid}.*"
        before = set(self.out.parent.glob(dumps))
        # The dump's label: callgrind_control passes on letters and dashes safely.
        tag = re.sub(r"[^a-z0-9]+", "-", label.lower())
        subprocess.run(["callgrind_control", "-d", tag, self.pid], check=True, capture_output=True)
        return _totals(lambda: set(self.out.parent.glob(dumps)) - before)


@contextlib.contextmanager
def counted(
    argv: list[str], env: dict[str, str], port: int, work: Path, ready: str
) -> Iterator[tuple[Server, Callgrind]]:
    """A server under callgrind, not counting until ``Callgrind.start``."""
    out = work / f"callgrind.{port}"
    valgrind = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}.%p",
    ]
    server = Server(valgrind + argv, env, port, work / f"server-{port}.log")
    try:
        server.wait(ready, timeout=900)
        yield server, Callgrind(server.proc.pid, out)
    finally:
        server.stop()


def _totals(new_dumps: Callable[[], set[Path]]) -> int:
    """The instruction total of the dump callgrind writes next (it may take a moment)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for path in new_dumps():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def send_all(port: int, requests: list[Request]) -> None:
    """The requests one after another on one keep-alive connection; each must succeed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    try:
        for method, path, body in requests:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {response.status}")
    finally:
        conn.close()


def measure(
    args: argparse.Namespace, workload: Workload, work: Path, prefix: str
) -> dict[str, float]:
    """Instructions per request of every endpoint, bare routes first."""
    per_request: dict[str, float] = {}
    port = free_port()
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with counted(bare_argv(port), env, port, work, "/bare/x") as (_, callgrind):
        _count_endpoints(args, workload, port, callgrind, BARE_ENDPOINTS, per_request)
    port = free_port()
    env = service_env(args, workload.model_dir, work / "var", prefix, port, 1)
    env["PYTHONHASHSEED"] = "0"
    # No model polling: its work each second is counted with the requests, and under callgrind
    # a request takes a wall time that moves with the machine's load (a recommendation counted
    # 1,740,620 and 1,866,482 instructions in two runs of the same code with polling on).
    env["RECO_MODEL_POLL_SECONDS"] = "0"
    argv = [sys.executable, "-m", "service"]
    with counted(argv, env, port, work, "/health/ready") as (server, callgrind):
        http_put_json(f"{server.base}/v1/experiments/bench-ab", EXPERIMENT)
        _count_endpoints(args, workload, port, callgrind, SERVICE_ENDPOINTS, per_request)
    return per_request


def _count_endpoints(
    args: argparse.Namespace,
    workload: Workload,
    port: int,
    callgrind: Callgrind,
    endpoints: tuple[str, ...],
    per_request: dict[str, float],
) -> None:
    # Warm-up, uncounted: first requests touch the memory-mapped arrays and fill caches.
    for endpoint in endpoints:
        send_all(port, requests_for(endpoint, workload, args.warmup, 1, args.placement))
    callgrind.start()
    for endpoint in endpoints:
        send_all(port, requests_for(endpoint, workload, args.requests, 2, args.placement))
        per_request[endpoint] = callgrind.take(endpoint) / args.requests
        print(f"   {endpoint:34} {per_request[endpoint]:>12,.0f} instructions", flush=True)


def format_table(report: dict[str, Any]) -> str:
    bare = report["instructions_per_request"]["bare route"]
    lines = [
        f"{report['model']}: {report['requests']} requests per endpoint",
        "| endpoint | instructions per request | bare route's / endpoint's |",
        "| --- | ---: | ---: |",
    ]
    for endpoint, n in report["instructions_per_request"].items():
        lines.append(f"| {endpoint} | {n:,.0f} | {bare / n:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="generated catalogue size")
    parser.add_argument("--users", type=int, default=200_000, help="customers in the model")
    parser.add_argument("--neighbours", type=int, default=0, help="as in benchmarks.serving")
    parser.add_argument("--trained", type=Path, help="serve this trained model folder instead")
    parser.add_argument("--requests", type=int, default=500, help="counted per endpoint")
    parser.add_argument("--warmup", type=int, default=200, help="uncounted per endpoint first")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--out", type=Path, default=RESULTS / "instructions.json")
    parser.add_argument("--placement", help="name this placement on recommendations and similar")
    # The index as the service decides by default (``service_env`` reads it).
    parser.set_defaults(ann="auto")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("needs valgrind: apt-get install -y valgrind")
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        work = Path(tmp)
        if args.trained is not None:
            workload = trained_workload(args.trained, work)
        else:
            workload = generated_workload(args, work, args.items)
        prefix = f"bench-instr-{time.time_ns()}"
        customers = workload.customers
        seed_redis(args.redis_url, prefix, customers[: len(customers) // 2], workload.items)
        print(f"== {workload.label}", flush=True)
        try:
            per_request = measure(args, workload, work, prefix)
        finally:
            delete_prefix(args.redis_url, prefix)
    report = {
        "model": workload.label,
        "requests": args.requests,
        "instructions_per_request": per_request,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(format_table(report))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
