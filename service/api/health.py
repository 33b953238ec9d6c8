"""Liveness and readiness (no key needed), for GET and for checkers that send HEAD."""

from __future__ import annotations

from litestar import get, head
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.response import Response
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from service.live_model import LiveModel
from service.schemas import Health
from service.store import Store


@get("/health/live", operation_id="live", tags=["health"])
async def health_live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@head("/health/live", operation_id="liveHead", tags=["health"])
async def health_live_head() -> None:
    """``/health/live`` without a body."""


_NOT_READY = {503: ResponseSpec(Health, description="Not ready: ``checks`` says why")}


@get("/health/ready", operation_id="ready", tags=["health"], responses=_NOT_READY)
async def health_ready(
    live_model: NamedDependency[LiveModel], store: NamedDependency[Store]
) -> Response[Health]:
    """200 when a model is loaded and Redis answers, else 503 with the reason per check.

    Answers at once while Redis is known to be unavailable (the store's breaker is open): a
    checker asks again within a second, and finds it ready once the store uses Redis again.
    """
    body = await _readiness(live_model, store)
    return Response(body, status_code=_status(body))


@head(
    "/health/ready",
    operation_id="readyHead",
    tags=["health"],
    responses={503: ResponseSpec(None, description="Not ready")},
)
async def health_ready_head(
    live_model: NamedDependency[LiveModel], store: NamedDependency[Store]
) -> Response[None]:
    """``/health/ready``'s status without a body."""
    return Response(None, status_code=_status(await _readiness(live_model, store)))


def _status(health: Health) -> int:
    return 200 if health.status == "ok" else HTTP_503_SERVICE_UNAVAILABLE


async def _readiness(live_model: LiveModel, store: Store) -> Health:
    model_ok = live_model.current is not None
    redis_ok = await store.ping()
    checks = {
        "model": "ok" if model_ok else (live_model.error or "not loaded"),
        "redis": "ok" if redis_ok else "unreachable",
    }
    if (reason := store.unavailable) is not None:
        checks["redis_breaker"] = f"open: {reason}"  # the store fails at once until Redis answers
    if model_ok and live_model.error:
        checks["model_refresh"] = live_model.error  # serving the old one; the new one failed
    if model_ok and live_model.served_files_gone():
        checks["model_files"] = (
            f"the folder of model {live_model.version} is gone: served from memory, "
            "but a worker started now could not load it"
        )
    return Health(
        status="ok" if model_ok and redis_ok else "unavailable",
        model_version=live_model.version,
        checks=checks,
    )
