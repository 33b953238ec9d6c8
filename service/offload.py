"""Keeping the event loop free: a ranking that must score a large catalogue runs in a thread.

Most rankings are short (the index answers, or the catalogue is small), and a thread hop costs
more than they do, so a request ranks on the event loop first. Scoring code about to score more
than the limit's items exactly calls ``guard``; on the loop's pass that raises ``WouldBlock``,
and ``off_loop_if_heavy`` reruns the whole ranking in a worker thread, where numpy's products
release the GIL and the loop goes on serving other requests. A ranking is a pure function of the
model and the request (it only fills caches), so running it twice changes nothing but time, and
only the rare heavy request pays for the first, abandoned pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# The most items the current context may score exactly; None: no limit (a thread, a batch job).
_limit: ContextVar[int | None] = ContextVar("inline_scoring_limit", default=None)


class WouldBlock(Exception):
    """The ranking would score too many items on the event loop."""


def guard(n_items: int) -> None:
    """Call before scoring ``n_items`` items exactly: raises ``WouldBlock`` on the loop's pass."""
    limit = _limit.get()
    if limit is not None and n_items > limit:
        raise WouldBlock(n_items)


async def off_loop_if_heavy(
    limit: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """``fn(*args, **kwargs)`` on the loop, or in a thread when it would score more than ``limit``.

    ``fn`` must be pure apart from caches: a heavy call is started on the loop and run again.
    """
    token = _limit.set(limit)
    try:
        return fn(*args, **kwargs)
    except WouldBlock:
        pass
    finally:
        _limit.reset(token)
    # to_thread copies the context, where the limit is unset again: the thread scores freely.
    return await asyncio.to_thread(fn, *args, **kwargs)
