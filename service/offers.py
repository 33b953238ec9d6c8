"""Offers and the rules that govern them: the catalogue's Structs, validation, and rules as data.

Pure: no Redis, no HTTP. An ``Offer`` is what a retailer promotes; ``OfferRules`` is the
configuration (lifetime value bands, segments, journey triggers, suppression) that decides who
gets which offer; both are stored as JSON and changed at run time. ``decode_offer`` and
``decode_rules`` reject invalid input with ``InvalidOffer``, which names every field at fault.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal, TypeVar

import msgspec

from service.events import Channel, Id, UtcTimestamp

OfferKind = Literal["percent_off", "amount_off", "free_delivery", "bundle", "loyalty_points"]
Trigger = Literal["abandoned_cart", "win_back"]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
T = TypeVar("T")

# Upper bounds of every duration and figure of offers and rules: far past any campaign, and far
# inside what date arithmetic holds. Unbounded, a duration taken from now (740,000 days) made
# every offers request of a customer a 500 and cut the export stream.
MAX_DAYS = 3650.0  # ten years
MAX_HOURS = MAX_DAYS * 24
MAX_MINUTES = MAX_HOURS * 60
MAX_MONEY = 1e9  # value, cost, amounts, band minimums, |min_expected_value|
MAX_PRIORITY = 1_000_000
MAX_CONTACTS = 1_000_000  # a cap's max
MAX_CAPS = 10  # caps per offer
MAX_WIN_BACK_FACTOR = 100.0
Days = Annotated[float, msgspec.Meta(ge=0, le=MAX_DAYS)]
PositiveDays = Annotated[float, msgspec.Meta(gt=0, le=MAX_DAYS)]
Hours = Annotated[float, msgspec.Meta(ge=0, le=MAX_HOURS)]
Minutes = Annotated[float, msgspec.Meta(ge=0, le=MAX_MINUTES)]
Money = Annotated[float, msgspec.Meta(ge=0, le=MAX_MONEY)]


class InvalidOffer(ValueError):
    """An offer or rules document that breaks the contract; ``errors`` are (field, message)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        """Keep every (JSON path, message) pair."""
        super().__init__("; ".join(f"{f}: {m}" for f, m in errors))
        self.errors = errors


class Target(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the offer is about: items and/or categories (empty: the whole basket)."""

    items: list[Id] = msgspec.field(default_factory=list)
    categories: list[Name] = msgspec.field(default_factory=list)


class Eligibility(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Rules on the customer; every one given must hold (an empty list holds for everyone)."""

    segments: list[Name] = msgspec.field(default_factory=list)  # any of these
    min_days_since_purchase: Days | None = None
    max_days_since_purchase: Days | None = None
    ltv_bands: list[Name] = msgspec.field(default_factory=list)  # any of these
    bought_categories: list[Name] = msgspec.field(default_factory=list)  # bought in any of these
    not_bought_categories: list[Name] = msgspec.field(default_factory=list)  # in none of these
    # Only made when this journey trigger fires for the customer (see OfferRules).
    trigger: Trigger | None = None


class ContactCap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """At most ``max`` presentations per customer within ``period_days``, over all channels."""

    max: Annotated[int, msgspec.Meta(ge=1, le=MAX_CONTACTS)]
    period_days: PositiveDays


class Offer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One promotion in the catalogue.

    ``amount`` is the percentage (``percent_off``), the money off (``amount_off``) or the points
    (``loyalty_points``). ``value`` is what a redemption is worth to the retailer (margin or
    expected uplift) and ``cost`` what making it costs; scoring is affinity x value - cost.
    """

    offer_id: Id
    title: Name
    kind: OfferKind
    amount: Money | None = None
    target: Target = msgspec.field(default_factory=Target)
    valid_from: UtcTimestamp | None = None
    valid_until: UtcTimestamp | None = None
    channels: list[Channel]
    eligibility: Eligibility = msgspec.field(default_factory=Eligibility)
    value: Money
    cost: Money = 0.0
    priority: Annotated[int, msgspec.Meta(ge=-MAX_PRIORITY, le=MAX_PRIORITY)] = 0
    caps: Annotated[list[ContactCap], msgspec.Meta(max_length=MAX_CAPS)] = msgspec.field(
        default_factory=list
    )

    def valid_at(self, now: datetime) -> bool:
        """True when ``now`` is inside the validity window."""
        return (self.valid_from is None or self.valid_from <= now) and (
            self.valid_until is None or now < self.valid_until
        )


class LtvBand(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A lifetime value band: customers whose value is at least ``min_value`` (highest wins)."""

    name: Name
    min_value: Money


class SegmentRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A named segment; a customer is in every segment whose conditions all hold."""

    name: Name
    min_purchases: Annotated[int, msgspec.Meta(ge=0)] | None = None
    max_purchases: Annotated[int, msgspec.Meta(ge=0)] | None = None
    ltv_bands: list[Name] = msgspec.field(default_factory=list)
    min_days_since_purchase: Days | None = None
    max_days_since_purchase: Days | None = None
    # True: only customers in a moment of silence; False: only those who are not.
    quiet: bool | None = None


class CartTrigger(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An item left in the cart (any channel) for ``after_minutes`` without being bought.

    On ``channels`` a matching ``abandoned_cart`` offer becomes the top candidate.
    """

    after_minutes: Minutes = 60.0
    channels: list[Channel] = msgspec.field(default_factory=lambda: ["email", "app"])


class WinBackTrigger(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A moment of silence: no activity for longer than ``factor`` x the usual purchase interval.

    The usual interval is the mean gap between the customer's purchase days; with fewer than two
    known purchase days it is ``default_interval_days``; it is never below ``min_interval_days``.
    """

    factor: Annotated[float, msgspec.Meta(gt=0, le=MAX_WIN_BACK_FACTOR)] = 1.0
    default_interval_days: PositiveDays = 30.0
    min_interval_days: Days = 7.0


def _default_bands() -> list[LtvBand]:
    return [
        LtvBand(name="low", min_value=0),
        LtvBand(name="mid", min_value=100),
        LtvBand(name="high", min_value=500),
    ]


def _default_segments() -> list[SegmentRule]:
    return [
        SegmentRule(name="new", max_purchases=0),
        SegmentRule(name="active", min_purchases=1, quiet=False),
        SegmentRule(name="quiet", min_purchases=1, quiet=True),
        SegmentRule(name="vip", ltv_bands=["high"]),
    ]


class OfferRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How offers are chosen; stored in Redis (``PUT /v1/offer-rules``), these are the defaults."""

    ltv_bands: list[LtvBand] = msgspec.field(default_factory=_default_bands)
    segments: list[SegmentRule] = msgspec.field(default_factory=_default_segments)
    abandoned_cart: CartTrigger = msgspec.field(default_factory=CartTrigger)
    win_back: WinBackTrigger = msgspec.field(default_factory=WinBackTrigger)
    # An offer presented on another channel this recently is not presented again elsewhere.
    suppress_elsewhere_hours: Hours = 24.0
    # A redeemed offer is not offered again to the same customer for this long.
    redeemed_block_days: Days = 365.0
    # Contacts older than this are forgotten (no cap may look further back).
    contact_history_days: PositiveDays = 90.0
    # Affinity used when the model cannot place the customer (unknown, no personalisation).
    default_affinity: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    # Offers whose expected value is not above this are not made (excepted: win-back offers,
    # and abandoned-cart offers on the cart trigger's channels).
    min_expected_value: Annotated[float, msgspec.Meta(ge=-MAX_MONEY, le=MAX_MONEY)] = 0.0


DEFAULT_RULES = OfferRules()

_PATH = re.compile(r"^(?P<message>.*) - at `(?P<path>\$[^`]*)`$", re.DOTALL)
_json = msgspec.json.Decoder()


def decode_offer(raw: bytes, offer_id: str) -> Offer:
    """The offer in JSON ``raw``, stored under ``offer_id`` (the body may omit its id).

    Raises:
        InvalidOffer: naming each field at fault (``$.channels[0]``, ``$.valid_until``).
    """
    body = _object(raw)
    if body.get("offer_id", offer_id) != offer_id:
        raise InvalidOffer([("$.offer_id", f"does not match the id in the path ({offer_id!r})")])
    offer = _convert({**body, "offer_id": offer_id}, Offer)
    if errors := check_offer(offer):
        raise InvalidOffer(errors)
    return offer


def decode_rules(raw: bytes) -> OfferRules:
    """The rules in JSON ``raw`` (missing parts take their defaults).

    Raises:
        InvalidOffer: naming each field at fault.
    """
    rules = _convert(_object(raw), OfferRules)
    names = [b.name for b in rules.ltv_bands]
    errors = [("$.ltv_bands", "band names must be unique")] if len(set(names)) != len(names) else []
    for i, seg in enumerate(rules.segments):
        errors += [
            (f"$.segments[{i}].ltv_bands", f"unknown band {b!r}")
            for b in seg.ltv_bands
            if b not in names
        ]
        errors += _ordered(f"$.segments[{i}]", seg.min_purchases, seg.max_purchases, "purchases")
        errors += _ordered(
            f"$.segments[{i}]",
            seg.min_days_since_purchase,
            seg.max_days_since_purchase,
            "days_since_purchase",
        )
    if errors:
        raise InvalidOffer(errors)
    return rules


def check_offer(offer: Offer) -> list[tuple[str, str]]:
    """The rules types cannot express, as (field, message) pairs; empty when the offer is valid."""
    errors: list[tuple[str, str]] = []
    targeted = bool(offer.target.items or offer.target.categories)
    if offer.kind == "percent_off" and not (offer.amount and offer.amount <= 100):
        errors.append(("$.amount", "percent_off needs an amount above 0 and at most 100"))
    if offer.kind in ("amount_off", "loyalty_points") and not offer.amount:
        errors.append(("$.amount", f"{offer.kind} needs an amount above 0"))
    if offer.kind in ("percent_off", "amount_off") and not targeted:
        errors.append(("$.target", f"{offer.kind} needs target items or categories"))
    if offer.kind == "bundle" and len(set(offer.target.items)) < 2:
        errors.append(("$.target.items", "a bundle needs at least two items"))
    if offer.valid_from and offer.valid_until and offer.valid_until <= offer.valid_from:
        errors.append(("$.valid_until", "must be after valid_from"))
    if not offer.channels:
        errors.append(("$.channels", "name at least one channel"))
    rules = offer.eligibility
    errors += _ordered(
        "$.eligibility",
        rules.min_days_since_purchase,
        rules.max_days_since_purchase,
        "days_since_purchase",
    )
    if both := set(rules.bought_categories) & set(rules.not_bought_categories):
        errors.append(("$.eligibility.not_bought_categories", f"contradicts {sorted(both)}"))
    return errors


def _ordered(where: str, low: float | None, high: float | None, what: str) -> list[tuple[str, str]]:
    if low is not None and high is not None and low > high:
        return [(f"{where}.max_{what}", f"must be at least min_{what} ({low})")]
    return []


def _object(raw: bytes) -> dict[str, object]:
    if not raw.strip():
        raise InvalidOffer([("$", "the request body is empty; expected a JSON object")])
    try:
        body = _json.decode(raw)
    except msgspec.DecodeError as e:
        raise InvalidOffer([("$", f"not valid JSON: {e}")]) from e
    if not isinstance(body, dict):
        raise InvalidOffer([("$", "expected a JSON object")])
    return body


def _convert(body: dict[str, object], kind: type[T]) -> T:
    try:
        return msgspec.convert(body, kind)
    except msgspec.ValidationError as e:
        m = _PATH.match(str(e))
        raise InvalidOffer([(m["path"], m["message"]) if m else ("$", str(e))]) from e
