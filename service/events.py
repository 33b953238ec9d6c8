"""CONTRACT: cross-channel events, items and customers, shared by the service and training.

Schema evolution follows msgspec's rule: every new field gets a default and no existing field is
ever retyped, so old and new producers, the service and the training job can read each other.
Event types and channels are closed sets: a typo fails at decode time with the path at fault.
Deploy readers that accept a new type or channel before producers send it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, get_args

import msgspec

from service.errors import InvalidRequest

EventType = Literal[
    "view",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "return",
    "wishlist",
    "email_open",
    "email_click",
    "offer_redeemed",
    "impression",
    "click",
    "rating",
    "store_visit",
    "offer_presented",
]
Channel = Literal["web", "app", "email", "store", "tablet", "social", "support", "unknown"]

EVENT_TYPES: tuple[str, ...] = get_args(EventType)
CHANNELS: tuple[str, ...] = get_args(Channel)
# Events about no particular item: everything else must name one.
ITEMLESS_EVENT_TYPES = frozenset(
    {"email_open", "email_click", "offer_redeemed", "store_visit", "offer_presented"}
)
# After one of these the customer has the item: it is not recommended to them again.
CONSUMED_EVENT_TYPES = frozenset({"purchase", "rating"})
# How much one event says about liking its item, until training learns better weights. Events
# about no item, and those that say nothing positive (removing, returning), weigh 0.
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "add_to_cart": 3.0,
    "remove_from_cart": 0.0,
    "purchase": 5.0,
    "return": 0.0,
    "wishlist": 2.0,
    "email_open": 0.0,
    "email_click": 1.5,
    "offer_redeemed": 4.0,
    "impression": 0.0,
    "click": 1.0,
    "rating": 1.0,
    "store_visit": 0.0,
    "offer_presented": 0.0,
}

# Identifiers are opaque strings: no control characters, bounded length.
# ``(?!\n)``: a pattern's ``$`` also matches before a final newline, so ``"u1\n"`` passed.
Id = Annotated[
    str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+(?!\n)$")
]
UtcTimestamp = Annotated[datetime, msgspec.Meta(tz=True)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
# Upper bounds far above any real basket that keep every figure computed from events finite:
# spend (price x quantity, at most 1e21) is summed per customer in Redis, which refuses an
# infinite sum only after the event has been written. The bounds also refuse NaN.
MAX_QUANTITY = 1e9
MAX_PRICE = 1e12
MAX_ABS_RATING = 1e6
Quantity = Annotated[float, msgspec.Meta(ge=0, le=MAX_QUANTITY)]
Price = Annotated[float, msgspec.Meta(ge=0, le=MAX_PRICE)]
Rating = Annotated[float, msgspec.Meta(ge=-MAX_ABS_RATING, le=MAX_ABS_RATING)]
# Where a recommendation is shown ("home", "cart", "product", "email-footer"): a short lower-case
# token, so a value that reaches a counter, a log line or an experiment's targeting is never
# free text. Recommendation routes take it as ``placement``; service/placements.py counts it.
# ``(?!\n)``: Python's ``$`` also matches before a final newline, which would let "cart\n" in.
PLACEMENT_PATTERN = r"^[a-z][a-z0-9_-]{0,31}(?!\n)$"
PLACEMENT_RULE = "a lower-case letter, then up to 31 lower-case letters, digits, '_' or '-'"
Placement = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=PLACEMENT_PATTERN)]

# The times a live event may carry (POST /v1/events): none before the Unix epoch, and none later
# than the receiving clock plus a day of skew between the producer's clock and ours. A time out
# of this range would stay a customer's first or last activity for good. The training loader
# holds event files to the same bounds (their rows outside them are bad rows).
EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)
CLOCK_SKEW = timedelta(hours=24)


def timestamp_problem(when: datetime, now: datetime) -> str | None:
    """Why an event received at ``now`` may not have happened at ``when``; None when it may."""
    if when < EARLIEST_EVENT_TIME:
        return f"must not be before {EARLIEST_EVENT_TIME:%Y-%m-%dT%H:%M:%SZ}"
    if when > now + CLOCK_SKEW:
        return f"must not be more than {CLOCK_SKEW.total_seconds() / 3600:g} hours in the future"
    return None


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Something a customer did, on one channel, at one time.

    An event names the customer by ``customer_id`` or by any ``identifier`` (``cookie:…``,
    ``email:…``): the service resolves the identifier to the linked customer, and an identifier
    linked to no one yet stands for an anonymous customer of its own until it is linked.
    ``timestamp`` may be left out on ``POST /v1/events``: the service stamps the time it received
    the event. Batch files always carry it.
    """

    customer_id: Id | None = None
    identifier: Id | None = None
    event_type: EventType
    channel: Channel
    item_id: Id | None = None
    timestamp: UtcTimestamp | None = None
    quantity: Quantity = 1.0
    price: Price | None = None
    store_id: Id | None = None
    session_id: Id | None = None
    # The recommendation response that led to this event, for attribution.
    request_id: Id | None = None
    rating: Rating | None = None
    # Idempotency key: a retried event with the same id is not counted twice.
    event_id: Id | None = None
    # The offer an offer_presented / offer_redeemed event is about.
    offer_id: Id | None = None
    # Where the recommendation this impression or click is about was shown: the ``placement``
    # its answer echoed. Counted per placement, and needed by experiments limited to placements.
    placement: Placement | None = None

    def __post_init__(self) -> None:
        # msgspec turns a ValueError raised here into a ValidationError with the path at fault.
        if self.customer_id is None and self.identifier is None:
            raise ValueError("an event needs a `customer_id` or an `identifier`")
        if self.item_id is None and self.event_type not in ITEMLESS_EVENT_TYPES:
            raise ValueError(f"`item_id` is required for event_type {self.event_type!r}")


class Item(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A sellable product, as the catalogue exports describe it."""

    item_id: Id
    title: str | None = None
    category: str | None = None
    brand: str | None = None
    price: NonNegative | None = None


class Customer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A customer and whatever attributes the CRM export carries (age band, country...)."""

    customer_id: Id
    attributes: dict[str, str] = {}


# Encoders and decoders are built once and reused (msgspec's performance advice).
msgpack_encoder = msgspec.msgpack.Encoder()
event_msgpack_decoder = msgspec.msgpack.Decoder(Event)
event_json_decoder = msgspec.json.Decoder(Event)


class InvalidEvent(InvalidRequest):
    """An event that breaks the contract, built in code rather than decoded (so never checked)."""

    slug = "invalid-event"
    title = "Invalid event"


def stream_payload(event: Event) -> bytes:
    """The bytes of ``event`` to write to the stream, once it is certain they decode again.

    An ``Event(...)`` built in Python skips the contract's constraints; written anyway, the stream's
    readers (the exporter, erasure) would have to drop an acknowledged event. Decoding costs about
    a microsecond, next to a round trip to Redis.

    Raises:
        InvalidEvent: naming the field at fault; the caller writes nothing.
    """
    payload = msgpack_encoder.encode(event)
    try:
        event_msgpack_decoder.decode(payload)
    except msgspec.ValidationError as e:
        raise InvalidEvent(f"the event cannot be stored: {e}") from e
    return payload
