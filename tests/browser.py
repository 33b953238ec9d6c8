"""Helpers for real-browser tests (and others of ``python -m service``): the service in a
subprocess, and Debian's Chromium."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEYS

CHROMIUM = "/usr/bin/chromium"
# As the machine's own probe starts it: no sandbox as root, no background network traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (apt-get install chromium)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(
    redis_url: str, key_prefix: str, model_dir: Path, *, workers: int = 1, **more: str | None
) -> dict[str, str | None]:
    """The environment of a ``python -m service`` for a test: the test's Redis, key prefix and
    model, the test keys (tests/conftest.py), ``workers`` workers, and ``more`` (``RECO_...``)."""
    return {
        "REDIS_URL": redis_url,
        "RECO_KEY_PREFIX": key_prefix,
        "MODEL_DIR": str(model_dir),
        "API_KEYS": API_KEYS,
        "LOG_LEVEL": "WARNING",
        "RECO_WORKERS": str(workers),
        **more,
    }


@contextmanager
def running_service(
    env: dict[str, str | None], data_dir: Path, *, open_files: int | None = None
) -> Iterator[str]:
    """``python -m service`` on a free port until the block ends (stopped with SIGTERM, as a
    container is); yields its base URL. A None in ``env`` unsets that variable.

    ``open_files``: the soft limit on open files the service starts with (its hard limit kept).
    """
    port = free_port()
    place = {"PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": str(data_dir)}
    merged = {**os.environ, **env, **place}
    full_env = {name: value for name, value in merged.items() if value is not None}
    log = (data_dir / "service.log").open("wb")

    def limit_open_files() -> None:  # in the child, before it runs Python
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

    process = subprocess.Popen(
        [sys.executable, "-m", "service"],
        env=full_env,
        stdout=log,
        stderr=log,
        preexec_fn=limit_open_files if open_files is not None else None,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process, data_dir / "service.log")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def wait_until_ready(base: str, process: subprocess.Popen, log: Path, seconds: float = 30) -> None:  # type: ignore[type-arg]
    """Wait for ``/health/ready`` at ``base`` to answer 200.

    Raises:
        RuntimeError: ``process`` ended or ``seconds`` passed first (with the end of ``log``).
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"service did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def call(base: str, method: str, path: str, key: str, body: Any = None) -> Any:
    """One JSON API call; raises on an error status."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={"X-API-Key": key, "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")
