"""The contact history and redemptions hold under late events, duplicates and concurrency.

Over HTTP against a real Redis and the checkerboard model (see tests/test_offers.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from litestar.testing import TestClient

from tests.test_offers import consent, offer_ids, offers, put_offer
from tests.test_omnichannel import event, post


def redeemed(client: TestClient, customer: str, offer_id: str, at: datetime) -> None:
    post(client, event(customer, None, "offer_redeemed", "store", offer_id=offer_id,
                       timestamp=at.isoformat()))  # fmt: skip


def test_a_late_older_redemption_does_not_shorten_the_block(client: TestClient) -> None:
    """Redeemed ten days ago, then an event about a redemption 400 days ago arrives: the offer
    stays blocked (redeemed_block_days 365), whatever the offsets the times are written in."""
    now = datetime.now(UTC)
    consent(client, "u2")
    put_offer(client, "rd2")
    put_offer(client, "rd3")
    redeemed(client, "u2", "rd2", now - timedelta(days=10))
    redeemed(client, "u2", "rd2", now - timedelta(days=400))
    # The newer one in +02:00, the older one in UTC: still the newer kept.
    plus_two = timezone(timedelta(hours=2))
    redeemed(client, "u2", "rd3", (now - timedelta(days=10)).astimezone(plus_two))
    redeemed(client, "u2", "rd3", now - timedelta(days=400))
    assert offer_ids(offers(client, "u2", record="false")) == []
    # And a later redemption still replaces an earlier one.
    put_offer(client, "rd4")
    redeemed(client, "u2", "rd4", now - timedelta(days=400))
    assert offer_ids(offers(client, "u2", record="false")) == ["rd4"]
    redeemed(client, "u2", "rd4", now - timedelta(days=1))
    assert offer_ids(offers(client, "u2", record="false")) == []
