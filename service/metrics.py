"""Operational metrics for Prometheus, and the middleware that times every request.

Each app has its own registry (tests build many apps in one process; the global registry would
refuse the second). The middleware also gives each request its id and writes one structured
access-log line with the route template, never the raw path (paths hold customer ids).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import wraps
from typing import Any, ParamSpec, Protocol, TypeVar

from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from service import logs
from service.histograms import BufferedHistogram, PlainCounter
from service.worker_metrics import Snapshots

log = logging.getLogger("service.access")

P = ParamSpec("P")
T = TypeVar("T")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REDIS_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class Metrics:
    """Every metric the service exports, in one registry."""

    def __init__(self) -> None:
        """Create the metrics in a registry of their own."""
        self.registry = CollectorRegistry()
        r = self.registry
        # Observed on every request: buffered, binned in batches (service/histograms.py).
        self.latency = BufferedHistogram(
            "reco_request_duration_seconds",
            "HTTP request latency by route template and channel",
            ["route", "method", "channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.responses = PlainCounter(
            "reco_responses", "HTTP responses by route and status", ["route", "status"], r
        )
        self.errors = Counter(
            "reco_request_errors_total", "HTTP 5xx responses by route", ["route"], registry=r
        )
        self.fallbacks = Counter(
            "reco_fallbacks_total", "non-personalised answers served", ["channel"], registry=r
        )
        # Requests this worker is answering now (an offer export yields only while there are
        # others: service/offer_service.py).
        self.in_flight = 0
        Gauge(
            "reco_requests_in_flight", "HTTP requests the worker is answering now", registry=r
        ).set_function(lambda: self.in_flight)
        self.model_info = Gauge(
            "reco_model_info", "the live model version (value 1)", ["version"], registry=r
        )
        self.redis_latency = BufferedHistogram(
            "reco_redis_duration_seconds",
            "Redis round trips by store operation",
            ["operation"],
            buckets=REDIS_BUCKETS,
            registry=r,
        )
        self.events = Counter(
            "reco_events_ingested_total",
            "events acknowledged, by type and channel",
            ["event_type", "channel"],
            registry=r,
        )
        self.assignments = Counter(
            "reco_experiment_assignments_total",
            "answers served under an experiment variant",
            ["experiment", "variant", "channel"],
            registry=r,
        )
        # Label values are bounded: the configured placements, ``other`` and ``none``
        # (service/placements.py), so a client's new placement never adds a series.
        self.placement_answers = PlainCounter(
            "reco_placement_answers",
            "answers served by endpoint (recommendations, similar), channel and placement",
            ["endpoint", "channel", "placement"],
            r,
        )
        self.placement_events = PlainCounter(
            "reco_placement_events",
            "events acknowledged that name a placement, by type, channel and placement",
            ["event_type", "channel", "placement"],
            r,
        )
        # Set when several workers serve: they share their expositions (service/worker_metrics.py).
        self.snapshots: Snapshots | None = None

    def exposition(self, model_version: str | None) -> bytes:
        """What ``/metrics`` answers: every worker's figures, with the model version as of now."""
        own = self.render(model_version)
        return own if self.snapshots is None else self.snapshots.merged(own)

    def render(self, model_version: str | None) -> bytes:
        """This worker's exposition text, with the model version as of now."""
        self.model_info.clear()
        if model_version:
            self.model_info.labels(model_version).set(1)
        return generate_latest(self.registry)

    def watch_state_cache(self, cache: KeptStates) -> None:
        """Export the worker's customer-state cache (store/state_cache.py): reads it answered or
        not, customers kept, and whether it is active."""
        self.registry.register(_StateCacheCollector(cache))

    def time_calls(self, target: object, operations: Mapping[str, str]) -> None:
        """Time coroutine methods of ``target`` (the store) into ``redis_latency``: method name
        -> the operation label its round trips are counted under."""
        for name, operation in operations.items():
            setattr(target, name, self._timed(getattr(target, name), operation))

    def _timed(self, fn: Callable[P, Awaitable[T]], name: str) -> Callable[P, Awaitable[T]]:
        observe, labels = self.redis_latency.observe, (name,)

        @wraps(fn)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                observe(labels, time.perf_counter() - started)

        return timed

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """A Litestar middleware factory (Litestar calls it with ``app=``)."""

        async def timed_app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            request_id = logs.start_request()
            started = time.perf_counter()
            status = 500

            async def send_wrapper(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"x-request-id", request_id.encode()),
                    ]
                await send(message)

            self.in_flight += 1
            try:
                await app(scope, receive, send_wrapper)
            except HTTPException as e:
                # Raised before any handler answered (the API key check, a middleware), it is
                # answered outside this middleware, with its own status: a 401 is not a 500.
                status = e.status_code
                raise
            finally:
                self.in_flight -= 1
                self.observe(scope, status, time.perf_counter() - started)

        return timed_app

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Count and time one answered request (its route template and path parameters are in
        ``scope``, as Litestar's router leaves them), and log it."""
        route = scope.get("path_template") or "unmatched"
        method = scope.get("method", "")
        channel = _channel(scope.get("query_string", b""))
        self.latency.observe((route, method, channel), seconds)
        self.responses.inc((route, _STATUS.get(status) or str(status)))
        if status >= 500:
            self.errors.labels(route).inc()
        # Every request at DEBUG (the histograms already count them); server errors at WARNING.
        level = logging.WARNING if status >= 500 else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        extra: dict[str, Any] = {
            "route": route,
            "method": method,
            "channel": channel,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
        }
        if customer := scope.get("path_params", {}).get("customer_id"):
            extra["customer"] = logs.pseudonym(str(customer))
        log.log(level, "request", extra=extra)


def _channel(query_string: bytes) -> str:
    """The ``channel`` query parameter, bounded so a label can never explode in cardinality."""
    at = query_string.find(b"channel=")
    while at > 0 and query_string[at - 1] != 0x26:  # not a parameter of its own ("xchannel=")
        at = query_string.find(b"channel=", at + 1)
    if at < 0:
        return "none"
    end = query_string.find(b"&", at)
    text = query_string[at + 8 : end if end >= 0 else len(query_string)].decode("latin-1")
    return text if text.isalnum() and len(text) <= 16 else "invalid"


# Status codes as label values, made once.
_STATUS = {code: str(code) for code in range(100, 600)}


class KeptStates(Protocol):
    """What ``Metrics`` reads of the store's state cache."""

    hits: int
    misses: int

    @property
    def active(self) -> bool: ...

    def __len__(self) -> int: ...


class _StateCacheCollector:
    """The state cache's figures, read when /metrics is rendered (no work per request)."""

    def __init__(self, cache: KeptStates) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        reads = CounterMetricFamily(
            "reco_state_cache_reads",
            "customer state reads the worker's cache answered (hit) or passed to Redis (miss)",
            labels=["result"],
        )
        reads.add_metric(["hit"], self.cache.hits)
        reads.add_metric(["miss"], self.cache.misses)
        yield reads
        yield GaugeMetricFamily(
            "reco_state_cache_customers", "customers whose state the worker keeps",
            value=len(self.cache),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "reco_state_cache_active", "1 while the cache hears Redis's announcements",
            value=int(self.cache.active),
        )  # fmt: skip
