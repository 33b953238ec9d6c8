"""Serving overhead of measurement: recommendation throughput with tracking+experiments on vs off.

Run: ``python -m benchmarks.serving_overhead [--items 100000] [--rounds 3] [--seconds 5]``.
Starts two uvicorn servers on one Redis and one random model, identical except
``RECO_TRACKING``; the "on" one also runs an A/B test on the channel asked. Loads them in
alternating rounds with ``wrk`` (a Python load loop when wrk is absent) over random known
customers, and prints the median requests per second of each and the drop.

On a shared machine throughput swings with other load, so each round also reads the server
process's CPU time (``/proc/<pid>/stat``): CPU microseconds per request is what tracking adds,
and ``1e6 / cpu_us`` is the throughput one fully used core would give.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service import artifact
from service.embedded_redis import EmbeddedRedis

KEY = "bench-admin-key"
EXPERIMENT = {"variants": [{"name": "control"}, {"name": "treatment"}], "channels": ["web"]}
WRK_SCRIPT = """
math.randomseed(os.time())
request = function()
  local path = "/v1/customers/u" .. math.random(0, %d) .. "/recommendations?channel=web&k=10"
  return wrk.format("GET", path)
end
"""


def build_model(model_dir: Path, n_users: int, n_items: int, dim: int = 64) -> str:
    """A random model of the given size, saved as LATEST; returns its version."""
    rng = np.random.default_rng(7)
    pop = rng.random(n_items).astype(np.float32)
    arrays, channels = artifact.pack(
        user_ids=[f"u{i}" for i in range(n_users)],
        user_factors=rng.standard_normal((n_users, dim)).astype(np.float32),
        item_ids=[f"i{j}" for j in range(n_items)],
        item_factors=rng.standard_normal((n_items, dim)).astype(np.float32),
        item_categories=[f"c{j % 50}" for j in range(n_items)],
        popularity={"all": pop, "web": pop},
        bought_indptr=np.zeros(n_users + 1, np.int64),
        bought_items=np.zeros(0, np.int32),
    )
    manifest = artifact.Manifest(
        format_version=artifact.FORMAT_VERSION,
        model_version="bench",
        algorithm="random",
        created_at=datetime.now(UTC),
        popularity_channels=channels,
        counts={"users": n_users, "items": n_items},
    )
    artifact.save(model_dir, manifest, arrays)
    return manifest.model_version


def start_server(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """One uvicorn worker serving the app; waits until it answers."""
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    cmd += ["--port", str(port), "--loop", "uvloop", "--no-access-log"]
    cmd += ["--http", "service.http_protocol:GatheringHttpToolsProtocol"]  # as python -m service
    cmd += ["--log-level", "warning"]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server on port {port} did not become ready")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    proc: subprocess.Popen[bytes], port: int, seconds: float, n_users: int, conns: int, script: Path
) -> tuple[float, float]:
    """One round: requests per second, and server CPU microseconds per request."""
    before = cpu_seconds(proc.pid)
    rps = load(port, seconds, n_users, conns, script)
    used = cpu_seconds(proc.pid) - before
    return rps, 1e6 * used / max(1.0, rps * seconds)


def load(port: int, seconds: float, n_users: int, connections: int, script: Path) -> float:
    """Requests per second over ``seconds`` against one server."""
    url = f"http://127.0.0.1:{port}"
    if shutil.which("wrk"):
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "-s", str(script)]
        out = subprocess.run(
            [*cmd, "-H", f"Authorization: Bearer {KEY}", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if "Non-2xx" in out:
            raise RuntimeError(f"errors during the run:\n{out}")
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return _python_load(url, seconds, n_users)


def _python_load(url: str, seconds: float, n_users: int) -> float:
    rng = np.random.default_rng()
    done = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            http.get(f"/v1/customers/u{rng.integers(n_users)}/recommendations?channel=web&k=10")
            done += 1
    return done / seconds


async def _asgi_cpu_us(app: Any, n_users: int, requests: int) -> float:
    """CPU microseconds per recommendation request, calling the ASGI app directly."""
    rng = np.random.default_rng(11)
    headers = [(b"authorization", f"Bearer {KEY}".encode())]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"status {message['status']}")

    async def one(customer: int) -> None:
        path = f"/v1/customers/u{customer}/recommendations"
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"channel=web&k=10",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        await app(scope, receive, send)

    async with app.lifespan():
        for _ in range(300):  # warm-up
            await one(int(rng.integers(n_users)))
        started = time.process_time()
        for _ in range(requests):
            await one(int(rng.integers(n_users)))
        return 1e6 * (time.process_time() - started) / requests


def in_process(
    model_dir: Path, redis_url: str, n_users: int, n_items: int, rounds: int
) -> dict[str, float]:
    """Median in-process CPU per request, tracking on and off, alternating rounds."""
    import asyncio

    from service.app import create_app
    from service.settings import Settings

    results: dict[str, list[float]] = {"on": [], "off": []}
    for n in range(rounds):
        for name in ("on", "off") if n % 2 == 0 else ("off", "on"):
            settings = Settings(
                redis_url=redis_url,
                model_dir=str(model_dir),
                data_dir=str(model_dir.parent / "var"),
                api_keys=f"{KEY}=recommend+admin",
                model_poll_seconds=0,
                key_prefix="bench",
                log_level="WARNING",
                tracking=name == "on",
            )
            app = create_app(settings)
            requests = max(300, min(2000, 10_000_000 // n_items))  # ~10 s a round at most
            results[name].append(asyncio.run(_asgi_cpu_us(app, n_users, requests)))
    return {name: statistics.median(values) for name, values in results.items()}


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(items: int, users: int, rounds: int, seconds: float, connections: int) -> dict[str, object]:
    """Both servers, alternating rounds; returns the result row."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build_model(folder / "models", users, items)
        script = folder / "requests.lua"
        script.write_text(WRK_SCRIPT % (users - 1))
        embedded = None
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            embedded = EmbeddedRedis(folder / "redis")
            redis_url = embedded.start()
        base = {
            "RECO_REDIS_URL": redis_url,
            "RECO_MODEL_DIR": str(folder / "models"),
            "RECO_DATA_DIR": str(folder / "var"),
            "RECO_API_KEYS": f"{KEY}=recommend+admin+events",
            "RECO_MODEL_POLL_SECONDS": "0",
            "RECO_KEY_PREFIX": "bench",
        }
        ports = {"on": free_port(), "off": free_port()}
        servers = {
            name: start_server(port, {**base, "RECO_TRACKING": str(name == "on").lower()})
            for name, port in ports.items()
        }
        try:
            # The experiment lives in Redis: the in-process "on" apps below see it too.
            headers = {"Authorization": f"Bearer {KEY}"}
            url = f"http://127.0.0.1:{ports['on']}/v1/experiments/bench-ab"
            httpx.put(url, json=EXPERIMENT, headers=headers).raise_for_status()
            rps: dict[str, list[float]] = {"on": [], "off": []}
            cpu_us: dict[str, list[float]] = {"on": [], "off": []}
            for name in ("on", "off"):  # warm-up: caches, first requests
                load(ports[name], 2, users, connections, script)
            for n in range(rounds):
                order = ("on", "off") if n % 2 == 0 else ("off", "on")
                for name in order:
                    args = (ports[name], seconds, users, connections, script)
                    r, c = measure(servers[name], *args)
                    rps[name].append(r)
                    cpu_us[name].append(c)
            direct = in_process(folder / "models", redis_url, users, items, rounds)
        finally:
            for proc in servers.values():
                proc.terminate()
                proc.wait(timeout=10)
            if embedded is not None:
                embedded.stop()
    on, off = statistics.median(rps["on"]), statistics.median(rps["off"])
    cpu_on, cpu_off = statistics.median(cpu_us["on"]), statistics.median(cpu_us["off"])
    return {
        "items": items,
        "users": users,
        "rounds_rps": rps,
        "rounds_cpu_us": cpu_us,
        "rps_on": on,
        "rps_off": off,
        "drop_percent": 100 * (off - on) / off,
        "cpu_us_on": cpu_on,
        "cpu_us_off": cpu_off,
        "cpu_drop_percent": 100 * (1 - cpu_off / cpu_on),
        "asgi_cpu_us_on": direct["on"],
        "asgi_cpu_us_off": direct["off"],
        "asgi_drop_percent": 100 * (1 - direct["off"] / direct["on"]),
        "cpus": os.cpu_count(),
        "tool": "wrk" if shutil.which("wrk") else "python",
    }


def main() -> int:
    """Parse arguments, run, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 5_000])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2)
    parser.add_argument("--connections", type=int, default=16)
    default_out = Path("benchmarks/results/serving_overhead.json")
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    rows = [run(n, args.users, args.rounds, args.seconds, args.connections) for n in args.items]
    print(
        f"{'items':>8} {'rps off':>9} {'rps on':>9} {'drop':>7}"
        f" {'server cpu us/req off':>22} {'on':>6} {'drop':>7}"
        f" {'in-process cpu us/req off':>26} {'on':>6} {'drop':>7}"
    )
    for r in rows:
        print(
            f"{r['items']:>8} {r['rps_off']:>9.0f} {r['rps_on']:>9.0f} {r['drop_percent']:>6.1f}%"
            f" {r['cpu_us_off']:>22.0f} {r['cpu_us_on']:>6.0f} {r['cpu_drop_percent']:>6.1f}%"
            f" {r['asgi_cpu_us_off']:>26.0f} {r['asgi_cpu_us_on']:>6.0f}"
            f" {r['asgi_drop_percent']:>6.1f}%"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
