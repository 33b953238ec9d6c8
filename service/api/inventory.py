"""Stock and assortment (scope ``admin``)."""

from __future__ import annotations

from litestar import Controller, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from service.api.responses import problems
from service.schemas import InventoryAccepted, InventoryRequest
from service.store import Store


class InventoryController(Controller):
    """Availability per item, online and per store."""

    path = "/v1/inventory"
    opt = {"scope": "admin"}  # noqa: RUF012
    tags = ["inventory"]  # noqa: RUF012

    @put("/", operation_id="setInventory", responses=problems(400, 413))
    async def set_inventory(
        self, data: JSONBody[InventoryRequest], store: NamedDependency[Store]
    ) -> InventoryAccepted:
        """Mark items available or not online and per store (one transaction)."""
        version = await store.set_stock(data.items)
        return InventoryAccepted(updated=len(data.items), stock_version=version)
