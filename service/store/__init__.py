"""Real-time state in Redis; this package is the only code that talks to Redis.

``Store`` combines one part per area (events and customer state, ...); every key name comes from
``keys.Keys``. Callers never see Redis types; connection problems become ``StoreUnavailable``.
"""

from __future__ import annotations

from service.state import CustomerState
from service.store.customers import EventState
from service.store.erasure import Erasure, ErasureReport
from service.store.identities import IdentityGraph, LinkResult
from service.store.inventory import Inventory, StockUpdate
from service.store.keys import Keys
from service.store.offers import OfferStore
from service.store.reloads import ModelReloads
from service.store.tracking import TrackingState


class Store(EventState, IdentityGraph, Inventory, Erasure, OfferStore, TrackingState, ModelReloads):
    """Every domain operation on Redis the service needs."""


__all__ = ["CustomerState", "ErasureReport", "Keys", "LinkResult", "StockUpdate", "Store"]
