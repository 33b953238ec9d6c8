"""Which items a channel or store may show, as masks over the model's items, cached per worker.

Online channels show everything not marked unavailable online; a request with a ``store_id``
(the tablet, click and collect) shows only what that store has in stock. A store that never sent
inventory is not filtered. Masks are rebuilt only when the inventory version changes, which each
worker checks at most every ``refresh_seconds``: no Redis read on most requests.
"""

from __future__ import annotations

import time

import numpy as np

from service.errors import StoreUnavailable
from service.ranking import FactorModel, Mask
from service.store import Store

IN_STORE_CHANNELS = frozenset({"store", "tablet"})


class Availability:
    """Per-worker cache of availability masks by model version, location and stock version."""

    def __init__(self, store: Store, *, refresh_seconds: float = 1.0) -> None:
        """Read inventory from ``store``; look for changes at most every ``refresh_seconds``."""
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._version = -1
        self._checked_at = float("-inf")
        self._masks: dict[tuple[str, str], Mask | None] = {}

    async def mask(self, model: FactorModel, channel: str, store_id: str | None) -> Mask | None:
        """Items allowed for this channel/store (None: no restriction)."""
        location = (
            f"store:{store_id}"
            if store_id
            else (None if channel in IN_STORE_CHANNELS else "online")
        )
        if location is None:
            return None
        key = (model.version, location)
        try:
            await self._refresh()
            if key not in self._masks:
                self._masks[key] = await self._build(model, store_id)
        except StoreUnavailable:
            pass  # serve with the last known stock rather than fail; no stock known: no filter
        return self._masks.get(key)

    async def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.refresh_seconds:
            return
        version = await self.store.stock_version()
        self._checked_at = now
        if version != self._version:
            self._version, self._masks = version, {}

    async def _build(self, model: FactorModel, store_id: str | None) -> Mask | None:
        if store_id is None:
            out = await self.store.unavailable_online()
            if not out:
                return None
            mask = np.ones(model.n_items, dtype=bool)
            mask[model.item_rows(out)] = False
            return mask
        stocked = await self.store.available_in_store(store_id)
        if stocked is None:
            return None
        mask = np.zeros(model.n_items, dtype=bool)
        mask[model.item_rows(stocked)] = True
        return mask
