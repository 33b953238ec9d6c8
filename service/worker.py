"""The app factory ``python -m service`` hands uvicorn: ``service.app.create_app`` in a worker
that tells the parent when it cannot start."""

from __future__ import annotations

import logging
import sys

from litestar import Litestar
from uvicorn.config import STARTUP_FAILURE

from service import app

log = logging.getLogger("uvicorn.error")  # configured in every worker by uvicorn


def create_app() -> Litestar:
    """The app, built in a uvicorn worker process."""
    try:
        return app.create_app()
    except Exception:
        # uvicorn's supervisor starts a worker that died of anything else again, forever; this
        # status makes it stop the service instead (python -m service then exits with it).
        log.exception("worker failed to start")
        sys.exit(STARTUP_FAILURE)
