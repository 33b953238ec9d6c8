"""Reload requests shared through Redis: one worker is asked, every worker loads the model."""

from __future__ import annotations

from service.store.base import StoreBase, unavailable_on_redis_error


class ModelReloads(StoreBase):
    """A counter of reload requests; a worker that sees it change loads ``LATEST``."""

    @unavailable_on_redis_error
    async def announce_model_reload(self) -> int:
        """Count one reload request; returns the new count."""
        return int(await self.client.incr(self.keys.model_reloads))

    @unavailable_on_redis_error
    async def model_reloads(self) -> int:
        """Reload requests so far (0 before any)."""
        return int(await self.client.get(self.keys.model_reloads) or 0)
