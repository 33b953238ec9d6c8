"""``python -m service``: serve the API with uvicorn, on the embedded Redis unless REDIS_URL is set.

The embedded Redis is started here, once, and shared by every worker process through REDIS_URL,
so several workers never race to start servers of their own; this process restarts it if it dies.

Exit status: 0 stopped (SIGTERM, SIGINT); 2 a setting is refused, REDIS_URL's server among them
(one line on stderr names the variable; nothing was started; service/startup_checks.py); 3 the
server or a worker failed to start; 1 anything else (the port is taken, the embedded Redis cannot
start).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType

# One BLAS thread per worker, set before numpy loads OpenBLAS (workers inherit the environment).
# A request's scoring is a small matrix-vector product; several BLAS threads per request spin
# against each other and the event loop: measured 557 against 1,712 requests/s on 2 cores.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import uvicorn  # noqa: E402

from service import artifact, logs  # noqa: E402
from service.auth import dev_key  # noqa: E402
from service.embedded_redis import EmbeddedRedis, EmbeddedRedisError  # noqa: E402
from service.settings import Settings, SettingsError  # noqa: E402
from service.startup_checks import check  # noqa: E402
from service.supervisor import serve  # noqa: E402
from service.worker_metrics import clear, folder_of  # noqa: E402

SETTINGS_REFUSED = 2
STARTUP_FAILURE = 3  # uvicorn's own


def main() -> int:
    """Start the server in the foreground; returns the exit status when it stops."""
    try:
        settings = Settings.from_env()
        check(settings)
    except SettingsError as exc:
        print(f"omnireco: {exc}", file=sys.stderr)
        return SETTINGS_REFUSED
    # uvicorn stops on SIGTERM (a container's or systemd's stop), then raises that signal again;
    # by default it would end the process there, before ``finally`` stops the embedded Redis.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    logs.configure(settings.log_level)  # the embedded Redis's watcher logs from this process
    embedded = None
    if settings.redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        try:
            # Workers read their settings from the environment: hand them the running server.
            os.environ["RECO_REDIS_URL"] = embedded.start()
        except (EmbeddedRedisError, OSError) as exc:
            print(f"omnireco: the embedded Redis did not start: {exc}", file=sys.stderr)
            return 1
        embedded.keep_running()
    if settings.worker_count > 1:
        # A scrape reaches one worker: each shares its figures through this folder.
        folder = settings.metrics_dir or str(folder_of(settings.data_dir))
        os.environ["RECO_METRICS_DIR"] = folder
        clear(Path(folder))  # the last run's workers' figures
    try:
        _announce(settings, embedded)
        config = uvicorn.Config(
            # service.app's factory, in workers that end with this process (service/worker.py).
            "service.worker:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.worker_count,
            log_level=settings.log_level.lower(),
            loop="uvloop" if sys.platform != "win32" else "asyncio",
            # httptools, a response's head and body sent in one call (service/http_protocol.py).
            http="service.http_protocol:GatheringHttpToolsProtocol",
            # The app writes its own access log, without customer ids (service/metrics.py).
            access_log=False,
            timeout_keep_alive=settings.keep_alive_seconds,
        )
        started = serve(config)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0 if started else STARTUP_FAILURE


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _announce(settings: Settings, embedded: EmbeddedRedis | None) -> None:
    print(f"omnireco listening on http://{settings.host}:{settings.port}", flush=True)
    print(f"  API docs:  http://{settings.host}:{settings.port}/schema", flush=True)
    redis = f"embedded ({embedded.url}, data in {embedded.folder})" if embedded else "REDIS_URL"
    print(f"  redis:     {redis}", flush=True)
    how = "one per usable CPU" if settings.workers == "auto" else "RECO_WORKERS"
    print(f"  workers:   {settings.worker_count} ({how})", flush=True)
    model = artifact.latest_version(settings.model_dir)
    print(f"  model:     {model or 'none yet: train one (make train)'} in {settings.model_dir}")
    if settings.api_keys is None:
        key = dev_key(settings.data_dir)
        print(f"  dev key:   {key}  (every scope; set API_KEYS in production)")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
