"""Stock and assortment in Redis: what is available online and in each store."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from service.events import Id
from service.store.base import StoreBase, unavailable_on_redis_error


class StockUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Availability of one item: online, and per store (in stock or not)."""

    item_id: Id
    online: bool | None = None
    stores: dict[Id, bool] = msgspec.field(default_factory=dict)


class Inventory(StoreBase):
    """Online is a block list (everything is available unless marked out); a store is an allow list
    (only items marked in stock there), because a store carries a small part of the catalogue.
    """

    @unavailable_on_redis_error
    async def set_stock(self, updates: Sequence[StockUpdate]) -> int:
        """Apply availability changes in one transaction; returns the new stock version."""
        keys = self.keys
        pipe = self.client.pipeline(transaction=True)
        for update in updates:
            if update.online is True:
                pipe.srem(keys.unavailable_online, update.item_id)
            elif update.online is False:
                pipe.sadd(keys.unavailable_online, update.item_id)
            for store_id, available in update.stores.items():
                pipe.sadd(keys.stock_stores, store_id)
                if available:
                    pipe.sadd(keys.available_in_store(store_id), update.item_id)
                else:
                    pipe.srem(keys.available_in_store(store_id), update.item_id)
        pipe.incr(keys.stock_version)
        results = await pipe.execute()
        return int(results[-1])

    # The reads below serve requests (service/availability.py): on the shared connection, with
    # the request's other reads, so that a request on a hung Redis waits one timeout in all, not
    # one for its customer's state and another for the stock (store/connection.py).

    @unavailable_on_redis_error
    async def stock_version(self) -> int:
        """The counter every inventory change bumps (0 before any)."""
        return int(await self.pipelined.command("GET", self.keys.stock_version) or 0)

    # Both return the ids as Redis replies them, undecoded: a store's stock may hold hundreds of
    # thousands, and decoding them on the event loop held it for most of a second (the caller
    # turns them into a mask in a thread: service/availability.py).

    @unavailable_on_redis_error
    async def unavailable_online(self) -> list[bytes | str]:
        """Items marked unavailable online (UTF-8 ids, undecoded)."""
        return list(await self.pipelined.command("SMEMBERS", self.keys.unavailable_online))

    @unavailable_on_redis_error
    async def available_in_store(self, store_id: str) -> list[bytes | str] | None:
        """Items in stock in ``store_id`` (UTF-8 ids, undecoded); None when the store never
        sent inventory."""
        known, items = await self.pipelined.commands(
            [
                ("SISMEMBER", self.keys.stock_stores, store_id),
                ("SMEMBERS", self.keys.available_in_store(store_id)),
            ]
        )
        return list(items) if known else None
