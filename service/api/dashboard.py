"""The dashboard page and its data (scope ``admin``), and Prometheus ``/metrics`` (no scope)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, MediaType, Response, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from prometheus_client import CONTENT_TYPE_LATEST

from service import dashboard
from service.api.responses import problems
from service.dashboard import Dashboard
from service.live_model import LiveModel
from service.settings import Settings
from service.store import Store
from service.tracking import Tracking

# Prometheus' content type without its charset: Litestar appends "; charset=utf-8" to every
# text/* type, and a charset given twice is a malformed header (Go's parser, so Prometheus 3,
# refuses it).
_EXPOSITION_TYPE = "; ".join(
    p for p in CONTENT_TYPE_LATEST.split("; ") if not p.lower().startswith("charset=")
)

Days = Annotated[int, QueryParameter(ge=1, le=90, description="Days of history to chart")]


class DashboardController(Controller):
    """The dashboard's data (scope ``admin``)."""

    path = "/v1/dashboard"
    opt = {"scope": "admin"}  # noqa: RUF012
    tags = ["admin"]  # noqa: RUF012

    @get("/", operation_id="dashboardData", responses=problems(400))
    async def data(
        self,
        store: NamedDependency[Store],
        live_model: NamedDependency[LiveModel],
        settings: NamedDependency[Settings],
        tracking: NamedDependency[Tracking],
        days: Days = 14,
    ) -> Dashboard:
        """Per channel and variant CTR and conversion over time, catalogue coverage, and the live
        model's offline metrics next to its online figures (and the previous model's)."""
        await tracking.flush()  # this replica's last second of served items counts too
        model = live_model.current
        return await dashboard.build(
            store,
            settings.model_dir,
            model.version if model else None,
            model.n_items if model else 0,
            days=days,
        )


@get("/dashboard", media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
def dashboard_page() -> str:
    """The dashboard page; it asks for an admin key and reads ``/v1/dashboard``."""
    return dashboard.page()


@get("/metrics", include_in_schema=False)
async def metrics(
    tracking: NamedDependency[Tracking], live_model: NamedDependency[LiveModel]
) -> Response[bytes]:
    """Prometheus exposition: latency per route and channel, errors, fallbacks, Redis, events."""
    body = tracking.metrics.exposition(live_model.version)
    return Response(body, media_type=_EXPOSITION_TYPE)
