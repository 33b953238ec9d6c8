"""Real-time state in Redis; this package is the only code that talks to Redis.

``Store`` combines one part per area (events and customer state, ...); every key name comes from
``keys.Keys``. Callers never see Redis types; connection problems become ``StoreUnavailable``.
"""

from __future__ import annotations

from service.store.customers import CustomerState, EventState
from service.store.keys import Keys
from service.store.tracking import TrackingState


class Store(EventState, TrackingState):
    """Every domain operation on Redis the service needs."""


__all__ = ["CustomerState", "Keys", "Store"]
