"""Serving benchmark: the service under load, beside a bare Litestar route, at several sizes.

Run: ``python -m benchmarks.serving [--sizes 10000,100000,1000000] [--duration 10]
[--connections 32] [--workers 1,4] [--users 200000] [--trained MODEL_DIR]``
(``make bench-serving``). Needs ``wrk``
(Debian: ``apt-get install -y wrk``; installed automatically when missing and running as root)
and a Redis (``--redis-url``, default ``redis://127.0.0.1:6379/15``; keys under a unique prefix,
deleted afterwards).

For each catalogue size it generates an artifact (clustered factors, ANN index shipped in it), or
with ``--trained DIR`` serves a model ``python -m training fit`` wrote (real customers' histories, a
blend's sparse item-item component: what a retailer's model costs per request), seeds customers'
real-time state in Redis (recent events and consent to email marketing for half of them), starts
``python -m service`` as a separate process and drives it with ``wrk`` (Lua scripts that vary
customers and items) for a fixed time at fixed concurrency, endpoint by endpoint, right after the
bare route (``benchmarks/bare_app.py``, same uvicorn settings) and two references built on it: its
answer behind the recommendations route's signature and API-key check, and the same after reading
the customer's real-time state from Redis as the service does (what any personalised answer costs
before ranking). Per endpoint: requests/s, p50, p99, errors (non-2xx and socket errors), the ratio
to the bare route, and memory per worker (RSS and PSS from /proc/<pid>/smaps_rollup). It reports ANN
recall@10 against exact scoring (unfiltered and within a category), publishes a new model version
during a load run (hot swap: errors, seconds until the new version is served) and writes
benchmarks/results/serving.json.

The service runs as retailers measuring it would: tracking on, an A/B test running on every channel
and ``N_OFFERS`` offers to choose from. Per size, two fresh 1-worker servers identical but for
``RECO_TRACKING`` (the "on" one with the A/B test) are also loaded with recommendations in
alternating rounds (``--overhead-rounds``, 0 skips it): the throughput and CPU that measurement
costs. And the 1-worker service answers recommendations at fewer connections too (``--concurrency``,
default 2,4,8,16): at 32 a saturated worker's latency is mostly its queue.
"""

from __future__ import annotations

import os

# As the service does (service/__main__.py): one BLAS thread per process, for the recall timings.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterable, Iterator  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402

from benchmarks.catalogue import (  # noqa: E402
    N_CATEGORIES,
    category_names,
    write_catalogue,
)
from benchmarks.offers_export import make_offers  # noqa: E402
from service import ann, artifact  # noqa: E402
from service.events import Event, msgpack_encoder  # noqa: E402
from service.ranking import FactorModel  # noqa: E402
from service.similar_table import unit_rows  # noqa: E402
from service.state import Consent  # noqa: E402
from service.store import Keys  # noqa: E402
from service.topk import largest  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
API_KEY = "bench-key"
# Every service run has an A/B test running on every channel, as a retailer measuring would.
EXPERIMENT = {"variants": [{"name": "control"}, {"name": "treatment"}]}
# And this many offers (benchmarks/offers_export.py's mix) for the offers endpoint to choose from.
N_OFFERS = 20
# "category": recommendations restricted to one of the catalogue's 50 categories (2% of it).
ENDPOINTS = ("recommendations", "category", "session", "similar", "offers", "events")
# The bare app's references beyond the bare route: result key -> (its wrk script's endpoint,
# its label in the table and the chart).
REFERENCES = {
    "shaped": ("shaped", "bare route, service's signature"),
    "state_read": ("state", "bare route, signature + state read"),
}


# ----------------------------------------------------------------------------- processes


def ensure_wrk() -> str:
    """The path of ``wrk``; installs the Debian package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        found = shutil.which("wrk")
    if not found:
        sys.exit("this benchmark needs wrk: install it (Debian/Ubuntu: apt-get install -y wrk)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server process (the service or the bare route) and its worker processes."""

    def __init__(
        self, argv: list[str], env: dict[str, str], port: int, log: Path, cwd: Path | None = None
    ) -> None:
        self.port = port
        self.log = log
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, path: str, timeout: float = 180.0, expect_workers: int = 1) -> None:
        """Until ``path`` answers 200 (and ``expect_workers`` workers are up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            status, _ = http_get(self.base + path)
            if status == 200 and len(self.worker_pids()) >= expect_workers:
                # Several workers: each loads the model; give the others time to be ready.
                if expect_workers > 1:
                    oks = sum(http_get(self.base + path)[0] == 200 for _ in range(40))
                    if oks < 40:
                        time.sleep(0.5)
                        continue
                return
            time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def worker_pids(self) -> list[int]:
        """The processes that answer requests: the children of uvicorn's supervisor, if any."""
        children = _children(self.proc.pid)
        # uvicorn with workers > 1: a supervisor and N spawned workers (plus multiprocessing's
        # resource tracker, which has no sockets: filtered by its command line).
        workers = [p for p in children if "resource_tracker" not in _cmdline(p)]
        return workers or [self.proc.pid]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def bare_argv(port: int) -> list[str]:
    """The bare route's app (``benchmarks/bare_app.py``) under uvicorn, as the service runs."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "benchmarks.bare_app:create_app",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
    ]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return sorted(out)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def memory(pid: int) -> dict[str, float]:
    """RSS and PSS of ``pid`` in MiB (PSS divides shared pages among the processes sharing them)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) / 1024
    return {"rss_mib": round(fields["Rss"], 1), "pss_mib": round(fields["Pss"], 1)}


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {API_KEY}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def http_put_json(url: str, body: dict[str, Any], timeout: float = 5.0) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return int(r.status)


def configure(base: str, categories: list[str] | None, items: list[str]) -> None:
    """Start what a retailer measuring the service runs: the A/B test, and offers over the
    catalogue's ``categories`` (default: the generated catalogue's) and ``items``."""
    http_put_json(f"{base}/v1/experiments/bench-ab", EXPERIMENT)
    names = categories if categories is not None else category_names(np.arange(N_CATEGORIES))
    for offer in make_offers(N_OFFERS, names, items, seed=3):
        http_put_json(f"{base}/v1/offers/{offer['offer_id']}", offer)


# ----------------------------------------------------------------------------- load


def lua_script(
    path: Path,
    endpoint: str,
    customers: list[str],
    items: list[str],
    categories: list[str] | None = None,
    prefix: str = "",
) -> Path:
    """A wrk script that picks a random customer, item or category per request.

    ``categories``: the model's (default: the generated catalogue's 50, benchmarks/catalogue.py).
    ``prefix``: the seeded Redis keys' prefix, for the ``state`` reference route.
    """
    names = categories if categories is not None else category_names(np.arange(N_CATEGORIES))
    # Real ids and category names have spaces, slashes and ampersands ("BANK CHARGES"): paths and
    # query strings get them percent-encoded, the events' JSON bodies JSON-escaped.
    if endpoint in ("events", "session"):
        c, i = _lua_list([_json_text(x) for x in customers]), _lua_list(map(_json_text, items))
    else:
        c, i = _lua_list(map(_quoted, customers)), _lua_list(map(_quoted, items))
    cats = _lua_list(map(_quoted, names))
    head = (
        f"local customers = {{{c}}}\nlocal items = {{{i}}}\n"
        f'wrk.headers["Authorization"] = "Bearer {API_KEY}"\n'
        "local channels = {'web', 'app', 'email', 'store'}\n"
        f"local categories = {{{cats}}}\n"
        "math.randomseed(os.time())\n"
        "local function pick(t) return t[math.random(#t)] end\n"
    )
    bodies = {
        "bare": 'return wrk.format("GET", "/bare/" .. pick(customers))',
        "shaped": (
            'return wrk.format("GET", "/shaped/" .. pick(customers) .. '
            '"?k=10&channel=" .. pick(channels))'
        ),
        "state": (
            'return wrk.format("GET", "/state/" .. pick(customers) .. '
            f'"?k=10&prefix={_quoted(prefix)}&channel=" .. pick(channels))'
        ),
        "recommendations": (
            'return wrk.format("GET", "/v1/customers/" .. pick(customers) .. '
            '"/recommendations?k=10&channel=" .. pick(channels))'
        ),
        "category": (
            'return wrk.format("GET", "/v1/customers/" .. pick(customers) .. '
            '"/recommendations?k=10&channel=" .. pick(channels) .. "&category=" .. '
            "pick(categories))"
        ),
        "similar": 'return wrk.format("GET", "/v1/items/" .. pick(items) .. "/similar?k=10")',
        "offers": (
            'return wrk.format("GET", "/v1/customers/" .. pick(customers) .. '
            '"/offers?channel=email")'
        ),
        # An anonymous visitor's session (a cookie no one is linked to, three items viewed, one
        # in the cart), as a storefront asks for a visitor who has not logged in.
        "session": (
            'local body = \'{"identifier":"cookie:\' .. math.random(1, 1000000) .. '
            '\'","channel":"web","k":10,"context":{"viewed":["\' .. pick(items) .. '
            '\'","\' .. pick(items) .. \'","\' .. pick(items) .. \'"],"cart":["\' .. '
            "pick(items) .. '\"]}}'\n"
            '  return wrk.format("POST", "/v1/recommendations", {["Content-Type"] = '
            f'"application/json", ["Authorization"] = "Bearer {API_KEY}"}}, body)'
        ),
        # The store tablet's customer view (for benchmarks.compare; not in the serving run).
        "profile": 'return wrk.format("GET", "/v1/customers/" .. pick(customers) .. "/profile")',
        "events": (
            'local body = \'{"customer_id":"\' .. pick(customers) .. \'","item_id":"\' .. '
            'pick(items) .. \'","event_type":"view","channel":"\' .. pick(channels) .. '
            "'\"}'\n"
            # wrk.format's own headers replace wrk.headers: the key goes in again.
            '  return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json", '
            f'["Authorization"] = "Bearer {API_KEY}"}}, body)'
        ),
    }
    path.write_text(head + "request = function()\n  " + bodies[endpoint] + "\nend\n")
    return path


def _quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _json_text(text: str) -> str:
    """``text`` as it stands between the quotes of a JSON string."""
    return json.dumps(text)[1:-1]


def _lua_list(texts: Iterable[str]) -> str:
    """A Lua table constructor's items: each text as a double-quoted Lua string."""
    return ",".join('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in texts)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes used so far (from /proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def cpu_ratio(bare: dict[str, Any], result: dict[str, Any]) -> float | None:
    """The bare route's CPU time per request over the endpoint's: capacity on an idle machine."""
    b, r = bare["server_cpu_us_per_request"], result["server_cpu_us_per_request"]
    return round(b / r, 3) if b and r else None


def run_wrk(
    wrk: str, server: Server, script: Path, duration: float, connections: int, threads: int
) -> dict[str, Any]:
    """One wrk run; requests/s, p50/p99 in ms and errors, parsed from its report.

    Also the server's CPU time per request (µs): unlike requests/s it barely depends on what else
    the machine runs, so it compares the service with the bare route on a busy machine too.
    """
    url = server.base
    pids = server.worker_pids()
    cpu_before = cpu_seconds(pids)
    seconds = max(1, round(duration))
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s"]
    with subprocess.Popen(
        [*argv, "--latency", "-s", str(script), url], stdout=subprocess.PIPE, text=True
    ) as proc:
        # Half way through, every connection is open and keeps its worker until the end.
        time.sleep(seconds / 2)
        split = connections_per_worker(pids, server.port)
        out, _ = proc.communicate()
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv, out)

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return round(float(m.group(1)) * _UNITS[m.group(2)], 2) if m else float("nan")

    m = re.search(r"(\d+) requests in", out)
    socket_errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    cpu = cpu_seconds(pids) - cpu_before
    requests = int(m.group(1)) if m else 0
    return {
        "requests": int(m.group(1)) if m else 0,
        "rps": round(float(rps.group(1)), 1) if rps else 0.0,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": socket_errors + (int(non2xx.group(1)) if non2xx else 0),
        # Which kind: a 5xx answer or a timeout (wrk's --timeout 2s) or socket error.
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": socket_errors,
        "server_cpu_us_per_request": round(cpu / requests * 1e6, 1) if requests else None,
        "connections_per_worker": split,
        "raw": out,
    }


def connections_per_worker(pids: list[int], port: int) -> list[int]:
    """The established TCP connections to ``port`` that each of ``pids`` holds (from /proc).

    uvicorn's workers accept from one shared socket, so connections opened together (as `wrk`
    opens its own) split between them by chance, and each stays with its worker: a worker
    holding more of them has more requests queued, and its answers wait longer.
    """
    ours = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # Local address "ADDR:PORT" in hex; state 01: established.
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    ours.add(f"socket:[{fields[9]}]")
    counts = []
    for pid in pids:
        held = 0
        with contextlib.suppress(OSError):  # a worker that exited holds none
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    held += os.readlink(fd) in ours
        counts.append(held)
    return counts


# ----------------------------------------------------------------------------- the run


def seed_redis(url: str, prefix: str, customers: list[str], items: list[str]) -> None:
    """Recent events (10 views and a purchase) and consent to email and app marketing for each of
    ``customers``, as the service writes them (the others said nothing: no offers by email)."""
    client = redis.Redis.from_url(url)
    keys = Keys(prefix)
    rng = np.random.default_rng(1)
    now = datetime.now(UTC)
    consent = msgpack_encoder.encode(Consent(marketing={"email": True, "app": True}))
    pipe = client.pipeline(transaction=False)
    for n, customer in enumerate(customers):
        pipe.set(keys.consent(customer), consent)
        picks = rng.choice(len(items), size=11)
        for j, event_type in zip(picks, ["view"] * 10 + ["purchase"], strict=True):
            event = Event(
                customer_id=customer,
                item_id=items[j],
                event_type=event_type,  # type: ignore[arg-type]
                channel="web",
                timestamp=now,
            )
            pipe.lpush(keys.recent(customer), msgpack_encoder.encode(event))
        pipe.sadd(keys.bought(customer), items[picks[-1]])
        if n % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    client.close()


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    batch = []
    for key in client.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)
    client.close()


def measure_recall(model_dir: Path, n_users: int, samples: int = 300) -> dict[str, Any]:
    """recall@10 of the index against exact scoring, for customers and for similar items."""
    loaded = artifact.load(artifact.resolve(model_dir), verify_checksums=False)
    approx = FactorModel(loaded, ann=ann.AnnConfig(mode="on"))
    exact = FactorModel(loaded, ann=ann.AnnConfig(mode="off"))
    rng = np.random.default_rng(5)
    users = rng.choice(n_users, size=min(samples, n_users), replace=False)
    item_rows = rng.choice(approx.n_items, size=min(samples, approx.n_items), replace=False)

    def recall(found: np.ndarray, truth: np.ndarray) -> float:
        return len(set(found.tolist()) & set(truth.tolist())) / max(len(truth), 1)

    rec = [
        recall(
            approx.recommend(approx.user_vector(u), 10)[0],
            exact.recommend(exact.user_vector(u), 10)[0],
        )
        for u in users
    ]
    # Within a category, as the category endpoint asks (searched in the clusters holding the
    # category's items, or scored exactly over them).
    names = sorted(approx.category_codes)
    in_category = []
    for u, name in zip(users, rng.choice(names, size=len(users)) if names else [], strict=False):
        found = approx.recommend(approx.user_vector(u), 10, allowed=approx.category_mask(name))[0]
        truth = exact.recommend(exact.user_vector(u), 10, allowed=exact.category_mask(name))[0]
        in_category.append(recall(found, truth))
    # Similar items against cosine scored here, not by the model (which may answer from the
    # similar-items table that training ships).
    unit = unit_rows(np.asarray(loaded.arrays["item_factors"]))

    def cosine_best(i: int) -> np.ndarray:
        scores = unit @ unit[i]
        scores[i] = -np.inf
        return largest(scores, 10)

    # A trained model's table holds what the same customers took (training/similar.py), not an
    # approximation of factor cosine: no recall to measure against it.
    trained_table = "similar_rows" in loaded.arrays and loaded.manifest.algorithm != "generated"
    sim = [
        recall(approx.similar_items(int(i), 10)[0], cosine_best(int(i)))
        for i in ([] if trained_table else item_rows)
    ]
    t0 = time.perf_counter()
    for u in users[:100]:
        approx.recommend(approx.user_vector(u), 10)
    ann_ms = (time.perf_counter() - t0) / min(100, len(users)) * 1000
    t0 = time.perf_counter()
    for u in users[:100]:
        exact.recommend(exact.user_vector(u), 10)
    exact_ms = (time.perf_counter() - t0) / min(100, len(users)) * 1000
    return {
        "recall_at_10_recommend": round(float(np.mean(rec)), 4),
        "recall_at_10_similar": round(float(np.mean(sim)), 4) if sim else None,
        "recall_at_10_category": round(float(np.mean(in_category)), 4) if in_category else None,
        "similar_from": "table" if "similar_rows" in loaded.arrays else "index",
        "nlist": approx.index.nlist if approx.index else None,
        "nprobe": approx.index.nprobe if approx.index else None,
        "nprobe_similar": approx.index.nprobe_similar if approx.index else None,
        "ann_ms_per_query": round(ann_ms, 3),
        "exact_ms_per_query": round(exact_ms, 3),
    }


def service_env(
    args: argparse.Namespace, model_dir: Path, data_dir: Path, prefix: str, port: int, workers: int
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "MODEL_DIR": str(model_dir),
            "DATA_DIR": str(data_dir),
            "REDIS_URL": args.redis_url,
            "API_KEYS": f"{API_KEY}=recommend+events+offers+customers+admin",
            "RECO_WORKERS": str(workers),
            "PORT": str(port),
            "LOG_LEVEL": "WARNING",
            "RECO_KEY_PREFIX": prefix,
            "RECO_MODEL_POLL_SECONDS": "1",
            "RECO_ANN": args.ann,
        }
    )
    return env


@contextlib.contextmanager
def serve(
    argv: list[str],
    env: dict[str, str],
    port: int,
    log: Path,
    ready: str,
    workers: int = 1,
    cwd: Path | None = None,
) -> Iterator[Server]:
    """A server started with ``argv`` (in ``cwd``), stopped on leaving."""
    server = Server(argv, env, port, log, cwd)
    try:
        server.wait(ready, expect_workers=workers)
        yield server
    finally:
        server.stop()


def hot_swap(
    args: argparse.Namespace,
    wrk: str,
    server: Server,
    script: Path,
    workload: Workload,
) -> dict[str, Any]:
    """Publish a new version mid-run; errors during the run and seconds until it is served."""
    new_version = artifact.new_version("swap")
    swapped = dict(workload.arrays)
    swapped["user_factors"] = (swapped["user_factors"] * np.float32(1.01)).astype(np.float32)
    manifest = msgspec.structs.replace(workload.manifest, model_version=new_version)
    model_dir, probe_customer = workload.model_dir, workload.customers[0]
    result: dict[str, Any] = {"new_version": new_version}
    seen: list[float] = []
    poll_errors = [0]
    stop = threading.Event()

    def publish() -> None:
        time.sleep(args.duration / 3)
        t0 = time.monotonic()
        artifact.save(model_dir, manifest, swapped)
        result["publish_s"] = round(time.monotonic() - t0, 2)
        result["_published_at"] = time.monotonic()

    def poll() -> None:
        url = f"{server.base}/v1/customers/{probe_customer}/recommendations?k=10"
        streak = 0
        while not stop.is_set():
            status, body = http_get(url, timeout=2)
            if status != 200:
                poll_errors[0] += 1
            elif new_version.encode() in body and "_published_at" in result:
                if not seen:
                    seen.append(time.monotonic())
                streak += 1
                if streak >= 20 and len(seen) == 1:  # every worker it reaches serves it
                    seen.append(time.monotonic())
            else:
                streak = 0
            time.sleep(0.05)

    threads = [threading.Thread(target=publish), threading.Thread(target=poll)]
    for t in threads:
        t.start()
    run = run_wrk(wrk, server, script, args.duration, args.connections, args.threads)
    threads[0].join()
    # Keep polling after the load until every worker serves the new version (at most 60 s).
    deadline = time.monotonic() + 60
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    threads[1].join()
    published = result.pop("_published_at", None)
    result.update(
        {
            "requests": run["requests"],
            "rps": run["rps"],
            "p99_ms": run["p99_ms"],
            "errors": run["errors"] + poll_errors[0],
            "first_served_s": round(seen[0] - published, 2) if seen and published else None,
            "all_served_s": round(seen[1] - published, 2) if len(seen) > 1 and published else None,
        }
    )
    return result


def tracking_overhead(
    args: argparse.Namespace,
    wrk: str,
    script: Path,
    model_dir: Path,
    size_dir: Path,
    prefix: str,
) -> dict[str, Any]:
    """The recommendations endpoint with tracking and the experiment on vs tracking off.

    Two fresh 1-worker servers on the same model and Redis, identical but for
    ``RECO_TRACKING`` (the "on" one runs the A/B test), started and warmed up alike, so neither
    has served more or holds more than the other. They are loaded in alternating rounds (order
    swapped each round) and the medians compared.
    """
    argv = [sys.executable, "-m", "service"]
    rounds: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        for name, tracking in (("on", "true"), ("off", "false")):
            port = free_port()
            data_dir = size_dir / f"var-{name}"
            data_dir.mkdir(exist_ok=True)
            env = service_env(args, model_dir, data_dir, prefix, port, 1)
            env["RECO_TRACKING"] = tracking
            log = size_dir / f"service-tracking-{name}.log"
            servers[name] = stack.enter_context(serve(argv, env, port, log, "/health/ready"))
        http_put_json(f"{servers['on'].base}/v1/experiments/bench-ab", EXPERIMENT)
        for server in servers.values():  # warm-up: the memory-mapped pages, the first requests
            run_wrk(wrk, server, script, 3, args.connections, 1)
        for n in range(args.overhead_rounds):
            for name in ("on", "off") if n % 2 == 0 else ("off", "on"):
                r = run_wrk(wrk, servers[name], script, args.duration / 2, args.connections, 1)
                r.pop("raw")
                rounds[name].append(r)

    def median(name: str, field: str) -> float:
        return float(statistics.median(r[field] for r in rounds[name]))

    rps_on, rps_off = median("on", "rps"), median("off", "rps")
    cpu_on = median("on", "server_cpu_us_per_request")
    cpu_off = median("off", "server_cpu_us_per_request")
    return {
        "rounds": args.overhead_rounds,
        "rps_on": rps_on,
        "rps_off": rps_off,
        "rps_drop": round(1 - rps_on / rps_off, 4) if rps_off else None,
        "cpu_us_on": cpu_on,
        "cpu_us_off": cpu_off,
        "cpu_increase": round(cpu_on / cpu_off - 1, 4) if cpu_off else None,
        "errors": sum(r["errors"] for rs in rounds.values() for r in rs),
    }


class Workload(msgspec.Struct, kw_only=True):
    """A model to serve and what the load asks it for."""

    label: str
    model_dir: Path
    manifest: artifact.Manifest
    arrays: dict[str, Any]
    customers: list[str]
    items: list[str]
    # The category endpoint's; None: the generated catalogue's 50; empty: the model has none.
    categories: list[str] | None = None


def generated_workload(args: argparse.Namespace, size_dir: Path, n_items: int) -> Workload:
    """A generated catalogue of ``n_items`` (benchmarks/catalogue.py) and its customers."""
    model_dir = size_dir / "models"
    path, arrays = write_catalogue(
        model_dir, n_items, args.users, seed=n_items % 997, neighbours=args.neighbours
    )
    manifest = artifact.load(path, verify_checksums=False).manifest
    rng = np.random.default_rng(2)
    customers = [f"c{i:07d}" for i in rng.choice(args.users, size=5000, replace=False)]
    customers += [f"new{i:05d}" for i in range(250)]  # 5% unknown: the popular fallback
    items = [f"i{j:07d}" for j in rng.choice(n_items, size=5000, replace=False)]
    label = f"{n_items:,} items, {args.users:,} customers"
    return Workload(
        label=label,
        model_dir=model_dir,
        manifest=manifest,
        arrays=arrays,
        customers=customers,
        items=items,
    )


def trained_workload(trained: Path, size_dir: Path) -> Workload:
    """The ``LATEST`` model of ``trained`` (what ``python -m training fit`` wrote), copied so the
    hot swap publishes beside the copy, with customers, items and categories of its own."""
    loaded = artifact.load(artifact.resolve(trained), verify_checksums=False)
    model_dir = size_dir / "models"
    arrays = {name: np.asarray(a) for name, a in loaded.arrays.items()}
    artifact.save(model_dir, loaded.manifest, arrays)
    user_ids = [u.decode() for u in arrays["user_ids"].tolist()]
    item_ids = [i.decode() for i in arrays["item_ids"].tolist()]
    rng = np.random.default_rng(2)
    picked = rng.choice(len(user_ids), size=min(5000, len(user_ids)), replace=False)
    customers = [user_ids[i] for i in picked]
    customers += [f"new{i:05d}" for i in range(max(1, len(customers) // 20))]
    items = [item_ids[j] for j in rng.choice(len(item_ids), min(5000, len(item_ids)), False)]
    # Categories with items (-1: an item without one): the category endpoint asks for one.
    names = [n.decode() for n in arrays["category_names"].tolist()]
    categories = [names[c] for c in np.unique(arrays["item_category"]).tolist() if c >= 0]
    label = f"{trained} ({loaded.manifest.model_version}: {len(item_ids):,} items, "
    label += f"{len(user_ids):,} customers)"
    return Workload(
        label=label,
        model_dir=model_dir,
        manifest=loaded.manifest,
        arrays=arrays,
        customers=customers,
        items=items,
        categories=categories,
    )


def bench_size(
    args: argparse.Namespace,
    wrk: str,
    bare: Server,
    size_dir: Path,
    workload: Workload,
    baseline_pss: float,
) -> dict[str, Any]:
    """Every endpoint of ``workload`` at each worker count, beside the bare route."""
    n_items = len(workload.arrays["item_ids"])
    n_users = len(workload.arrays["user_ids"])
    print(f"\n== {workload.label}", flush=True)
    model_dir, data_dir = workload.model_dir, size_dir / "var"
    data_dir.mkdir(parents=True)
    row: dict[str, Any] = {"items": n_items, "customers": n_users, "model": workload.label}
    row["neighbours_per_item"] = args.neighbours if args.trained is None else None
    row["ann"] = measure_recall(model_dir, n_users)
    row["ann"]["used_by_service"] = ann.AnnConfig(mode=args.ann).wanted(n_items)
    print(f"   ANN {row['ann']}", flush=True)
    customers, items = workload.customers, workload.items
    prefix = f"bench-{os.getpid()}-{n_items}"
    seed_redis(args.redis_url, prefix, customers[: len(customers) // 2], items)

    def script(endpoint: str) -> Path:
        path = size_dir / f"{endpoint}.lua"
        return lua_script(path, endpoint, customers, items, workload.categories, prefix)

    scripts = {e: script(e) for e in ENDPOINTS}
    bare_script = script("bare")
    row["runs"] = []
    try:
        for workers in args.workers:
            port = free_port()
            env = service_env(args, model_dir, data_dir, prefix, port, workers)
            argv = [sys.executable, "-m", "service"]
            log = size_dir / f"service-{workers}.log"
            with serve(argv, env, port, log, "/health/ready", workers) as server:
                configure(server.base, workload.categories, items)
                # Warm up: the first requests touch the memory-mapped arrays.
                run_wrk(wrk, server, scripts["recommendations"], 2, args.connections, 1)
                bare_run = run_wrk(
                    wrk, bare, bare_script, args.duration, args.connections, args.threads
                )
                bare_run.pop("raw")
                run: dict[str, Any] = {"workers": workers, "bare": bare_run, "endpoints": {}}
                # The references beside the bare route (benchmarks/bare_app.py): its answer
                # behind the service's signature, then also after the customer's state read.
                for reference, (lua, _) in REFERENCES.items():
                    result = run_wrk(
                        wrk, bare, script(lua), args.duration, args.connections, args.threads
                    )
                    result.pop("raw")
                    result["ratio_to_bare"] = round(result["rps"] / max(bare_run["rps"], 1), 3)
                    result["cpu_ratio_to_bare"] = cpu_ratio(bare_run, result)
                    run[reference] = result
                for endpoint in ENDPOINTS:
                    if endpoint == "category" and workload.categories == []:
                        run["endpoints"][endpoint] = {"skipped": "the model has no categories"}
                        continue
                    result = run_wrk(
                        wrk,
                        server,
                        scripts[endpoint],
                        args.duration,
                        args.connections,
                        args.threads,
                    )
                    result.pop("raw")
                    result["ratio_to_bare"] = round(result["rps"] / max(bare_run["rps"], 1), 3)
                    result["cpu_ratio_to_bare"] = cpu_ratio(bare_run, result)
                    run["endpoints"][endpoint] = result
                    print(f"   workers={workers} {endpoint:16} {result}", flush=True)
                if workers == 1 and args.concurrency:
                    run["concurrency"] = concurrency_sweep(
                        args, wrk, server, scripts["recommendations"]
                    )
                mems = [memory(pid) for pid in server.worker_pids()]
                run["memory"] = {
                    "per_worker": mems,
                    "pss_total_mib": round(sum(m["pss_mib"] for m in mems), 1),
                    "rss_total_mib": round(sum(m["rss_mib"] for m in mems), 1),
                    "model_pss_mib": round(
                        sum(m["pss_mib"] for m in mems) - len(mems) * baseline_pss, 1
                    ),
                }
                print(f"   workers={workers} memory {run['memory']}", flush=True)
                if workers == args.workers[-1] and not args.no_hot_swap:
                    run["hot_swap"] = hot_swap(
                        args, wrk, server, scripts["recommendations"], workload
                    )
                    print(f"   hot swap: {run['hot_swap']}", flush=True)
                row["runs"].append(run)
        if args.overhead_rounds:
            row["tracking_overhead"] = tracking_overhead(
                args, wrk, scripts["recommendations"], model_dir, size_dir, prefix
            )
            print(f"   tracking on vs off: {row['tracking_overhead']}", flush=True)
    finally:
        delete_prefix(args.redis_url, prefix)
        if not args.keep:
            shutil.rmtree(model_dir, ignore_errors=True)
    return row


def concurrency_sweep(
    args: argparse.Namespace, wrk: str, server: Server, script: Path
) -> dict[str, Any]:
    """Recommendations at each of ``--concurrency``'s connection counts, one worker.

    At 32 connections a saturated worker's latency is mostly the queue in front of it (p50 is
    about connections / requests per second); fewer connections show the latency a request sees
    when the worker keeps up, and how much throughput that costs.
    """
    results = {}
    for connections in args.concurrency:
        threads = min(args.threads, connections)  # wrk needs a connection per thread
        result = run_wrk(wrk, server, script, args.duration, connections, threads)
        result.pop("raw")
        results[str(connections)] = result
        print(f"   1 worker, {connections:3} connections, recommendations {result}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--users", type=int, default=200_000, help="customers in the model")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", default="1,4", help="service worker counts to measure")
    parser.add_argument("--ann", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--no-hot-swap", action="store_true")
    parser.add_argument(
        "--neighbours",
        type=int,
        default=0,
        help="give the model a sparse item-item component, this many items per item "
        "(what training ships for a blend with EASE)",
    )
    parser.add_argument(
        "--trained",
        type=Path,
        help="serve this trained model folder (what `python -m training fit` writes, LATEST) "
        "with its own customers, items and categories, instead of generated catalogues",
    )
    parser.add_argument(
        "--overhead-rounds", type=int, default=8, help="tracking on/off rounds (1 worker)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder: artifacts and logs"
    )
    parser.add_argument(
        "--concurrency",
        default="2,4,8,16",
        help="connection counts for recommendations on 1 worker (empty: skip)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",")]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    sizes = [int(s) for s in args.sizes.split(",")]
    wrk = ensure_wrk()
    if not redis.Redis.from_url(args.redis_url).ping():
        sys.exit(f"no Redis at {args.redis_url}")
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"
        },
        "sizes": [],
    }
    # --keep keeps the work folder too: artifacts, wrk scripts and every server's log.
    with contextlib.ExitStack() as cleanup:
        if args.keep:
            tmp = tempfile.mkdtemp(prefix="bench-serving-")
        else:
            tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-serving-"))
        work = Path(tmp)
        if args.keep:
            print(f"work folder (kept): {work}", flush=True)
        # The interpreter's own memory: a service worker with no model at all.
        empty = work / "empty"
        (empty / "models").mkdir(parents=True)
        port = free_port()
        env = service_env(args, empty / "models", empty / "var", "bench-empty", port, 1)
        with serve(
            [sys.executable, "-m", "service"], env, port, empty / "log", "/health/live"
        ) as server:
            baseline = memory(server.worker_pids()[0])
        report["baseline_worker_memory"] = baseline
        print(f"service worker without a model: {baseline}", flush=True)
        port = free_port()
        bare_env = {**os.environ, "REDIS_URL": args.redis_url}  # for its state-read reference
        with serve(bare_argv(port), bare_env, port, work / "bare.log", "/bare/x") as bare:
            for n, size in enumerate([None] if args.trained else sizes):
                size_dir = work / f"workload-{n}"
                size_dir.mkdir()
                if args.trained is not None:
                    workload = trained_workload(args.trained, size_dir)
                else:
                    workload = generated_workload(args, size_dir, size)  # type: ignore[arg-type]
                report["sizes"].append(
                    bench_size(args, wrk, bare, size_dir, workload, baseline["pss_mib"])
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(msgspec.to_builtins(report), indent=2) + "\n")
    print()
    print(format_table(report))
    print()
    print(format_summary(report))
    print()
    print(format_overhead(report))
    print()
    print(format_concurrency(report))
    print(f"\nwritten to {args.out}")
    return 0


def format_table(report: dict[str, Any]) -> str:
    """The results as a Markdown table (also used by docs/serving.md)."""
    lines = [
        "| items | workers | endpoint | req/s | ratio to bare | p50 ms | p99 ms | errors "
        "| server CPU µs/req | CPU ratio to bare | PSS/worker MiB | RSS/worker MiB "
        "| connections per worker |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- |",
    ]
    for size in report["sizes"]:
        for run in size["runs"]:
            mem = run["memory"]
            n = max(len(mem["per_worker"]), 1)
            pss = mem["pss_total_mib"] / n
            rss = mem["rss_total_mib"] / n
            b = run["bare"]
            lines.append(
                f"| {size['items']:,} | {run['workers']} | bare route | {b['rps']:,.0f} | 1.00 "
                f"| {b['p50_ms']} | {b['p99_ms']} | {b['errors']} "
                f"| {b.get('server_cpu_us_per_request')} | 1.00 | | | {_split(b)} |"
            )
            for reference, (_, label) in REFERENCES.items():
                if reference not in run:  # results of runs before the reference existed
                    continue
                r = run[reference]
                lines.append(
                    f"| {size['items']:,} | {run['workers']} | {label} "
                    f"| {r['rps']:,.0f} | {r['ratio_to_bare']:.2f} | {r['p50_ms']} | {r['p99_ms']} "
                    f"| {r['errors']} | {r.get('server_cpu_us_per_request')} "
                    f"| {r.get('cpu_ratio_to_bare')} | | | {_split(r)} |"
                )
            for name, r in run["endpoints"].items():
                if "skipped" in r:
                    lines.append(
                        f"| {size['items']:,} | {run['workers']} | {name} | skipped: "
                        f"{r['skipped']} | | | | | | | | | |"
                    )
                    continue
                lines.append(
                    f"| {size['items']:,} | {run['workers']} | {name} | {r['rps']:,.0f} "
                    f"| {r['ratio_to_bare']:.2f} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} "
                    f"| {r.get('server_cpu_us_per_request')} | {r.get('cpu_ratio_to_bare')} "
                    f"| {pss:.0f} | {rss:.0f} | {_split(r)} |"
                )
    return "\n".join(lines)


def _split(result: dict[str, Any]) -> str:
    """How a run's connections were split between several workers ("14 / 18"); blank for one
    worker and for results of runs before this was measured."""
    split = result.get("connections_per_worker") or []
    return " / ".join(str(n) for n in split) if len(split) > 1 else ""


def format_summary(report: dict[str, Any]) -> str:
    """ANN recall, memory of 1 and N workers and the hot swap, per size."""
    lines = [
        "| items | served by | recall@10 recommend | recall@10 category "
        "| recall@10 similar (from) | nlist / nprobe / nprobe similar | model PSS, 1 worker MiB "
        "| model PSS, N workers MiB | N/1 | hot swap errors "
        "| new version first / all served (s) |",
        "| ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for size in report["sizes"]:
        a = size["ann"]
        runs = {run["workers"]: run for run in size["runs"]}
        one, many = runs.get(min(runs)), runs.get(max(runs))
        m1 = one["memory"]["model_pss_mib"] if one else None
        mn = many["memory"]["model_pss_mib"] if many else None
        swap = next((run["hot_swap"] for run in size["runs"] if "hot_swap" in run), None)
        lines.append(
            f"| {size['items']:,} | {'ANN' if a['used_by_service'] else 'exact'} "
            f"| {a['recall_at_10_recommend']} | {a.get('recall_at_10_category') or 'n/a'} "
            f"| {a['recall_at_10_similar'] or 'n/a'} ({a.get('similar_from', 'index')}) "
            f"| {a['nlist']} / {a['nprobe']} / {a.get('nprobe_similar')} "
            f"| {m1} | {mn} ({max(runs)} workers) "
            f"| {round(mn / m1, 2) if m1 and mn else None} "
            f"| {swap['errors'] if swap else 'n/a'} "
            f"| {swap['first_served_s'] if swap else ''} / {swap['all_served_s'] if swap else ''} |"
        )
    return "\n".join(lines)


def format_overhead(report: dict[str, Any]) -> str:
    """Tracking and an experiment on vs tracking off, recommendations, 1 worker, per size."""
    lines = [
        "| items | req/s on | req/s off | throughput drop | CPU µs/req on | CPU µs/req off "
        "| CPU increase | rounds | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in report["sizes"]:
        if o := size.get("tracking_overhead"):
            lines.append(
                f"| {size['items']:,} | {o['rps_on']:,.0f} | {o['rps_off']:,.0f} "
                f"| {o['rps_drop']:.1%} | {o['cpu_us_on']:.0f} | {o['cpu_us_off']:.0f} "
                f"| {o['cpu_increase']:.1%} | {o['rounds']} | {o['errors']} |"
            )
    return "\n".join(lines)


def format_concurrency(report: dict[str, Any]) -> str:
    """Recommendations on one worker at each connection count (with the main run's, for scale)."""
    lines = [
        "| items | connections | req/s | p50 ms | p99 ms | errors | server CPU µs/req |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in report["sizes"]:
        for run in size["runs"]:
            sweep = dict(run.get("concurrency") or {})
            if not sweep:
                continue
            main_run = run["endpoints"].get("recommendations")
            if main_run and "rps" in main_run:
                sweep[str(report["settings"]["connections"])] = main_run
            for connections, r in sorted(sweep.items(), key=lambda kv: int(kv[0])):
                lines.append(
                    f"| {size['items']:,} | {connections} | {r['rps']:,.0f} | {r['p50_ms']} "
                    f"| {r['p99_ms']} | {r['errors']} | {r['server_cpu_us_per_request']} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
