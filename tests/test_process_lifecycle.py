"""``python -m service`` as a process: how it starts, fails, stops and dies, with several workers.

Each test runs the real command in a subprocess, as an orchestrator or a shell would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import redis

from service.app import _cancelled
from service.embedded_redis import EmbeddedRedis
from tests.browser import call, free_port, running_service, service_env, wait_until_ready
from tests.conftest import ADMIN_KEY, API_KEYS
from tests.test_embedded_redis import server_pid, wait_until_gone
from tests.test_settings_and_auth import not_redis

EVENT = {"customer_id": "u1", "item_id": "i02", "event_type": "view", "channel": "web"}


def _environ(env: dict[str, str | None], data_dir: Path, port: int) -> dict[str, str]:
    place = {"PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": str(data_dir)}
    merged = {**os.environ, **env, **place}
    return {name: value for name, value in merged.items() if value is not None}


def _embedded_env(model_dir: Path) -> dict[str, str | None]:
    return {
        "REDIS_URL": None,
        "RECO_REDIS_URL": None,
        "MODEL_DIR": str(model_dir),
        "API_KEYS": API_KEYS,
        "LOG_LEVEL": "WARNING",
        "RECO_WORKERS": "2",
    }


def test_a_bad_setting_is_one_line_naming_the_variable_and_status_2(
    tmp_path: Path, model_dir: Path
) -> None:
    # With several workers, a malformed API_KEYS had every worker fail, and be started again,
    # forever, on a port that stayed bound; now nothing starts.
    cases = [
        ({"API_KEYS": "key"}, "omnireco: API_KEYS: entry '…' must look like key=scope+scope"),
        (
            {"RECO_WORKERS": "0"},
            "omnireco: RECO_WORKERS='0': expected an integer from 1 to 256 or auto",
        ),
    ]
    for change, message in cases:
        env = {**_embedded_env(model_dir), **change}
        done = subprocess.run(
            [sys.executable, "-m", "service"],
            env=_environ(env, tmp_path, free_port()),
            capture_output=True,
            timeout=60,
        )
        assert (done.returncode, done.stderr.decode(), done.stdout) == (2, message + "\n", b"")
    assert not (tmp_path / "redis").exists()  # nothing was started


def test_a_redis_url_that_is_not_redis_is_one_line_and_status_2(
    tmp_path: Path, model_dir: Path, key_prefix: str
) -> None:
    # A server answering garbage made every worker fail on its first command: status 3 and a
    # traceback; one that closed the connection (PostgreSQL) left workers logging "Connection
    # closed by server" every second, never ready. Nothing a restart or waiting would fix.
    with not_redis(b"SSH-2.0-OpenSSH_9.2\r\n") as ssh, not_redis(None) as silent:
        for port, found in [
            (ssh, "(it answered b'SSH-2.0-OpenSSH_9.2\\r\\n': Protocol error"),
            (silent, "(it closed the connection without answering PING)"),
        ]:
            url = f"redis://:pass-word@127.0.0.1:{port}/0"
            env = {**service_env(url, key_prefix, model_dir), "RECO_WORKERS": "2"}
            done = subprocess.run(
                [sys.executable, "-m", "service"],
                env=_environ(env, tmp_path, free_port()),
                capture_output=True,
                timeout=60,
            )
            line = f"omnireco: REDIS_URL: the server at 127.0.0.1:{port} does not speak the Redis "
            assert (done.returncode, done.stdout) == (2, b"")
            assert done.stderr.decode().startswith(line + "protocol " + found)
            assert done.stderr.count(b"\n") == 1 and b"pass-word" not in done.stderr


def test_a_redis_that_is_down_at_start_is_served_without(
    tmp_path: Path, model_dir: Path, key_prefix: str
) -> None:
    # Unlike a server that is not Redis, an outage may end: the service starts, degraded.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    url = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service"],
        env=_environ(service_env(url, key_prefix, model_dir), tmp_path, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, ready = time.monotonic() + 30, None
        while ready is None:
            try:
                with urllib.request.urlopen(f"{_base(port)}/health/ready", timeout=1) as r:
                    ready = r.status
            except urllib.error.HTTPError as exc:
                ready = exc.code
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "did not start"
                time.sleep(0.2)
        assert ready == 503  # serving, without Redis
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0
        closed.close()


def test_a_worker_that_cannot_start_stops_the_service_with_status_3(
    tmp_path: Path, model_dir: Path, redis_url: str, key_prefix: str
) -> None:
    # What the parent cannot check (here: a fault injected into the workers only) used to end in
    # a crash loop, or in status 0 when uvicorn gave up: a clean stop to a supervisor.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if '--multiprocessing-fork' in sys.argv:  # a uvicorn worker\n"
        "    sys.path.insert(0, os.getcwd())  # where python -m service found it\n"
        "    import service.app\n"
        "    def broken(*args, **kwargs):\n"
        "        raise RuntimeError('this worker cannot start')\n"
        "    service.app.create_app = broken\n"
    )
    env = service_env(redis_url, key_prefix, model_dir, workers=2)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "service"],
        env=_environ(env, tmp_path / "var", free_port()),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert b"this worker cannot start" in done.stderr


def test_a_killed_embedded_redis_is_restarted_with_what_was_acknowledged(
    tmp_path: Path, model_dir: Path
) -> None:
    with running_service(_embedded_env(model_dir), tmp_path) as base:
        acknowledged = call(base, "POST", "/v1/events", ADMIN_KEY, [EVENT] * 20)["ids"]
        os.kill(server_pid(tmp_path), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:  # 503 until the service has restarted its server
            try:
                acknowledged += call(base, "POST", "/v1/events", ADMIN_KEY, EVENT)["ids"]
                break
            except urllib.error.HTTPError as exc:
                refused = exc.code
            assert refused == 503 and time.monotonic() < deadline, "never restarted"
            time.sleep(0.2)
        assert _stream_ids(tmp_path) == acknowledged


def test_workers_end_with_a_killed_parent_and_the_next_service_keeps_the_data(
    tmp_path: Path, model_dir: Path
) -> None:
    env, port = _embedded_env(model_dir), free_port()
    workers: list[int] = []
    try:
        with _service(env, tmp_path, port) as first:
            acknowledged = call(_base(port), "POST", "/v1/events", ADMIN_KEY, [EVENT] * 5)["ids"]
            workers = _children(first.pid, "--multiprocessing-fork")
            assert len(workers) == 2
            first.kill()
            first.wait()
        for pid in workers:  # they stopped serving, rather than holding the port
            wait_until_gone(pid, "a worker outlived its killed parent", seconds=10)
        with _service(env, tmp_path, port):  # the same port: it is free again
            # The embedded server outlived the killed service; this one joined it.
            acknowledged += call(_base(port), "POST", "/v1/events", ADMIN_KEY, EVENT)["ids"]
            assert _stream_ids(tmp_path) == acknowledged
            redis_pid = server_pid(tmp_path)
        wait_until_gone(redis_pid, "the last service to stop left its embedded server running")
    finally:  # whatever a failure left behind
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _stream_ids(tmp_path)  # joins, then stops, the embedded server if it still runs


def test_a_stopping_service_refuses_new_connections_and_answers_those_begun(
    tmp_path: Path, model_dir: Path, redis_url: str, key_prefix: str
) -> None:
    # uvicorn's parent kept listening until it exited, after its workers: connections made
    # meanwhile were accepted by the kernel, never answered, then reset.
    env, port = service_env(redis_url, key_prefix, model_dir, workers=2), free_port()
    with _service(env, tmp_path, port) as process:
        body = json.dumps(EVENT).encode()
        begun = socket.create_connection(("127.0.0.1", port))
        begun.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-API-Key: {ADMIN_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        time.sleep(0.5)  # a worker has the request and waits for the rest of its body
        process.terminate()
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "still accepting connections while stopping"
            time.sleep(0.1)
        begun.sendall(body[10:])
        begun.settimeout(10)
        assert begun.recv(4096).startswith(b"HTTP/1.1 202")
        begun.close()
        assert process.wait(timeout=15) == 0


@contextlib.contextmanager
def _service(env: dict[str, str | None], data_dir: Path, port: int) -> Iterator[subprocess.Popen]:
    """``python -m service`` on ``port``, ready; stopped (SIGTERM) at the end if still running."""
    log = (data_dir / f"service-{port}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "service"],
        env=_environ(env, data_dir, port),
        stdout=log,
        stderr=log,
    )
    try:
        wait_until_ready(_base(port), process, Path(log.name))
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=15)
        log.close()


def _base(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _children(parent: int, marker: str) -> list[int]:
    """The processes whose parent is ``parent`` and whose command line holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit():
                continue
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and marker in (proc / "cmdline").read_text():
                found.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            pass
    return found


def _stream_ids(data_dir: Path) -> list[str]:
    """The ids in the event stream of the embedded server on ``data_dir`` (joined, left running)."""
    joined = EmbeddedRedis(data_dir)
    try:
        with redis.Redis.from_url(joined.start()) as client:
            return [i.decode() for i, _ in client.xrange("reco:events")]
    finally:
        joined.stop()


def test_shutdown_ends_a_background_task_that_swallowed_its_cancellation() -> None:
    """A cancellation landing as a Redis command completes can be swallowed; shutdown cancels
    again rather than wait for the task forever (a worker that never finished stopping)."""

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, as it was
            await asyncio.sleep(30)
        while True:
            await asyncio.sleep(0.05)

    async def main() -> float:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        started = time.monotonic()
        await asyncio.wait_for(_cancelled(task), timeout=5)
        assert task.cancelled()
        return time.monotonic() - started

    assert asyncio.run(main()) < 2
