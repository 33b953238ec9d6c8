"""Events in Redis: the durable stream, and each customer's recent events, purchases and cart."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import msgspec
from redis.commands.core import AsyncScript

from service.errors import StoreUnavailable
from service.events import (
    CONSUMED_EVENT_TYPES,
    Event,
    event_msgpack_decoder,
    msgpack_encoder,
    stream_payload,
)
from service.state import CartLine, Consent, CustomerState, cart_line_decoder, consent_decoder
from service.store.base import StoreBase, mapping, text, unavailable_on_redis_error
from service.store.erasure import customer_hash, erasure_time
from service.store.keys import Keys

log = logging.getLogger(__name__)

# How long an event id is remembered, so a retried batch is not counted twice.
IDEMPOTENCY_TTL_SECONDS = 7 * 86400

# One script call records a whole batch: atomic, one round trip, and idempotent per event id
# (a MULTI/EXEC cannot skip an event whose id was seen without a second round trip).
# KEYS[1] = stream; ARGV = recent_max, ttl, seen_ttl, the start of every customer key prefix
# ("reco:{c:"), then 13 values per event: customer key prefix, payload, seen key ("" = none),
# bought item, cart op, cart item, cart line, channel, epoch seconds, order key ("" = not a
# purchase), value (spend; negative for returns), month, and the identifier key of an anonymous
# customer ("" = none). An identifier linked since its event was resolved sends the event to
# its customer: the link merged the anonymous state already, and would never see this event.
_RECORD = """
local function keep_min(h, field, v)
  local cur = tonumber(redis.call('HGET', h, field))
  if not cur or v < cur then redis.call('HSET', h, field, v) end
end
local function keep_max(h, field, v)
  local cur = tonumber(redis.call('HGET', h, field))
  if not cur or v > cur then redis.call('HSET', h, field, v) end
end
local out = {}
local n = (#ARGV - 4) / 13
for i = 0, n - 1 do
  local b = 4 + i * 13
  local prefix, payload, seen = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  if ARGV[b + 13] ~= '' then
    local owner = redis.call('GET', ARGV[b + 13])
    if owner then prefix = ARGV[4] .. owner .. '}:' end
  end
  local existing = false
  if seen ~= '' then existing = redis.call('GET', seen) end
  if existing then
    out[#out + 1] = existing
  else
    local id = redis.call('XADD', KEYS[1], '*', 'e', payload)
    if seen ~= '' then redis.call('SET', seen, id, 'EX', ARGV[3]) end
    local recent = prefix .. 'recent'
    redis.call('LPUSH', recent, payload)
    redis.call('LTRIM', recent, 0, tonumber(ARGV[1]) - 1)
    redis.call('EXPIRE', recent, ARGV[2])
    if ARGV[b + 4] ~= '' then
      redis.call('SADD', prefix .. 'bought', ARGV[b + 4])
      redis.call('EXPIRE', prefix .. 'bought', ARGV[2])
    end
    local op, cart = ARGV[b + 5], prefix .. 'cart'
    if op == 'add' then
      redis.call('HSET', cart, ARGV[b + 6], ARGV[b + 7])
      redis.call('EXPIRE', cart, ARGV[2])
    elseif op == 'remove' then
      redis.call('HDEL', cart, ARGV[b + 6])
    end
    local stats, channel, ts = prefix .. 'stats', ARGV[b + 8], tonumber(ARGV[b + 9])
    local order, value = ARGV[b + 10], tonumber(ARGV[b + 11])
    redis.call('HINCRBY', stats, 'ev:' .. channel, 1)
    keep_min(stats, 'first_seen', ts)
    keep_max(stats, 'last_seen', ts)
    if value ~= 0 then
      redis.call('HINCRBYFLOAT', stats, 'spend:' .. channel, value)
      redis.call('HINCRBYFLOAT', stats, 'm:' .. ARGV[b + 12], value)
    end
    if order ~= '' then
      keep_max(stats, 'last_purchase', ts)
      if redis.call('SADD', prefix .. 'orders', order) == 1 then
        redis.call('HINCRBY', stats, 'orders:' .. channel, 1)
        keep_min(stats, 'first_order', ts)
        keep_max(stats, 'last_order', ts)
      end
    end
    out[#out + 1] = id
  end
end
return out
"""


# Compare and set: KEYS[1] takes ARGV[2] only if it still holds ARGV[1] ("": missing); 1 if set.
_REPLACE_IF_UNCHANGED = """
local held = redis.call('GET', KEYS[1]) or ''
if held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""
# Reads and compare-and-sets of a consent update before it gives up (a 503 to retry): each
# round one of the changes racing for a customer's record wins, so this many may race at once.
_CONSENT_ATTEMPTS = 32


# A customer's state in one command: recent events (ARGV[1] = last index), purchases, cart,
# consent, and when the customer was erased, if ever (KEYS: ``state_keys``; ARGV[2]: the id's
# hash in the suppression list, which erasure writes and training honours; the served model
# decides whether that erasure makes them a stranger, ``CustomerState.stranger_to``). One EVALSHA
# costs the client about half of what a pipeline of the reads does, and the recommendation route
# runs it on every request. The first four keys share the customer's hash tag. ``STATE_READS`` is
# the table's contents, for scripts that read more.
STATE_READS = """
  redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1])), redis.call('SMEMBERS', KEYS[2]),
  redis.call('HGETALL', KEYS[3]), redis.call('GET', KEYS[4]),
  redis.call('HGET', KEYS[5], ARGV[2])"""
# How many replies (and keys) ``STATE_READS`` has.
STATE_PARTS = 5
_READ_STATE = f"return {{{STATE_READS}}}"
# The tablet's look-up: the state (ARGV[1] = -1, every recent event), lifetime stats (KEYS[6])
# and linked identifiers (KEYS[7]).
_READ_PROFILE = f"""
return {{{STATE_READS}, redis.call('HGETALL', KEYS[6]), redis.call('SMEMBERS', KEYS[7])}}
"""


class EventState(StoreBase):
    """Events: the durable stream and each customer's recent events, purchases and cart."""

    @cached_property
    def _record(self) -> AsyncScript:
        return self.client.register_script(_RECORD)

    @cached_property
    def _read_state(self) -> AsyncScript:
        return self.client.register_script(_READ_STATE)

    @cached_property
    def _read_profile(self) -> AsyncScript:
        return self.client.register_script(_READ_PROFILE)

    @cached_property
    def _replace_if_unchanged(self) -> AsyncScript:
        return self.client.register_script(_REPLACE_IF_UNCHANGED)

    @unavailable_on_redis_error
    async def record(
        self, events: Sequence[Event], *, also: Callable[[Any], None] | None = None
    ) -> list[str]:
        """Append ``events`` to the stream and update each customer's state, atomically.

        Every event must carry its resolved ``customer_id``. The batch runs as one Lua script:
        all of it or none of it is applied, in one round trip, and an event whose ``event_id``
        was recorded before (a retry) is not recorded again; its first stream id is returned.

        Args:
            events: the batch.
            also: queues more writes on the same transaction (the measurement counters). One
                of them failing (a key of another type) is logged, not raised: the events are
                recorded by then.

        Returns:
            The stream entry id of each event, in order.
        """
        if not events:
            return []
        args: list[str | bytes | int] = [
            self.recent_max,
            self.recent_ttl_seconds,
            IDEMPOTENCY_TTL_SECONDS,
            self.keys.customer_prefix("").removesuffix("}:"),
        ]
        for event in events:
            args.extend(self._script_args(event))
        if also is None:
            # By its SHA (not the 2 KB script text each time), with the other requests' commands
            # of this turn of the loop (store/pipelined.py).
            ids = await self.pipelined.evalsha(self._record, [self.keys.events], args)
        else:
            # Callers' writes (measurement counters) join the same transaction.
            pipe = self.client.pipeline(transaction=True)
            pipe.eval(_RECORD, 1, self.keys.events, *args)
            also(pipe)
            ids, *others = await pipe.execute(raise_on_error=False)
            if isinstance(ids, Exception):
                raise ids
            if failed := [r for r in others if isinstance(r, Exception)]:
                # Redis does not roll a transaction back: the events are in. Answering an error
                # would make the client send them again; the counters are what is lost.
                log.error(
                    "%d measurement counters not written for %d recorded events: %s",
                    len(failed),
                    len(events),
                    failed[0],
                )
        return [text(i) for i in ids]

    @unavailable_on_redis_error
    async def recorded_before(self, events: Sequence[Event]) -> set[str]:
        """The ``event_id``s among ``events`` already recorded (retries): one round trip on the
        shared connection, none for a batch without event ids."""
        ids = sorted({e.event_id for e in events if e.event_id})
        if not ids:
            return set()
        found = await self.pipelined.command("MGET", *[self.keys.seen(i) for i in ids])
        return {i for i, stream_id in zip(ids, found, strict=True) if stream_id is not None}

    def _script_args(self, event: Event) -> list[str | bytes]:
        assert event.customer_id is not None, "record() needs resolved customer ids"
        item = event.item_id or ""
        cart_op, cart_line = "", b""
        if event.event_type == "add_to_cart" and item:
            cart_op = "add"
            line = CartLine(
                added_at=event.timestamp or datetime.now(UTC),
                channel=event.channel,
                quantity=event.quantity,
            )
            cart_line = msgpack_encoder.encode(line)
        elif event.event_type in ("remove_from_cart", "purchase") and item:
            cart_op = "remove"
        when = event.timestamp or datetime.now(UTC)
        value = event.quantity * (event.price or 0.0)
        return [
            self.keys.customer_prefix(event.customer_id),
            stream_payload(event),  # refuses an event the stream's readers could not decode
            self.keys.seen(event.event_id) if event.event_id else "",
            item if event.event_type in CONSUMED_EVENT_TYPES else "",
            cart_op,
            item,
            cart_line,
            event.channel,
            str(int(when.timestamp())),
            _order_key(event, when) if event.event_type == "purchase" else "",
            repr(
                -value
                if event.event_type == "return"
                else value
                if event.event_type == "purchase"
                else 0.0
            ),
            when.strftime("%Y-%m"),
            self.keys.identifier(event.customer_id) if _anonymous(event) else "",
        ]

    @unavailable_on_redis_error
    async def customer_state(self, customer_id: str, *, recent: int | None = None) -> CustomerState:
        """Recent events (newest first, none older than the TTL), purchases, cart and consent.

        Kept in the worker between the changes Redis announces, when the store has a state
        cache (``state_cache.py``).

        Args:
            recent: read only the newest ``recent`` events (recommendations need only those the
                model has not seen; decoding all of them is most of this call's cost).
        """
        oldest = self._oldest_recent()
        cache, reads = self.state_cache, -1 if recent is None else recent
        if cache is None:
            return await self.read_customer_state(customer_id, reads, oldest)
        if (kept := cache.get(customer_id, reads, oldest.timestamp())) is not None:
            if self.pipelined.waiting:
                # Others wait on Redis: this answer waits a turn of the loop too. Answers from
                # kept states run to their end in one turn, and in a saturated worker the
                # requests waiting on Redis waited through turns of up to 32 of them (category
                # p99 296 ms, against 123 with this turn and 64 without the cache).
                await asyncio.sleep(0)
            return kept
        ticket, state = cache.reading(customer_id), None
        try:
            state = await self.read_customer_state(customer_id, reads, oldest)
        finally:
            cache.done(ticket, customer_id, reads, state)
        return state

    async def read_customer_state(
        self, customer_id: str, reads: int, oldest: datetime
    ) -> CustomerState:
        """``customer_state`` read from Redis, past the cache (``reads``: the newest events
        read, -1 for all)."""
        # On the worker's shared connection, with the other requests' commands (store/pipelined.py).
        replies = await self.pipelined.evalsha(
            self._read_state,
            state_keys(self.keys, customer_id),
            state_args(customer_id, reads - 1 if reads > 0 else -1),
        )
        return state_from(script_replies(replies), oldest)

    @unavailable_on_redis_error
    async def profile_facts(
        self, customer_id: str
    ) -> tuple[CustomerState, dict[str, float], list[str]]:
        """State, lifetime stats and linked identifiers of a customer, in one round trip."""
        k = self.keys
        keys = [*state_keys(k, customer_id), k.stats(customer_id), k.identifiers(customer_id)]
        *state_replies, stats_raw, ids_raw = await self.pipelined.evalsha(
            self._read_profile, keys, state_args(customer_id, -1)
        )
        stats = {text(k): float(v) for k, v in mapping(stats_raw).items()}
        return (
            state_from(script_replies(state_replies), self._oldest_recent()),
            stats,
            sorted(text(i) for i in ids_raw),
        )

    def _oldest_recent(self) -> datetime:
        return datetime.now(UTC) - timedelta(seconds=self.recent_ttl_seconds)

    @unavailable_on_redis_error
    async def set_consent(self, customer_id: str, consent: Consent) -> None:
        """Store the customer's consent (no expiry: it holds until changed or erased)."""
        await self.client.set(self.keys.consent(customer_id), msgpack_encoder.encode(consent))

    @unavailable_on_redis_error
    async def update_consent(
        self, customer_id: str, personalisation: bool | None, marketing: dict[str, bool]
    ) -> Consent:
        """Change only what is given (``personalisation`` None: left as it is; the channels in
        ``marketing``) and keep the rest of the consent on record. Written only if the record
        is still the one read, else read again: two changes at once both hold."""
        key = self.keys.consent(customer_id)
        for _ in range(_CONSENT_ATTEMPTS):
            raw = await self.client.get(key)
            held = consent_decoder.decode(raw) if raw else Consent()
            stated = held.personalisation if personalisation is None else personalisation
            updated = Consent(
                personalisation=stated,
                marketing={**held.marketing, **marketing},
                updated_at=datetime.now(UTC),
            )
            written = await self._replace_if_unchanged(
                keys=[key], args=[raw or b"", msgpack_encoder.encode(updated)]
            )
            if written:
                return updated
            await asyncio.sleep(random.uniform(0, 0.001))  # let the race's winner be read
        raise StoreUnavailable("the customer's consent kept changing; try again")


def state_keys(keys: Keys, customer_id: str) -> list[str]:
    """The keys ``STATE_READS`` reads, in its order."""
    return [
        keys.recent(customer_id),
        keys.bought(customer_id),
        keys.cart(customer_id),
        keys.consent(customer_id),
        keys.suppressed,
    ]


def state_args(customer_id: str, last: int) -> list[int | str]:
    """``STATE_READS``' arguments: the last recent event's index (-1: all), the id's hash."""
    return [last, customer_hash(customer_id)]


def script_replies(replies: Sequence[Any]) -> list[Any]:
    """``STATE_READS``' replies as ``state_from`` takes them: HGETALL inside a script answers a
    flat [field, value, ...] list, not a mapping."""
    recent_raw, bought, cart, consent, erased_at = replies
    return [recent_raw, bought, mapping(cart), consent, erased_at]


def state_from(replies: Sequence[Any], oldest: datetime) -> CustomerState:
    """The state from its reads (recent events, purchases, cart as a mapping, consent, erasure
    time or None); events before ``oldest`` dropped."""
    recent_raw, bought_raw, cart_raw, consent_raw, erased_at = replies
    recent = [e for e in decode_events(recent_raw) if e.timestamp is None or e.timestamp >= oldest]
    cart = {}
    for item, raw in cart_raw.items():
        try:
            cart[text(item)] = cart_line_decoder.decode(raw)
        except msgspec.DecodeError:
            log.warning("undecodable cart line skipped")
    return CustomerState(
        recent=recent,
        bought=frozenset(text(b) for b in bought_raw),
        cart=cart,
        consent=consent_decoder.decode(consent_raw) if consent_raw else Consent(),
        # A reply (Lua's false) only for the few erased customers: parsed for them alone.
        erased_at=erasure_time(erased_at) if erased_at else None,
    )


def _anonymous(event: Event) -> bool:
    """Whether the event was resolved to the anonymous customer of its unlinked identifier."""
    return event.identifier is not None and event.customer_id == event.identifier


def _order_key(event: Event, when: datetime) -> str:
    """The order of a purchase line: its session (basket) or else channel, store and time."""
    if event.session_id:
        return f"s:{event.session_id}"
    return f"t:{event.channel}:{event.store_id or ''}:{int(when.timestamp())}"


def decode_events(raw_events: list[bytes]) -> list[Event]:
    """Decode stored events, skipping (and logging) any that do not decode."""
    events = []
    for raw in raw_events:
        try:
            events.append(event_msgpack_decoder.decode(raw))
        except msgspec.DecodeError:
            # An entry written by an incompatible version: skip it rather than fail the request.
            log.warning("undecodable recent event for a customer; skipped")
    return events
