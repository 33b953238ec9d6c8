"""Erasure: remove a customer's state, identifiers and unexported events; record a suppression.

The suppression list (``keys.suppressed``) maps the SHA-256 of each erased id to the time of its
latest erasure, in epoch seconds on Redis's clock: the clock of the stream entry ids that say when
each event was recorded. Erasure removes the past, not the future: training drops a suppressed
customer's events up to that time and keeps later ones (training/suppression.py), and the service
treats the customer as a stranger only to a model whose training did not know of the erasure
(``CustomerState.stranger_to``). Entries written before the times were epoch seconds hold ISO
times; ``erasure_time`` reads both.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

import msgspec

from service.events import event_msgpack_decoder
from service.store.base import StoreBase, text, unavailable_on_redis_error

_STREAM_PAGE = 1000

# Record the erasure of ARGV[1] (the id's hash) at Redis's time, keeping the latest: a second
# erasure moves the time forward, so the events between the two are dropped too. An entry that is
# not a finite number (an ISO time of an older version) is replaced. Returns the time kept.
_SUPPRESS = """
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local held = redis.call('HGET', KEYS[1], ARGV[1])
local kept = tonumber(held or '')
if kept and kept >= tonumber(now) and kept < math.huge then return held end
redis.call('HSET', KEYS[1], ARGV[1], now)
return now
"""


def customer_hash(customer_id: str) -> str:
    """How a suppressed customer is recorded: the id's SHA-256, so the list holds no id."""
    return hashlib.sha256(customer_id.encode("utf-8")).hexdigest()


def erasure_time(raw: bytes | str) -> float:
    """The epoch second of a suppression entry's erasure: a number, or an older ISO time;
    ``inf`` (erased for good, the safe reading) for an entry that is neither."""
    value = text(raw)
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        return math.inf if math.isnan(number) else number
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return math.inf
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


class ErasureReport(msgspec.Struct, frozen=True, kw_only=True):
    """What an erasure removed."""

    customer_id: str
    keys_deleted: int
    identifiers_removed: int
    stream_events_deleted: int
    # The erasure's time on record (Redis's clock): this one's, or a later one's.
    erased_at: datetime


class Erasure(StoreBase):
    """Right to erasure; idempotent: erasing twice removes nothing more and fails nothing."""

    @unavailable_on_redis_error
    async def erase(self, customer_id: str) -> ErasureReport:
        """Delete everything Redis holds about ``customer_id`` and suppress it for training."""
        keys = self.keys
        identifiers = [text(i) for i in await self.client.smembers(keys.identifiers(customer_id))]
        owned = [
            i
            for i, owner in zip(
                identifiers,
                await self.client.mget([keys.identifier(i) for i in identifiers])
                if identifiers
                else [],
                strict=True,
            )
            if owner is not None and text(owner) == customer_id
        ]
        names = {customer_id, *identifiers}
        # Exactly the keys of these customers, never a pattern: ids may hold "}" or glob
        # characters, so "reco:{c:ann}:*" also matches customer "ann}:x"'s keys, and a customer
        # "*" would match everyone's. ``customer_keys`` lists every kind the service writes.
        doomed = {k for name in names for k in keys.customer_keys(name)}
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*doomed)
        if owned:
            pipe.delete(*[keys.identifier(i) for i in owned])
        pipe.eval(_SUPPRESS, 1, keys.suppressed, customer_hash(customer_id))
        replies = await pipe.execute()
        deleted = replies[0]
        events = await self._delete_stream_events(names)
        return ErasureReport(
            customer_id=customer_id,
            keys_deleted=int(deleted),
            identifiers_removed=len(owned),
            stream_events_deleted=events,
            erased_at=datetime.fromtimestamp(erasure_time(replies[-1]), UTC),
        )

    async def _delete_stream_events(self, names: set[str]) -> int:
        """XDEL the customer's events not yet exported: those recorded for ``names`` (the
        customer and their identifiers' anonymous customers). An event is recorded for its
        resolved ``customer_id``; another customer's event that merely carries one of the
        identifiers is that customer's, and stays."""
        deleted, start = 0, "-"
        while True:
            page = await self.client.xrange(self.keys.events, min=start, count=_STREAM_PAGE)
            if not page:
                return deleted
            doomed = []
            for entry_id, fields in page:
                try:
                    event = event_msgpack_decoder.decode(fields[b"e"])
                except (msgspec.DecodeError, KeyError):
                    continue
                if event.customer_id in names:
                    doomed.append(entry_id)
            if doomed:
                deleted += await self.client.xdel(self.keys.events, *doomed)
            start = "(" + text(page[-1][0])
