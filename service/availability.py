"""Which items a channel or store may show, as masks over the model's items, cached per worker.

Online channels show everything not marked unavailable online; a request with a ``store_id``
(the tablet, click and collect) shows only what that store has in stock. A store that never sent
inventory is not filtered. Masks are rebuilt only when the inventory version changes, which each
worker checks at most every ``refresh_seconds``: no Redis read on most requests.

A rebuild turns the ids Redis holds into a mask in a thread, once per worker however many
requests wait for it: at a million items, a store stocking 200,000 held the event loop for
0.7-1.2 s after every inventory change, for each request that came meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np

from service.errors import StoreUnavailable
from service.ranking import FactorModel, Mask
from service.shared_build import shared
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
        # The rebuilds under way, by (model version, location, stock version): one for all.
        self._building: dict[tuple[str, str, int], asyncio.Future[Mask | None]] = {}

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
                return await self._shared_build(key, model, store_id)
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

    async def _shared_build(
        self, key: tuple[str, str], model: FactorModel, store_id: str | None
    ) -> Mask | None:
        """The mask of ``key``, built once for the requests that need it meanwhile; kept unless
        the stock changed meanwhile."""
        version = self._version
        mask = await shared(self._building, (*key, version), lambda: self._build(model, store_id))
        if version == self._version:
            self._masks[key] = mask
        return mask

    async def _build(self, model: FactorModel, store_id: str | None) -> Mask | None:
        if store_id is None:
            out = await self.store.unavailable_online()
            return await asyncio.to_thread(_mask, model, out, False) if out else None
        stocked = await self.store.available_in_store(store_id)
        if stocked is None:
            return None
        return await asyncio.to_thread(_mask, model, stocked, True)


def _mask(model: FactorModel, ids: Sequence[bytes | str], listed: bool) -> Mask:
    """A mask over the model's items: ``listed`` for ``ids`` (as Redis replies them), the
    opposite for the others."""
    encoded = [i if isinstance(i, bytes) else i.encode("utf-8") for i in ids]
    mask = np.full(model.n_items, not listed, dtype=bool)
    mask[model.rows_of_encoded(encoded)] = listed
    return mask
