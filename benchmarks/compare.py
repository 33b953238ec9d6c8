"""Two versions of the service side by side: CPU per request under the same load, paired rounds.

Run: ``python -m benchmarks.compare --base REV [--endpoints recommendations,events,offers]
[--items 100000 | --trained MODEL_DIR [--base-trained MODEL_DIR]] [--rounds 14] [--duration 2]
[--this-env NAME=VALUE]`` (``make bench-compare BASE=REV``). Needs ``wrk``, ``git`` and a Redis
(``--redis-url``), like the serving benchmark. ``--this-env`` sets this checkout's service only:
with ``--base HEAD``, the same code with and without a setting. ``--base-trained`` has the base
serve another trained model (the same customers and items are asked of both, from
``--trained``'s): with ``--base HEAD``, what a model's parameters cost to serve, two fits of the
same data side by side.

The machines we measure on are shared: CPU time per request drifts by 10-30% within minutes,
more than most changes are worth, so two runs of the serving benchmark cannot tell a change from
the drift. Here both versions run at once: a git worktree of ``REV`` and this checkout each serve
the same generated catalogue (or, with ``--trained``, the ``LATEST`` model of a folder that
``python -m training fit`` wrote) and Redis state as a 1-worker ``python -m service`` (tracking
on, an A/B test running, as in ``benchmarks/serving.py``), and ``wrk`` loads them in alternating
rounds, the order swapped each round. Per endpoint: each version's median CPU per request,
requests/s, p99 and errors, and the median over rounds of this checkout's CPU per request
divided by the base's in the same round: below 1, this checkout is cheaper. JSON in
``benchmarks/results/compare.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.serving import (
    RESULTS,
    configure,
    delete_prefix,
    ensure_wrk,
    free_port,
    generated_workload,
    lua_script,
    run_wrk,
    seed_redis,
    serve,
    service_env,
    trained_workload,
)

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ("base", "this")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the git revision to compare against")
    parser.add_argument("--endpoints", default="recommendations,events,offers")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument(
        "--trained", type=Path, default=None, help="serve this trained model folder's LATEST"
    )
    parser.add_argument(
        "--base-trained",
        type=Path,
        default=None,
        help="the base version serves this trained model folder's LATEST instead (needs "
        "--trained; with --base HEAD: two models, the same code)",
    )
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=14)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per wrk round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--out", type=Path, default=RESULTS / "compare.json")
    parser.add_argument(
        "--this-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for this checkout's service only (repeatable): the same code with and "
        "without it, with --base HEAD",
    )
    args = parser.parse_args(argv)
    if args.base_trained and not args.trained:
        parser.error("--base-trained needs --trained: the customers and items asked of both")
    this_env = dict(item.split("=", 1) for item in args.this_env)
    args.ann, args.neighbours = "auto", 0  # what generated_workload and service_env read
    wrk = ensure_wrk()
    base_rev = subprocess.run(
        ["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    this_rev = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    report: dict[str, Any] = {
        "base": base_rev,
        "this": this_rev,
        "items": args.items,
        "trained": str(args.trained) if args.trained else None,
        "base_trained": str(args.base_trained) if args.base_trained else None,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "connections": args.connections,
        "this_env": this_env,
        "endpoints": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tree = work / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), args.base], cwd=ROOT, check=True,
            capture_output=True,
        )  # fmt: skip
        prefix = f"compare-{free_port()}"
        try:
            workload = (
                trained_workload(args.trained, work)
                if args.trained
                else generated_workload(args, work, args.items)
            )
            customers, items = workload.customers, workload.items
            model_dirs = {"base": workload.model_dir, "this": workload.model_dir}
            if args.base_trained:
                base_model = work / "base-model"
                base_model.mkdir()
                model_dirs["base"] = trained_workload(args.base_trained, base_model).model_dir
            seed_redis(args.redis_url, prefix, customers[: len(customers) // 2], items)
            with contextlib.ExitStack() as stack:
                servers = {}
                for name, root in zip(VERSIONS, (tree, ROOT), strict=True):
                    port = free_port()
                    data = work / f"var-{name}"
                    data.mkdir()
                    env = service_env(args, model_dirs[name], data, prefix, port, 1)
                    env["PYTHONPATH"] = str(root)
                    if name == "this":
                        env.update(this_env)
                    argv = [sys.executable, "-m", "service"]
                    log = work / f"{name}.log"
                    servers[name] = stack.enter_context(
                        serve(argv, env, port, log, "/health/ready", cwd=root)
                    )
                    configure(servers[name].base, workload.categories, items)
                for endpoint in args.endpoints.split(","):
                    script = lua_script(
                        work / f"{endpoint}.lua", endpoint, customers, items, workload.categories
                    )
                    for server in servers.values():  # warm-up
                        run_wrk(wrk, server, script, 2, args.connections, 1)
                    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VERSIONS}
                    for n in range(args.rounds):
                        for name in VERSIONS if n % 2 == 0 else VERSIONS[::-1]:
                            r = run_wrk(
                                wrk, servers[name], script, args.duration, args.connections, 2
                            )
                            r.pop("raw")
                            runs[name].append(r)
                    report["endpoints"][endpoint] = summary(runs)
                    print(f"   {endpoint}: {report['endpoints'][endpoint]}", flush=True)
        finally:
            delete_prefix(args.redis_url, prefix)
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False,
                capture_output=True,
            )  # fmt: skip
    print(format_table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written to {args.out}")
    return 0


def summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each version's medians and the median of the paired CPU ratios (this / base)."""

    def median(name: str, field: str) -> float:
        return round(float(statistics.median(r[field] for r in runs[name])), 2)

    ratios = [
        t["server_cpu_us_per_request"] / b["server_cpu_us_per_request"]
        for b, t in zip(runs["base"], runs["this"], strict=True)
        if b["server_cpu_us_per_request"] and t["server_cpu_us_per_request"]
    ]
    out: dict[str, Any] = {
        name: {
            "cpu_us_per_request": median(name, "server_cpu_us_per_request"),
            "rps": median(name, "rps"),
            "p99_ms": median(name, "p99_ms"),
            "errors": sum(r["errors"] for r in runs[name]),
            "rounds": runs[name],
        }
        for name in VERSIONS
    }
    out["cpu_ratio_paired_median"] = round(statistics.median(ratios), 3) if ratios else None
    out["cpu_ratios"] = sorted(round(r, 3) for r in ratios)
    return out


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"\n{report['trained'] or format(report['items'], ',') + ' items'}, "
        f"{report['rounds']} paired rounds of "
        f"{report['duration_s']} s, {report['connections']} connections: "
        f"{report['this']}{''.join(f' {k}={v}' for k, v in report['this_env'].items())} "
        f"against {report['base']}"
        + (f" serving {report['base_trained']}" if report.get("base_trained") else ""),
        "| endpoint | CPU µs/req, base | CPU µs/req, this | this / base (paired median) "
        "| req/s, base | req/s, this | p99 ms, base | p99 ms, this | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for endpoint, e in report["endpoints"].items():
        b, t = e["base"], e["this"]
        lines.append(
            f"| {endpoint} | {b['cpu_us_per_request']:,.1f} | {t['cpu_us_per_request']:,.1f} "
            f"| {e['cpu_ratio_paired_median']} | {b['rps']:,.0f} | {t['rps']:,.0f} "
            f"| {b['p99_ms']} | {t['p99_ms']} | {b['errors'] + t['errors']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
