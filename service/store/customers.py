"""Events in Redis: the durable stream, and each customer's recent events and purchases."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from service.events import CONSUMED_EVENT_TYPES, Event, event_msgpack_decoder, msgpack_encoder
from service.store.base import StoreBase, text, unavailable_on_redis_error

log = logging.getLogger(__name__)


class CustomerState(msgspec.Struct, frozen=True, kw_only=True):
    """What Redis knows about a customer right now."""

    recent: list[Event] = []
    bought: frozenset[str] = frozenset()


class EventState(StoreBase):
    """Events: the durable stream and each customer's recent events and purchases."""

    @unavailable_on_redis_error
    async def record(
        self, events: Sequence[Event], *, also: Callable[[Any], None] | None = None
    ) -> list[str]:
        """Append ``events`` to the durable stream and update each customer's state, atomically.

        All writes go in one MULTI/EXEC transaction, in one round trip: nothing is applied unless
        the whole transaction reached Redis, and no other client sees half a batch. The caller
        acknowledges the batch only when this returns.

        Args:
            events: the batch.
            also: queues more writes on the same transaction (the measurement counters).

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
        if also is not None:
            also(pipe)
        results = await pipe.execute()
        return [text(entry_id) for entry_id in results[: len(events)]]

    def _update_state(self, pipe: Any, event: Event, payload: bytes) -> None:
        recent = self.keys.recent(event.customer_id)
        pipe.lpush(recent, payload)
        pipe.ltrim(recent, 0, self.recent_max - 1)
        pipe.expire(recent, self.recent_ttl_seconds)
        if event.event_type in CONSUMED_EVENT_TYPES and event.item_id is not None:
            bought = self.keys.bought(event.customer_id)
            pipe.sadd(bought, event.item_id)
            pipe.expire(bought, self.recent_ttl_seconds)

    @unavailable_on_redis_error
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
        return CustomerState(recent=recent, bought=frozenset(text(b) for b in bought_raw))
