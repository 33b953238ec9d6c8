"""The identity graph in Redis: identifiers -> one customer id, and merging anonymous history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property

import msgspec
from redis.commands.core import AsyncScript

from service.errors import IdentifierConflict, StoreUnavailable
from service.events import event_msgpack_decoder, msgpack_encoder
from service.state import Consent, consent_decoder, linked_consent
from service.store.base import StoreBase, text, unavailable_on_redis_error
from service.store.offers import KEEP_LATEST_REDEMPTION

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Consent changed between the read and the merge this many times in a row: give up (a 503).
_MERGE_TRIES = 5

# Check every identifier first and link none if one belongs to someone else: never a silent
# re-link, never half a link. KEYS = identifier keys; ARGV[1] = customer id, ARGV[2] = ids set key,
# ARGV[3..] = the identifiers. Returns the first conflicting identifier and its owner, or {}.
_LINK = """
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner and owner ~= ARGV[1] then return {ARGV[i + 2], owner} end
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1])
  redis.call('SADD', ARGV[2], ARGV[i + 2])
end
return {}
"""

# Merge an anonymous customer's state into a customer's, atomically. KEYS[1..6] = the anonymous
# side's recent, bought, cart, stats, orders, consent; KEYS[7..12] = the customer's; KEYS[13..14]
# = the anonymous side's offer contacts and redemptions, KEYS[15..16] = the customer's. ARGV =
# recent max, TTL, both consents as read ("" = none), the merged consent ("" = leave it), then per
# event read: as stored, as the customer's, its time. Returns the anonymous events moved, or -1
# when a consent changed since it was read (nothing written).
_MERGE = (
    KEEP_LATEST_REDEMPTION
    + """
if (redis.call('GET', KEYS[6]) or '') ~= ARGV[3] or (redis.call('GET', KEYS[12]) or '') ~= ARGV[4]
then return -1 end
local function keep(h, field, v, better)
  local cur = tonumber(redis.call('HGET', h, field))
  if not cur or better(v, cur) then redis.call('HSET', h, field, v) end
end
local function less(a, b) return a < b end
local function more(a, b) return a > b end
local given = {}
for i = 6, #ARGV, 3 do given[ARGV[i]] = {ARGV[i + 1], tonumber(ARGV[i + 2])} end
local anon = redis.call('LRANGE', KEYS[1], 0, -1)
if #anon > 0 then
  local events = {}
  for _, list in ipairs({redis.call('LRANGE', KEYS[7], 0, -1), anon}) do
    for _, raw in ipairs(list) do
      local g = given[raw] or {raw, math.huge}  -- recorded after the read: the newest
      events[#events + 1] = {g[1], g[2], #events}
    end
  end
  table.sort(events, function(a, b)
    if a[2] ~= b[2] then return a[2] > b[2] end
    return a[3] < b[3]
  end)
  redis.call('DEL', KEYS[7])
  for i = 1, math.min(#events, tonumber(ARGV[1])) do redis.call('RPUSH', KEYS[7], events[i][1]) end
  redis.call('EXPIRE', KEYS[7], ARGV[2])
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SUNIONSTORE', KEYS[8], KEYS[8], KEYS[2])
  redis.call('EXPIRE', KEYS[8], ARGV[2])
end
local cart = redis.call('HGETALL', KEYS[3])
if #cart > 0 then
  redis.call('HSET', KEYS[9], unpack(cart))
  redis.call('EXPIRE', KEYS[9], ARGV[2])
end
-- Lifetime stats (customers.py's _RECORD): times keep the earliest first_* and the latest
-- last_*, counts and sums add up.
local stats = redis.call('HGETALL', KEYS[4])
for i = 1, #stats, 2 do
  local field, v = stats[i], stats[i + 1]
  if field:sub(1, 6) == 'first_' then keep(KEYS[10], field, tonumber(v), less)
  elseif field:sub(1, 5) == 'last_' then keep(KEYS[10], field, tonumber(v), more)
  elseif field:sub(1, 3) == 'ev:' or field:sub(1, 7) == 'orders:' then
    redis.call('HINCRBY', KEYS[10], field, v)
  else redis.call('HINCRBYFLOAT', KEYS[10], field, v) end
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('SUNIONSTORE', KEYS[11], KEYS[11], KEYS[5])
end
if ARGV[5] ~= '' then redis.call('SET', KEYS[12], ARGV[5]) end
-- Offers presented to the identifier count against the customer's caps, and its redemptions
-- block as theirs (the latest per offer); each kept as long as the longer-lived side.
local function longer_ttl(a, b)
  return math.max(redis.call('PTTL', a), redis.call('PTTL', b))
end
if redis.call('EXISTS', KEYS[13]) == 1 then
  local ttl = longer_ttl(KEYS[13], KEYS[15])
  redis.call('ZUNIONSTORE', KEYS[15], 2, KEYS[15], KEYS[13], 'AGGREGATE', 'MAX')
  if ttl > 0 then redis.call('PEXPIRE', KEYS[15], ttl) end
end
local redeemed = redis.call('HGETALL', KEYS[14])
if #redeemed > 0 then
  local ttl = longer_ttl(KEYS[14], KEYS[16])
  for i = 1, #redeemed, 2 do keep_latest_redemption(KEYS[16], redeemed[i], redeemed[i + 1]) end
  if ttl > 0 then redis.call('PEXPIRE', KEYS[16], ttl) end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[13], KEYS[14])
return #anon
"""
)


class LinkResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a link did: the identifiers now linked and how many anonymous events moved over."""

    customer_id: str
    identifiers: list[str]
    merged_events: int


class IdentityGraph(StoreBase):
    """Identifiers resolve to customers; anonymous ids are customers of their own until linked."""

    @unavailable_on_redis_error
    async def resolve(self, identifiers: Sequence[str]) -> dict[str, str | None]:
        """The customer each (normalised) identifier is linked to, None where unlinked."""
        if not identifiers:
            return {}
        # On the shared connection, as the state read that follows: a storefront's anonymous
        # visitors (cookie identifiers) resolve on every request.
        owners = await self.pipelined.command(
            "MGET", *[self.keys.identifier(i) for i in identifiers]
        )
        return {
            i: (text(o) if o is not None else None)
            for i, o in zip(identifiers, owners, strict=True)
        }

    @unavailable_on_redis_error
    async def link(self, customer_id: str, identifiers: Sequence[str]) -> LinkResult:
        """Link (normalised) ``identifiers`` to ``customer_id`` and merge their anonymous history.

        Events sent earlier under an unlinked identifier were kept under that identifier as an
        anonymous customer; they move into the customer's recent events, purchases and cart. Later
        events under the identifier resolve to the customer.

        Raises:
            IdentifierConflict: an identifier is linked to another customer (nothing is linked).
        """
        keys = [self.keys.identifier(i) for i in identifiers]
        conflict = await self.client.eval(
            _LINK, len(keys), *keys, customer_id, self.keys.identifiers(customer_id), *identifiers
        )
        if conflict:
            identifier, owner = (text(v) for v in conflict)
            raise IdentifierConflict(
                f"{identifier} is already linked to customer {owner!r}; unlink or erase it first"
            )
        merged = 0
        for identifier in identifiers:
            if identifier != customer_id:
                merged += await self._merge(identifier, customer_id)
        return LinkResult(
            customer_id=customer_id, identifiers=list(identifiers), merged_events=merged
        )

    async def _merge(self, anonymous: str, customer_id: str) -> int:
        """Move the anonymous customer's state (and offer history) into ``customer_id``; returns
        the events moved.

        One script merges everything on the server, so an event recorded meanwhile (for the
        customer, or for the identifier before the link) is in the lists it merges: none is lost.
        Events are re-encoded and ordered by time here, as Lua cannot decode them; the script
        puts any event it was not given (recorded after this read) first, as the newest.
        Consent cannot be merged in Lua either: the script applies the merge only while both
        consents are still the ones read, and this tries again when one changed meanwhile.
        """
        k = self.keys
        parts = (k.recent, k.bought, k.cart, k.stats, k.orders, k.consent)  # _MERGE's order
        offers = (k.offer_contacts, k.offer_redemptions)
        keys = [
            part(c) for group in (parts, offers) for c in (anonymous, customer_id) for part in group
        ]
        for _ in range(_MERGE_TRIES):
            pipe = self.client.pipeline(transaction=False)
            pipe.lrange(k.recent(anonymous), 0, -1)
            pipe.lrange(k.recent(customer_id), 0, -1)
            pipe.get(k.consent(anonymous))
            pipe.get(k.consent(customer_id))
            anon_recent, own_recent, anon_consent, own_consent = await pipe.execute()
            args: list[bytes | str | int | float] = [
                self.recent_max,
                self.recent_ttl_seconds,
                anon_consent or b"",
                own_consent or b"",
                _merged_consent(anon_consent, own_consent),
            ]
            for raw in [*own_recent, *anon_recent]:
                args.extend(_placed(raw, customer_id))
            moved = int(await self._merge_script(keys=keys, args=args))
            if moved >= 0:
                return moved
        raise StoreUnavailable("the customer's consent kept changing during the link; try again")

    @cached_property
    def _merge_script(self) -> AsyncScript:
        return self.client.register_script(_MERGE)


def _placed(raw: bytes, customer_id: str) -> tuple[bytes, bytes, float]:
    """A stored event as ``_MERGE`` takes it: as stored, as the customer's, and its time."""
    try:
        event = event_msgpack_decoder.decode(raw)
    except msgspec.DecodeError:
        return raw, raw, 0.0  # kept, last: it is not ours to drop
    when = (event.timestamp or _EPOCH).timestamp()
    owned = msgspec.structs.replace(event, customer_id=customer_id)
    return raw, msgpack_encoder.encode(owned), when


def _merged_consent(anonymous: bytes | None, customer: bytes | None) -> bytes:
    """The customer's consent after the link, encoded; empty when the anonymous side has none."""
    if anonymous is None:
        return b""
    own = consent_decoder.decode(customer) if customer else Consent()
    return msgpack_encoder.encode(linked_consent(consent_decoder.decode(anonymous), own))
