"""The application factory: settings in, a Litestar app out; resources live in the lifespan.

Nothing happens at import time. Run with ``python -m service`` (see service/__main__.py) or
``uvicorn --factory service.app:create_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from redis.asyncio import Redis

from service import __doc__ as service_doc
from service.ann import AnnConfig
from service.api import ROUTES
from service.api.fast_routes import FastRoutes
from service.api.options import allow_every_method
from service.api.strict_json import StrictJSONRequest
from service.api.struct_schema import RequestStructSchemaPlugin
from service.auth import api_keys_from_settings, require_scope
from service.availability import Availability
from service.embedded_redis import EmbeddedRedis
from service.live_model import LiveModel
from service.logs import configure as configure_json_logs
from service.memory import limit_arenas
from service.metrics import Metrics
from service.problems import EXCEPTION_HANDLERS
from service.runtime import Runtime
from service.settings import Settings
from service.store import Keys, Store, durability
from service.store.state_cache import StateCache
from service.tracking import Tracking
from service.worker_metrics import Snapshots

log = logging.getLogger(__name__)

# How often each worker looks for reloads asked of another worker (one Redis GET).
RELOAD_FOLLOW_SECONDS = 1.0


def settle_heap() -> None:
    """Collect, then freeze what startup built (app, routes, model, clients) out of the cyclic
    collector's view; it is freed normally when its references go.

    A full (generation 2) collection traverses every tracked object: before this, up to 32 ms
    each, 13 of them (281 ms) in 20k recommendations at 100k items, straight into the p99.
    """
    gc.collect()
    gc.freeze()


# Where the hard limit on open files is unlimited, the soft one goes this high (Linux's default
# ``fs.nr_open``: a process may not hold more).
_OPEN_FILES_UNLIMITED = 1 << 20


def allow_open_files() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns the limit now.

    Every connection is an open file. A soft limit of 1,024 is a common default (with a hard
    limit hundreds of times higher), and under it a worker stops accepting at about a thousand
    clients: the others wait until they time out. Go's runtime raises the limit the same way at
    start. -1 where the platform has no such limit (Windows).
    """
    try:
        import resource
    except ImportError:
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _OPEN_FILES_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:  # a cap of the platform's (macOS: OPEN_MAX)
            log.warning("open files stay limited to %d: %s", soft, exc)
    return soft


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` until it ends. A cancellation that lands as a Redis command completes can
    be swallowed (seen after the embedded Redis was restarted: the reload follower went on and
    the worker never finished shutting down); the next one lands in the loop's sleep."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app. ``settings`` default to ``Settings.from_env()`` (tests pass their own)."""
    settings = settings or Settings.from_env()
    # In each worker: uvicorn calls this factory in every worker process.
    allow_open_files()
    limit_arenas()  # before the worker's threads allocate (service/memory.py)
    configure_logging(settings.log_level)
    api_keys = api_keys_from_settings(settings.api_keys, settings.data_dir)
    live_model = LiveModel(
        settings.model_dir,
        verify_checksums=settings.verify_checksums,
        ann=AnnConfig(
            mode=settings.ann,
            min_items=settings.ann_min_items,
            nprobe=settings.ann_nprobe,
            nprobe_similar=settings.ann_nprobe_similar,
        ),
    )
    metrics = Metrics()
    tracking = Tracking(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        embedded = None
        url = settings.redis_url
        if url is None:
            embedded = EmbeddedRedis(settings.data_dir)
            url = await asyncio.to_thread(embedded.start)
        client = Redis.from_url(
            url,
            socket_timeout=settings.redis_timeout_seconds,
            socket_connect_timeout=settings.redis_timeout_seconds,
        )
        await durability.check(client)
        state_cache = None
        if settings.state_cache_customers:
            state_cache = StateCache(
                url,
                Keys(settings.key_prefix),
                max_customers=settings.state_cache_customers,
                stale_seconds=max(3.0, 4 * settings.redis_timeout_seconds),
            )
            state_cache.start()
        app.state.store = Store(
            client,
            prefix=settings.key_prefix,
            recent_max=settings.recent_events_max,
            recent_ttl_days=settings.recent_events_ttl_days,
            state_cache=state_cache,
        )
        app.state.availability = Availability(
            app.state.store, refresh_seconds=settings.stock_refresh_seconds
        )
        app.state.runtime = Runtime(
            settings=settings,
            store=app.state.store,
            live_model=live_model,
            availability=app.state.availability,
            tracking=tracking,
        )
        await live_model.refresh()
        await tracking.start(app.state.store)
        settle_heap()
        background = [
            asyncio.create_task(
                live_model.follow(app.state.store.model_reloads, RELOAD_FOLLOW_SECONDS)
            )
        ]
        if settings.model_poll_seconds > 0:
            background.append(asyncio.create_task(live_model.watch(settings.model_poll_seconds)))
        if settings.metrics_dir:
            # Workers share a port, so a scrape reaches one: it answers for all of them.
            metrics.snapshots = Snapshots(
                Path(settings.metrics_dir), lambda: metrics.render(live_model.version)
            )
            background.append(asyncio.create_task(metrics.snapshots.run()))
        try:
            yield
        finally:
            for task in background:
                await _cancelled(task)
            gc.unfreeze()
            await tracking.stop()
            await app.state.store.aclose()
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    app = Litestar(
        route_handlers=ROUTES,
        lifespan=[lifespan],
        # Metrics outermost, so refused requests are timed and carry a request id too.
        middleware=[metrics.middleware, require_scope] if settings.tracking else [require_scope],
        state=State(
            {
                "settings": settings,
                "api_keys": api_keys,
                "live_model": live_model,
                "tracking": tracking,
            }
        ),
        dependencies={
            "settings": Provide(_provide_settings, sync_to_thread=False),
            "store": Provide(_provide_store, sync_to_thread=False),
            "live_model": Provide(_provide_live_model, sync_to_thread=False),
            "availability": Provide(_provide_availability, sync_to_thread=False),
            "tracking": Provide(_provide_tracking, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[allow_every_method],
        plugins=[RequestStructSchemaPlugin()],
        request_class=StrictJSONRequest,
        openapi_config=OpenAPIConfig(
            title="omnireco",
            version="1",
            description=(service_doc or "").strip(),
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
            use_handler_docstrings=True,
        ),
    )
    if settings.fast_routes:
        # In front of Litestar's own handler: Litestar's __call__ has put the app in the scope
        # and wrapped ``send`` in its before-send hooks by then.
        app.asgi_handler = FastRoutes(app, app.asgi_handler, metrics if settings.tracking else None)
    return app


def configure_logging(level: str) -> None:
    """One place to configure logging for the service: JSON lines, see service/logs.py."""
    configure_json_logs(level)


def _provide_settings(state: State) -> Settings:
    return state.settings  # type: ignore[no-any-return]


def _provide_store(state: State) -> Store:
    return state.store  # type: ignore[no-any-return]


def _provide_live_model(state: State) -> LiveModel:
    return state.live_model  # type: ignore[no-any-return]


def _provide_availability(state: State) -> Availability:
    return state.availability  # type: ignore[no-any-return]


def _provide_tracking(state: State) -> Tracking:
    return state.tracking  # type: ignore[no-any-return]
