"""Offers in Redis: the catalogue, the rules, and one contact history per customer across channels.

Contacts live under the customer's hash tag (erasure removes them with the rest): a sorted set of
``offer id, channel, time`` scored by time, trimmed to the rules' history window. Redemptions are
a hash offer id -> time. Caps and suppression read both in the same round trip as the state,
and are checked again, atomically, as the contacts are written: the script gets every eligible
offer, best first, and presents the first ones still allowed, so an offer a concurrent request
took gives way to the next one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property

import msgspec
from redis.commands.core import AsyncScript

from service.events import Event
from service.offer_facts import Contact, OfferHistory
from service.offers import DEFAULT_RULES, MAX_DAYS, ContactCap, Offer, OfferRules
from service.state import CustomerState
from service.store.base import StoreBase, mapping, text, unavailable_on_redis_error
from service.store.customers import (
    STATE_PARTS,
    STATE_READS,
    script_replies,
    state_args,
    state_from,
    state_keys,
)

log = logging.getLogger(__name__)

_SEP = "\x1f"  # ids never hold control characters (events.Id), so this cannot clash
_NEXT = "\x1e"  # between candidates in _PRESENT's argument, likewise

# A customer's state (``STATE_READS``: ARGV[1] = -1, every recent event), then their contacts since
# ARGV[3] and their redemptions (KEYS[6], KEYS[7]): one reply per customer, where six commands
# cost the client six replies to read, each with a timer of its own (an offers request spent a
# third of its CPU in the client).
_READ_OFFER_STATE = f"""
return {{{STATE_READS},
        redis.call('ZREVRANGEBYSCORE', KEYS[6], '+inf', ARGV[3]), redis.call('HGETALL', KEYS[7])}}
"""
# Present offers to one customer (KEYS[1], the contacts) at time ARGV[1]: of the candidates, best
# first, the first ARGV[6] that pass the checks at the write are recorded, so that concurrent
# requests cannot all present an offer under a cap that each read as not reached, and an offer
# one of them took gives way to the next candidate instead of leaving its slot empty. ARGV[2] =
# the history window's start (older contacts are trimmed), ARGV[3] = the TTL (s), ARGV[4] = the
# channel, ARGV[5] = "shown elsewhere" since ('' = record without checking: staff presented it),
# ARGV[7] = a nonce for the members, ARGV[8] = the candidates, each its offer id followed for each
# of its caps by _SEP max _SEP period (s), joined by _NEXT: one argument, not one per candidate,
# which the client would encode each. Answers the positions (from 1) of those recorded.
_PRESENT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local check, channel, at, want = ARGV[5] ~= '', ARGV[4], tonumber(ARGV[1]), tonumber(ARGV[6])
local sep = string.char(31)  -- _SEP
local field = sep .. '([^' .. sep .. ']*)'
local shown = {}
if check then
  local raw = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '+inf', 'WITHSCORES')
  local member = '^([^' .. sep .. ']*)' .. field .. sep
  for i = 1, #raw, 2 do
    local offer, where = raw[i]:match(member)
    shown[#shown + 1] = {offer, where, tonumber(raw[i + 1])}
  end
end
local function allowed(offer, caps)
  local elsewhere = tonumber(ARGV[5])
  for _, s in ipairs(shown) do
    if s[1] == offer and s[2] ~= channel and s[3] > elsewhere then return false end
  end
  for max, period in caps:gmatch(field .. field) do
    local since, count = at - tonumber(period), 0
    for _, s in ipairs(shown) do
      if s[1] == offer and s[3] > since then count = count + 1 end
    end
    if count >= tonumber(max) then return false end
  end
  return true
end
local out, n = {}, 0
local nxt = string.char(30)  -- _NEXT
local candidate = '([^' .. sep .. nxt .. ']*)([^' .. nxt .. ']*)' .. nxt
for offer, caps in (ARGV[8] .. nxt):gmatch(candidate) do
  if #out >= want then break end
  n = n + 1
  if not check or allowed(offer, caps) then
    local member = table.concat({offer, channel, ARGV[1], ARGV[7] .. '.' .. n}, sep)
    redis.call('ZADD', KEYS[1], ARGV[1], member)
    shown[#shown + 1] = {offer, channel, at}
    out[#out + 1] = n
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return out
"""
# Lua: keep in hash ``h`` the latest redemption time of ``offer``: a late event about an older
# redemption must not shorten the block. Times are ``redemption_time``'s UTC ISO strings (older
# ones may lack the microseconds: '+' sorts before '.'), compared byte by byte because Lua's
# string < follows the server's collation locale.
KEEP_LATEST_REDEMPTION = """
local function later(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
local function keep_latest_redemption(h, offer, at)
  local cur = redis.call('HGET', h, offer)
  if not cur or later(at, cur) then redis.call('HSET', h, offer, at) end
end
"""
# Redemptions of one customer (KEYS[1]): ARGV[1] = TTL (s), then offer id and time pairs.
_RECORD_REDEMPTIONS = f"""{KEEP_LATEST_REDEMPTION}
for i = 2, #ARGV, 2 do keep_latest_redemption(KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return (#ARGV - 1) / 2
"""
_MAX_SPECS = 10_000
_REDEMPTIONS_TTL = int((MAX_DAYS + 1) * 86400)
_offer_decoder = msgspec.json.Decoder(Offer)
_rules_decoder = msgspec.json.Decoder(OfferRules)
_encoder = msgspec.json.Encoder()


class OfferStore(StoreBase):
    """The offer catalogue, the offer rules, contact history and redemptions."""

    # The catalogue as last read: (version, offers, rules).
    _kept_catalogue: tuple[int, list[Offer], OfferRules] | None = None

    @unavailable_on_redis_error
    async def put_offer(self, offer: Offer) -> bool:
        """Create or replace ``offer``; True when it is new."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.keys.offers, offer.offer_id, _encoder.encode(offer))
        pipe.incr(self.keys.offers_version)
        created, _ = await pipe.execute()
        return bool(created)

    @unavailable_on_redis_error
    async def get_offer(self, offer_id: str) -> Offer | None:
        """The offer stored as ``offer_id``, if any."""
        raw = await self.client.hget(self.keys.offers, offer_id)
        return None if raw is None else _offer_decoder.decode(raw)

    @unavailable_on_redis_error
    async def delete_offer(self, offer_id: str) -> bool:
        """Remove an offer; True when it existed. Its contact history stays (caps still count)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.keys.offers, offer_id)
        pipe.incr(self.keys.offers_version)
        deleted, _ = await pipe.execute()
        return bool(deleted)

    @unavailable_on_redis_error
    async def offer_catalogue(self) -> tuple[int, list[Offer], OfferRules]:
        """The catalogue's version, every offer (by id) and the rules.

        Every change bumps the version in the same transaction, so the offers and rules decoded
        for a version are kept (per store, so per worker) and only the version is read while it
        holds: one short read per offers request instead of the whole catalogue, decoded again.
        """
        k = self.keys
        version = int(await self.pipelined.command("GET", k.offers_version) or 0)
        kept = self._kept_catalogue
        if kept is None or kept[0] != version:
            # Read after the version: a change landing in between leaves an older version kept
            # with newer offers, which the next request finds stale and reads again.
            raw, rules = await self.pipelined.commands(
                [("HGETALL", k.offers), ("GET", k.offer_rules)]
            )
            offers = []
            for offer_id, body in sorted(mapping(raw).items()):
                try:
                    offers.append(_offer_decoder.decode(body))
                except msgspec.DecodeError:
                    log.warning("undecodable offer %r skipped", text(offer_id))
            decoded = _stored_rules(rules)
            kept = self._kept_catalogue = (version, offers, decoded)
        return kept[0], list(kept[1]), kept[2]

    @unavailable_on_redis_error
    async def set_offer_rules(self, rules: OfferRules) -> None:
        """Replace the rules (every replica reads them with the catalogue)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.keys.offer_rules, _encoder.encode(rules))
        pipe.incr(self.keys.offers_version)
        await pipe.execute()

    @cached_property
    def _read_offer_state(self) -> AsyncScript:
        return self.client.register_script(_READ_OFFER_STATE)

    @cached_property
    def _present_script(self) -> AsyncScript:
        return self.client.register_script(_PRESENT)

    @cached_property
    def _record_redemptions(self) -> AsyncScript:
        return self.client.register_script(_RECORD_REDEMPTIONS)

    @unavailable_on_redis_error
    async def offer_states(
        self, customer_ids: Sequence[str], rules: OfferRules, now: datetime
    ) -> list[tuple[CustomerState, OfferHistory]]:
        """State and offer history of each customer, all in one round trip."""
        oldest = (now - timedelta(days=rules.contact_history_days)).timestamp()
        k = self.keys
        calls = [
            (
                [*state_keys(k, c), k.offer_contacts(c), k.offer_redemptions(c)],
                [*state_args(c, -1), oldest],
            )
            for c in customer_ids
        ]
        replies = await self.pipelined.evalsha_many(self._read_offer_state, calls) if calls else []
        recent_oldest = now - timedelta(seconds=self.recent_ttl_seconds)
        return [
            (
                state_from(script_replies(reply[:STATE_PARTS]), recent_oldest),
                _history(reply[STATE_PARTS], mapping(reply[STATE_PARTS + 1])),
            )
            for reply in replies
        ]

    async def record_contacts(
        self,
        presented: Iterable[tuple[str, str]],
        channel: str,
        now: datetime,
        rules: OfferRules,
    ) -> int:
        """Record each (customer, offer) presented on ``channel`` at ``now``, unchecked (staff
        presented it); returns how many."""
        per_customer: dict[str, list[str]] = {}
        for customer_id, offer_id in presented:
            per_customer.setdefault(customer_id, []).append(offer_id)
        calls = [(c, ids, len(ids)) for c, ids in per_customer.items()]
        return sum(map(len, await self._present(calls, channel, now, rules, False)))

    async def present_within_caps(
        self,
        candidates: Sequence[tuple[str, Sequence[tuple[str, Sequence[ContactCap]]]]],
        k: int,
        channel: str,
        now: datetime,
        rules: OfferRules,
    ) -> list[list[int]]:
        """Present to each customer the first ``k`` of their candidates (offer id, its caps; best
        first) still under their caps and not shown on another channel, checked as they are
        written (one script per customer, all in one round trip); the positions of those
        recorded, per customer, in order.

        A candidate a concurrent request took meanwhile gives way to the next: pass more than
        ``k`` (every eligible offer) and the answer holds ``k`` while any remain.
        """
        specs = self._specs
        if len(specs) > _MAX_SPECS:
            specs.clear()  # offers replaced many times over; never grow without bound
        calls = []
        for customer_id, offers in candidates:
            encoded = []
            for offer_id, caps in offers:
                kept = specs.get(offer_id)
                if kept is None or kept[0] is not caps:
                    kept = specs[offer_id] = (caps, contact_spec(offer_id, caps))
                encoded.append(kept[1])
            calls.append((customer_id, encoded, k))
        return await self._present(calls, channel, now, rules, True)

    @cached_property
    def _specs(self) -> dict[str, tuple[Sequence[ContactCap], str]]:
        """Each offer's ``contact_spec``, with the caps it was made from: the catalogue's offers
        stay the same objects while it is unchanged, so each request looks its offers up instead
        of encoding them again (a microsecond each, for every eligible offer)."""
        return {}

    @unavailable_on_redis_error
    async def _present(
        self,
        calls: Sequence[tuple[str, Sequence[str], int]],
        channel: str,
        now: datetime,
        rules: OfferRules,
        check: bool,
    ) -> list[list[int]]:
        ttl = int(rules.contact_history_days * 86400) + 1
        horizon = (now - timedelta(days=rules.contact_history_days)).timestamp()
        elsewhere = (now - timedelta(hours=rules.suppress_elsewhere_hours)).timestamp()
        head = [now.timestamp(), horizon, ttl, channel, elsewhere if check else ""]
        scripts = [
            ([self.keys.offer_contacts(c)], [*head, want, uuid.uuid4().hex[:8], _NEXT.join(specs)])
            for c, specs, want in calls
            if specs and want > 0
        ]
        replies = iter(
            await self.pipelined.evalsha_many(self._present_script, scripts) if scripts else []
        )
        return [
            [n - 1 for n in next(replies)] if specs and want > 0 else [] for _, specs, want in calls
        ]

    @unavailable_on_redis_error
    async def record_redemptions(self, events: Sequence[Event]) -> int:
        """Remember ``offer_redeemed`` events that name an offer (``offer_id``); returns how many.

        Events must carry their resolved ``customer_id``. Kept as long as the longest
        ``redeemed_block_days`` the rules allow.
        """
        redeemed = [
            e for e in events if e.event_type == "offer_redeemed" and e.offer_id and e.customer_id
        ]
        if not redeemed:
            return 0
        pairs: dict[str, list[str]] = {}
        for e in redeemed:
            at = redemption_time(e.timestamp or datetime.now(UTC))
            pairs.setdefault(e.customer_id, []).extend((e.offer_id, at))  # type: ignore[arg-type]
        calls = [
            ([self.keys.offer_redemptions(c)], [_REDEMPTIONS_TTL, *added])
            for c, added in pairs.items()
        ]
        await self.pipelined.evalsha_many(self._record_redemptions, calls)
        return len(redeemed)


def contact_spec(offer_id: str, caps: Sequence[ContactCap]) -> str:
    """A candidate as ``_PRESENT`` reads it: the offer id, then each cap's max and period (s);
    the script takes each cap's start from the request's time."""
    if not caps:
        return offer_id
    return offer_id + "".join(f"{_SEP}{c.max}{_SEP}{c.period_days * 86400!r}" for c in caps)


def redemption_time(at: datetime) -> str:
    """``at`` as stored for a redemption: UTC, to the microsecond, so that strings sort as times."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _stored_rules(raw: bytes | None) -> OfferRules:
    """The stored rules; the defaults when none are stored, or when the stored ones break the
    contract (written before a bound existed): every request would fail on them otherwise."""
    if not raw:
        return DEFAULT_RULES
    try:
        return _rules_decoder.decode(raw)
    except msgspec.DecodeError as e:
        log.error("stored offer rules are invalid (%s); the defaults apply until replaced", e)
        return DEFAULT_RULES


def _history(contacts_raw: list[bytes], redeemed_raw: dict[bytes, bytes]) -> OfferHistory:
    contacts = []
    for raw in contacts_raw:
        parts = text(raw).split(_SEP)
        if len(parts) == 4:
            at = datetime.fromtimestamp(float(parts[2]), UTC)
            contacts.append(Contact(offer_id=parts[0], channel=parts[1], at=at))
    redeemed = {text(k): datetime.fromisoformat(text(v)) for k, v in redeemed_raw.items()}
    return OfferHistory(contacts=contacts, redeemed=redeemed)
