from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from service.events import (
    CHANNELS,
    EVENT_TYPES,
    Event,
    Item,
    event_json_decoder,
    event_msgpack_decoder,
    msgpack_encoder,
)

VALID = {
    "customer_id": "c1",
    "item_id": "i1",
    "event_type": "purchase",
    "channel": "store",
    "timestamp": "2026-11-01T10:00:00Z",
}


def decode(**changes: object) -> Event:
    body = {**VALID, **changes}
    return event_json_decoder.decode(
        msgspec.json.encode({k: v for k, v in body.items() if v != ...})
    )


def test_a_valid_event_decodes_with_defaults() -> None:
    event = decode()
    assert event.timestamp == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert event.quantity == 1.0
    assert event.price is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"event_type": "vieww"}, "Invalid enum value 'vieww' - at `$.event_type`"),
        ({"channel": "fax"}, "Invalid enum value 'fax' - at `$.channel`"),
        ({"customer_id": ""}, "Expected `str` of length >= 1 - at `$.customer_id`"),
        ({"customer_id": ...}, "an event needs a `customer_id` or an `identifier`"),
        ({"customer_id": 42}, "Expected `str | null`, got `int` - at `$.customer_id`"),
        ({"item_id": "a\nb"}, "Expected `str` matching regex"),
        ({"customer_id": "x" * 257}, "Expected `str` of length <= 256 - at `$.customer_id`"),
        ({"timestamp": "2026-11-01T10:00:00"}, "Expected `datetime` with a timezone component"),
        ({"timestamp": "yesterday"}, "Invalid RFC3339 encoded datetime - at `$.timestamp`"),
        ({"quantity": -1}, "Expected `float` >= 0.0 - at `$.quantity`"),
        ({"price": -0.5}, "Expected `float` >= 0.0 - at `$.price`"),
        # Bounded so that spend (price x quantity) stays finite: Redis refuses an infinite sum.
        ({"quantity": 1e308}, "Expected `float` <= 1000000000.0 - at `$.quantity`"),
        ({"price": 1e13}, "Expected `float` <= 1000000000000.0 - at `$.price`"),
        ({"rating": 1e300}, "Expected `float` <= 1000000.0 - at `$.rating`"),
        ({"rating": -1e300}, "Expected `float` >= -1000000.0 - at `$.rating`"),
        ({"item_id": ...}, "`item_id` is required for event_type 'purchase'"),
    ],
)
def test_invalid_events_are_rejected_naming_the_field(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(msgspec.ValidationError) as err:
        decode(**changes)
    assert message in str(err.value)


@pytest.mark.parametrize("event_type", ["email_open", "email_click", "offer_redeemed"])
def test_itemless_event_types_need_no_item(event_type: str) -> None:
    assert decode(event_type=event_type, item_id=...).item_id is None


def test_every_documented_type_and_channel_is_accepted() -> None:
    for event_type in EVENT_TYPES:
        assert decode(event_type=event_type).event_type == event_type
    for channel in CHANNELS:
        assert decode(channel=channel).channel == channel


def test_unknown_fields_are_ignored_so_newer_producers_do_not_break_older_readers() -> None:
    assert decode(loyalty_points=12).customer_id == "c1"


def test_events_round_trip_through_msgpack() -> None:
    event = decode(price=9.99, store_id="s1", quantity=2)
    assert event_msgpack_decoder.decode(msgpack_encoder.encode(event)) == event


def test_an_old_message_without_newer_fields_still_decodes() -> None:
    """Schema evolution: a message written before request_id/event_id existed decodes."""
    old = msgspec.msgpack.encode(
        {k: VALID[k] for k in ("customer_id", "item_id", "event_type", "channel")}
    )
    event = event_msgpack_decoder.decode(old)
    assert event.request_id is None
    assert event.event_id is None


@pytest.mark.parametrize("field", ["quantity", "price", "rating"])
def test_numbers_that_are_not_finite_never_decode(field: str) -> None:
    # JSON cannot carry NaN or infinity, but msgpack (the stream) and Python code can.
    for value in (float("nan"), float("inf")):
        with pytest.raises(msgspec.ValidationError, match=field):
            event_msgpack_decoder.decode(msgspec.msgpack.encode({**VALID, field: value}))


def test_items_validate_their_price() -> None:
    assert msgspec.convert({"item_id": "i1", "price": 3.5}, Item).price == 3.5
    with pytest.raises(msgspec.ValidationError, match="price"):
        msgspec.convert({"item_id": "i1", "price": -1}, Item)
