"""The live model (scope ``admin``)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency

from service.api.responses import problems
from service.errors import StoreUnavailable
from service.live_model import LiveModel
from service.store import Store


class AdminModelController(Controller):
    """The live model (scope ``admin``)."""

    path = "/v1/models"
    opt = {"scope": "admin"}  # noqa: RUF012
    tags = ["admin"]  # noqa: RUF012

    @get("/", operation_id="liveModel", responses=problems())
    async def live(self, live_model: NamedDependency[LiveModel]) -> dict[str, Any]:
        """The live model's manifest (version, parameters, data window, counts, metrics)."""
        model = live_model.get()
        return msgspec.to_builtins(model.artifact.manifest)  # type: ignore[no-any-return]

    @post("/reload", status_code=200, operation_id="reloadModel", responses=problems())
    async def reload(
        self, live_model: NamedDependency[LiveModel], store: NamedDependency[Store]
    ) -> dict[str, Any]:
        """Load the version ``LATEST`` names now, here; the other workers and replicas on the same
        Redis follow within a second (``announced``; they also poll for it). A version that
        failed to load is tried again (it may have been repaired)."""
        swapped = await live_model.refresh(retry_failed=True)
        try:
            await store.announce_model_reload()
            announced = True
        except StoreUnavailable:  # this worker has it; the others at their next poll
            announced = False
        return {
            "swapped": swapped,
            "model_version": live_model.version,
            "error": live_model.error,
            "announced": announced,
        }
