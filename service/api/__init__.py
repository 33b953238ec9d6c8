"""The HTTP routes, one module per area; thin handlers, the work is in the domain modules."""

from __future__ import annotations

from service.api.admin import AdminModelController
from service.api.dashboard import DashboardController, dashboard_page, metrics
from service.api.events import EventController
from service.api.experiments import ExperimentController
from service.api.health import health_live, health_ready
from service.api.recommendations import RecommendationController

ROUTES = [
    RecommendationController,
    EventController,
    AdminModelController,
    health_live,
    health_ready,
    # Measurement (issue 7).
    ExperimentController,
    DashboardController,
    dashboard_page,
    metrics,
]
