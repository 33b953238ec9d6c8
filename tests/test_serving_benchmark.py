"""The serving benchmark's own measurements (benchmarks/serving.py) and its side-by-side
comparison's arguments (benchmarks/compare.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from benchmarks import compare
from benchmarks.serving import _split, connections_per_worker


def test_connections_are_counted_for_the_process_that_accepted_them() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    accepted = [listener.accept()[0] for _ in range(3)]
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # The accepted ends count (local port = the server's); the clients' ends (an ephemeral
        # local port) and the listening socket do not. A process holding none counts 0.
        assert connections_per_worker([os.getpid(), idle.pid], port) == [3, 0]
        accepted.pop().close()
        assert connections_per_worker([os.getpid()], port) == [2]
        # Another port's connections are not these.
        assert connections_per_worker([os.getpid()], port + 1 if port < 65535 else 1) == [0]
    finally:
        idle.kill()
        idle.wait()
        for s in [*clients, *accepted, listener]:
            s.close()
    # A worker that has exited holds none (its /proc entry is gone).
    assert connections_per_worker([idle.pid], port) == [0]


def test_the_split_is_shown_for_several_workers_only() -> None:
    assert _split({"connections_per_worker": [14, 18]}) == "14 / 18"
    assert _split({"connections_per_worker": [32]}) == ""
    assert _split({}) == ""  # results of runs before the split was measured


def test_compare_refuses_a_base_model_without_a_model_for_this_checkout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two models side by side ask both the customers and items of ``--trained``'s model."""
    with pytest.raises(SystemExit) as stopped:
        compare.main(["--base", "HEAD", "--base-trained", "models"])
    assert stopped.value.code == 2
    assert "--base-trained needs --trained" in capsys.readouterr().err
