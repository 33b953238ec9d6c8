"""The store's circuit breaker: once Redis has timed out or refused a connection, fail at once.

Without it a hung Redis cost every request the full timeout again, although the connection had
just timed out: with Redis stopped, each degraded recommendation took 0.5-1.0 s and a worker
served 12 clients 11 answers a second. While the breaker is open, commands raise ``CircuitOpen``
at once (the store makes it ``StoreUnavailable``), and one probe in the background (a PING, on
a new connection if need be, every ``retry_seconds``) closes it as soon as Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import redis.exceptions

log = logging.getLogger(__name__)


class CircuitOpen(redis.exceptions.ConnectionError):
    """A command not sent: Redis failed a moment ago and has not answered a probe since."""


class Breaker:
    """Open after a failure (``trip``); closed by a probe that Redis answers."""

    def __init__(self, probe: Callable[[], Awaitable[object]], retry_seconds: float) -> None:
        """Probe with ``probe()`` (raises while Redis is unavailable) every ``retry_seconds``."""
        # Why it is open; None while closed. Callers test this attribute (the hot path).
        self.reason: str | None = None
        self.retry_seconds = retry_seconds
        self._probe = probe
        self._probing: asyncio.Task[None] | None = None

    def trip(self, error: BaseException) -> None:
        """Open (again) because of ``error``, and probe until Redis answers."""
        if self.reason is None:
            log.warning(
                "redis unavailable (%s): failing fast, probing every %s s",
                error,
                self.retry_seconds,
            )
        self.reason = f"{type(error).__name__}: {error}"
        self._keep_probing()

    def refuse(self) -> NoReturn:
        """Raise ``CircuitOpen`` (the breaker is open)."""
        # A breaker opened on an event loop that has stopped since has no probe running here.
        self._keep_probing()
        raise CircuitOpen(f"Redis failed a moment ago ({self.reason}); not retried yet")

    async def aclose(self) -> None:
        """Stop probing."""
        probing, self._probing = self._probing, None
        if probing is None or probing.done():
            return
        if probing.get_loop() is asyncio.get_running_loop():
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing

    def _keep_probing(self) -> None:
        loop = asyncio.get_running_loop()
        probing = self._probing
        if probing is None or probing.done() or probing.get_loop() is not loop:
            self._probing = loop.create_task(self._probe_until_answered())

    async def _probe_until_answered(self) -> None:
        while self.reason is not None:
            # Not at once: the failure has just happened (a timeout, a refused connection).
            await asyncio.sleep(self.retry_seconds)
            try:
                await self._probe()
            except (redis.exceptions.RedisError, OSError) as e:
                log.debug("redis probe failed: %s", e)
                continue
            except Exception:  # the probe must not die: the breaker would stay open
                log.exception("redis probe failed")
                continue
            log.info("redis answers again: using it")
            self.reason = None
