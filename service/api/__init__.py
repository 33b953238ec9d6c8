"""The HTTP routes, one module per area; thin handlers, the work is in the domain modules."""

from __future__ import annotations

from service.api.admin import AdminModelController
from service.api.customers import ConsentController, ErasureController, IdentityController
from service.api.dashboard import DashboardController, dashboard_page, metrics
from service.api.events import EventController
from service.api.experiments import ExperimentController
from service.api.health import health_live, health_live_head, health_ready, health_ready_head
from service.api.inventory import InventoryController
from service.api.offers import CustomerOffersController, OfferCatalogueController
from service.api.recommendations import RecommendationController
from service.api.tablet import TabletController, tablet_page

ROUTES = [
    RecommendationController,
    EventController,
    IdentityController,
    ConsentController,
    ErasureController,
    InventoryController,
    TabletController,
    tablet_page,
    AdminModelController,
    OfferCatalogueController,
    CustomerOffersController,
    health_live,
    health_live_head,
    health_ready,
    health_ready_head,
    # Measurement (issue 7).
    ExperimentController,
    DashboardController,
    dashboard_page,
    metrics,
]
