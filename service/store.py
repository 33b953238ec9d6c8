"""Real-time customer state in Redis; the only module that talks to Redis.

Every key name is built by ``Keys``. A customer's keys share the hash tag ``{c:<customer_id>}`` so
they live in one Redis Cluster slot and one customer's writes can run in one transaction.
Values are msgpack-encoded ``Event`` structs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import msgspec
import redis.exceptions
from redis.asyncio import Redis

from service.errors import StoreUnavailable
from service.events import CONSUMED_EVENT_TYPES, Event, event_msgpack_decoder, msgpack_encoder

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class Keys:
    """Every Redis key the service uses, in one place."""

    def __init__(self, prefix: str) -> None:
        """Namespace all keys under ``prefix`` (several deployments can share one Redis)."""
        self.prefix = prefix
        # The durable log of every acknowledged event (drained to Parquet by the exporter).
        self.events = f"{prefix}:events"

    def _customer(self, customer_id: str, what: str) -> str:
        return f"{self.prefix}:{{c:{customer_id}}}:{what}"

    def recent(self, customer_id: str) -> str:
        """The customer's latest events, newest first, capped in length and age."""
        return self._customer(customer_id, "recent")

    def bought(self, customer_id: str) -> str:
        """The set of item ids the customer bought since the model was trained."""
        return self._customer(customer_id, "bought")


class CustomerState(msgspec.Struct, frozen=True, kw_only=True):
    """What Redis knows about a customer right now."""

    recent: list[Event] = []
    bought: frozenset[str] = frozenset()


def _unavailable_on_redis_error(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn Redis connection problems and timeouts into ``StoreUnavailable`` (a 503).

    Other Redis errors (a wrong key type, say) are bugs, not outages, and propagate.
    """

    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as e:
            log.warning("redis unavailable in %s: %s", fn.__name__, e)
            raise StoreUnavailable(f"customer state store unavailable: {type(e).__name__}") from e

    return wrapper


class Store:
    """Domain operations on customer state; callers never see Redis types."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "reco",
        recent_max: int = 100,
        recent_ttl_days: int = 90,
    ) -> None:
        """Use ``client`` (opened and closed by the app's lifespan)."""
        self.client = client
        self.keys = Keys(prefix)
        self.recent_max = recent_max
        self.recent_ttl_seconds = recent_ttl_days * 86400

    async def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(await self.client.ping())
        except (redis.exceptions.RedisError, OSError):
            return False

    @_unavailable_on_redis_error
    async def record(self, events: Sequence[Event]) -> list[str]:
        """Append ``events`` to the durable stream and update each customer's state, atomically.

        All writes go in one MULTI/EXEC transaction, in one round trip: nothing is applied unless
        the whole transaction reached Redis, and no other client sees half a batch. The caller
        acknowledges the batch only when this returns.

        Returns:
            The stream entry id of each event, in order.
        """
        if not events:
            return []
        payloads = [msgpack_encoder.encode(event) for event in events]
        pipe = self.client.pipeline(transaction=True)
        # The XADDs come first, so the first len(events) results are the stream ids.
        for payload in payloads:
            pipe.xadd(self.keys.events, {"e": payload})
        for event, payload in zip(events, payloads, strict=True):
            self._update_state(pipe, event, payload)
        results = await pipe.execute()
        return [_text(entry_id) for entry_id in results[: len(events)]]

    def _update_state(self, pipe: Any, event: Event, payload: bytes) -> None:
        recent = self.keys.recent(event.customer_id)
        pipe.lpush(recent, payload)
        pipe.ltrim(recent, 0, self.recent_max - 1)
        pipe.expire(recent, self.recent_ttl_seconds)
        if event.event_type in CONSUMED_EVENT_TYPES and event.item_id is not None:
            bought = self.keys.bought(event.customer_id)
            pipe.sadd(bought, event.item_id)
            pipe.expire(bought, self.recent_ttl_seconds)

    @_unavailable_on_redis_error
    async def customer_state(self, customer_id: str) -> CustomerState:
        """Recent events (newest first) and bought items of ``customer_id``, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(self.keys.recent(customer_id), 0, -1)
        pipe.smembers(self.keys.bought(customer_id))
        recent_raw, bought_raw = await pipe.execute()
        recent = []
        for raw in recent_raw:
            try:
                recent.append(event_msgpack_decoder.decode(raw))
            except msgspec.DecodeError:
                # An entry written by an incompatible version: skip it rather than fail the request.
                log.warning("undecodable recent event for a customer; skipped")
        return CustomerState(recent=recent, bought=frozenset(_text(b) for b in bought_raw))

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
