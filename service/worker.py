"""The app factory ``python -m service`` hands uvicorn: ``service.app.create_app`` in a worker
that ends with its parent, and that tells the parent when it cannot start."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys

from litestar import Litestar
from uvicorn.config import STARTUP_FAILURE

from service import app

log = logging.getLogger("uvicorn.error")  # configured in every worker by uvicorn

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def create_app() -> Litestar:
    """The app, built in a uvicorn worker process."""
    end_with_parent()
    try:
        return app.create_app()
    except Exception:
        # uvicorn's supervisor starts a worker that died of anything else again, forever; this
        # status makes it stop the service instead (python -m service then exits with it).
        log.exception("worker failed to start")
        sys.exit(STARTUP_FAILURE)


def end_with_parent() -> None:
    """Have the kernel send this worker SIGTERM when its parent dies (Linux).

    A parent killed with SIGKILL cannot stop its workers: they went on serving on the port, and
    the service started next failed with "address already in use". SIGTERM lets the worker
    finish the requests it has begun. Nothing to do in a process that is not a worker.
    """
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning(
            "this worker will not end with its parent: prctl: %s", os.strerror(ctypes.get_errno())
        )
        return
    if os.getppid() != parent.pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
