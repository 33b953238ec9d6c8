"""Liveness and readiness (no key needed)."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.response import Response
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from service.live_model import LiveModel
from service.schemas import Health
from service.store import Store


@get("/health/live", operation_id="live", tags=["health"])
async def health_live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@get("/health/ready", operation_id="ready", tags=["health"])
async def health_ready(
    live_model: NamedDependency[LiveModel], store: NamedDependency[Store]
) -> Response[Health]:
    """200 when a model is loaded and Redis answers, else 503 with the reason per check."""
    model_ok = live_model.current is not None
    redis_ok = await store.ping()
    checks = {
        "model": "ok" if model_ok else (live_model.error or "not loaded"),
        "redis": "ok" if redis_ok else "unreachable",
    }
    if model_ok and live_model.error:
        checks["model_refresh"] = live_model.error  # serving the old one; the new one failed
    ready = model_ok and redis_ok
    body = Health(
        status="ok" if ready else "unavailable",
        model_version=live_model.version,
        checks=checks,
    )
    return Response(body, status_code=200 if ready else HTTP_503_SERVICE_UNAVAILABLE)
