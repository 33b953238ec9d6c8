"""Connections beyond the soft limit on open files a service is started with."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from service.app import _OPEN_FILES_UNLIMITED
from tests.browser import running_service, service_env


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    code = (
        "import resource\n"
        "from service.app import allow_open_files\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
        "print(allow_open_files(), *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    returned, soft, hard = (int(n) for n in out.stdout.split())
    wanted = _OPEN_FILES_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    assert returned == soft == wanted > 64


def test_a_service_started_under_a_low_limit_answers_more_clients_than_it(
    tmp_path: Path, model_dir: Path, redis_url: str, key_prefix: str
) -> None:
    env = service_env(redis_url, key_prefix, model_dir)
    clients = 300  # each an open file of the worker's, beyond the 128 it starts with
    with running_service(env, tmp_path, open_files=128) as base:
        address = urlsplit(base)
        sockets = [
            socket.create_connection((address.hostname, address.port), timeout=10)
            for _ in range(clients)
        ]
        try:
            # All connected first, then each asks: every one is held open at once.
            for s in sockets:
                s.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
            answers = [s.recv(64) for s in sockets]  # times out where never accepted
        finally:
            for s in sockets:
                s.close()
    assert sum(a.startswith(b"HTTP/1.1 200") for a in answers) == clients
