"""Idle keep-alive connections outlive a load balancer's idle timeout, not uvicorn's 5 s."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from service.settings import Settings
from tests.browser import running_service, service_env

REQUEST = b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n"


def test_the_default_outlasts_a_load_balancers_idle_timeout() -> None:
    assert Settings.from_env({}).keep_alive_seconds > 60  # AWS's load balancers: 60 s idle
    assert Settings.from_env({"RECO_KEEP_ALIVE_SECONDS": "5"}).keep_alive_seconds == 5


@pytest.mark.parametrize(
    ("keep_alive", "idle", "open_after"), [(None, 6.0, True), ("1", 2.5, False)]
)
def test_python_m_service_keeps_an_idle_connection_open_as_configured(
    tmp_path: Path,
    model_dir: Path,
    redis_url: str,
    key_prefix: str,
    keep_alive: str | None,
    idle: float,
    open_after: bool,
) -> None:
    """By default a connection idle for 6 s still answers (uvicorn alone closes it after 5);
    with a limit of 1 s the service has closed it."""
    env = service_env(redis_url, key_prefix, model_dir, RECO_KEEP_ALIVE_SECONDS=keep_alive)
    with running_service(env, tmp_path) as base:
        address = urlsplit(base)
        with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
            conn.sendall(REQUEST)
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
            time.sleep(idle)
            try:
                conn.sendall(REQUEST)
                answer = conn.recv(4096)
            except ConnectionError:  # closed by the server meanwhile
                answer = b""
    assert answer.startswith(b"HTTP/1.1 200") == open_after
