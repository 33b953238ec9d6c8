"""One build for everyone who needs it at once: the first caller starts it, and the callers that
arrive while it runs await that one instead of starting their own.

After a deploy, a hot swap or a change to the offers or the stock, a worker's first requests all
miss the same cache at once; each starting the build (in a thread, a second or more at a million
items) multiplied the work by the requests in flight (32 offers' plans at 100k items made the
first seconds' p99 395 ms instead of 48).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


async def shared(
    building: dict[K, asyncio.Future[T]], key: K, start: Callable[[], Awaitable[T]]
) -> T:
    """What ``start()`` gives for ``key``: started by the first caller, kept in ``building``
    while it runs, awaited by everyone. A failure reaches every caller waiting then, and the
    next caller starts again."""
    future = building.get(key)
    if future is None:
        future = building[key] = asyncio.ensure_future(start())
        future.add_done_callback(lambda done: _forget(building, key, done))
    # Shielded: a caller that goes away does not cancel the build the others await.
    return await asyncio.shield(future)


def _forget(building: dict[K, asyncio.Future[T]], key: K, done: asyncio.Future[T]) -> None:
    if building.get(key) is done:
        del building[key]
    if not done.cancelled():
        done.exception()  # retrieved: when every caller left, a failure is not logged as lost
