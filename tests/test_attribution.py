"""The attribution rule: last touch of the item, within the touch channel's window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.attribution import Touch, attribute, parse_windows

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
WINDOWS = parse_windows("web=3,email=1")


def touch(item: str, channel: str, at: datetime, kind: str = "impression", rid: str = "r") -> Touch:
    return Touch(item_id=item, channel=channel, ts=at.timestamp(), kind=kind, request_id=rid)


def test_a_web_impression_gets_a_store_purchase_two_days_later() -> None:
    touches = [touch("i1", "web", T0)]
    assert attribute("i1", T0 + timedelta(days=2), touches, WINDOWS) == touches[0]


def test_outside_the_channel_window_nothing_is_attributed() -> None:
    touches = [touch("i1", "web", T0), touch("i1", "email", T0 + timedelta(days=1))]
    assert attribute("i1", T0 + timedelta(days=3, seconds=1), touches, WINDOWS) is None


def test_the_last_touch_within_its_window_wins() -> None:
    first = touch("i1", "web", T0, rid="a")
    last = touch("i1", "email", T0 + timedelta(hours=30), kind="click", rid="b")
    other_item = touch("i2", "web", T0 + timedelta(hours=40))
    later = touch("i1", "web", T0 + timedelta(days=5))  # after the purchase: never counts
    found = attribute("i1", T0 + timedelta(hours=48), [first, last, other_item, later], WINDOWS)
    assert found == last


def test_an_expired_later_touch_falls_back_to_an_earlier_one_in_its_window() -> None:
    web = touch("i1", "web", T0, rid="web")
    email = touch("i1", "email", T0 + timedelta(hours=1), rid="email")
    found = attribute("i1", T0 + timedelta(days=2), [email, web], WINDOWS)
    assert found == web  # email's 1-day window is over, web's 3-day one is not


def test_windows_default_and_reject_unknown_channels() -> None:
    assert parse_windows(None)["web"] == timedelta(days=7)
    assert parse_windows("store=2")["store"] == timedelta(days=2)
    with pytest.raises(ValueError, match="channel"):
        parse_windows("moon=3")
