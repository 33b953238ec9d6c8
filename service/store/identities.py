"""The identity graph in Redis: identifiers -> one customer id, and merging anonymous history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from service.errors import IdentifierConflict
from service.events import msgpack_encoder
from service.store.base import StoreBase, text, unavailable_on_redis_error
from service.store.customers import decode_events

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

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
        """Move the anonymous customer's state into ``customer_id``; returns the events moved."""
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(keys.recent(anonymous), 0, -1)
        pipe.lrange(keys.recent(customer_id), 0, -1)
        pipe.smembers(keys.bought(anonymous))
        pipe.hgetall(keys.cart(anonymous))
        anon_recent, own_recent, anon_bought, anon_cart = await pipe.execute()
        if not (anon_recent or anon_bought or anon_cart):
            return 0
        events = decode_events(anon_recent) + decode_events(own_recent)
        events.sort(key=lambda e: e.timestamp or _EPOCH, reverse=True)
        # The merged events now belong to the customer.
        merged = [
            msgspec.structs.replace(e, customer_id=customer_id) for e in events[: self.recent_max]
        ]
        write = self.client.pipeline(transaction=True)
        recent = keys.recent(customer_id)
        write.delete(recent)
        if merged:
            write.rpush(recent, *[msgpack_encoder.encode(e) for e in merged])
            write.expire(recent, self.recent_ttl_seconds)
        if anon_bought:
            write.sadd(keys.bought(customer_id), *anon_bought)
            write.expire(keys.bought(customer_id), self.recent_ttl_seconds)
        if anon_cart:
            write.hset(keys.cart(customer_id), mapping=anon_cart)
            write.expire(keys.cart(customer_id), self.recent_ttl_seconds)
        write.delete(keys.recent(anonymous), keys.bought(anonymous), keys.cart(anonymous))
        await write.execute()
        return len(anon_recent)
