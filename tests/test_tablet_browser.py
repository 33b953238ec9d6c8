"""The tablet page in a real browser (headless Chromium via Playwright) against the running service.

Set ``TABLET_SCREENSHOT=docs/tablet-profile.png`` to refresh the README's screenshot.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, call, needs_chromium, running_service

TABLET_KEY = "tablet-browser-key"
ADMIN = "admin-browser-key"

pytestmark = [needs_chromium, pytest.mark.slow]


@pytest.fixture
def service(tmp_path: Path, redis_url: str, key_prefix: str, model_dir: Path) -> Iterator[str]:
    env = {
        "REDIS_URL": redis_url,
        "RECO_KEY_PREFIX": key_prefix,
        "MODEL_DIR": str(model_dir),
        "API_KEYS": f"{TABLET_KEY}=customers+offers,{ADMIN}=admin+events+customers+offers",
        "RECO_STOCK_REFRESH_SECONDS": "0",
        "LOG_LEVEL": "WARNING",
    }
    with running_service(env, tmp_path) as base:
        events = [
            {
                "customer_id": "u2",
                "item_id": item,
                "event_type": "purchase",
                "channel": channel,
                "price": price,
                "session_id": session,
                "store_id": "s1" if channel == "store" else None,
            }
            for item, channel, price, session in (
                ("i04", "web", 19.99, "w1"),
                ("i06", "store", 35.0, "r1"),
                ("i08", "app", 12.5, "a1"),
            )
        ]
        call(
            base,
            "POST",
            "/v1/events",
            ADMIN,
            [{k: v for k, v in e.items() if v is not None} for e in events],
        )
        call(
            base,
            "POST",
            "/v1/identities/link",
            ADMIN,
            {"customer_id": "u2", "identifiers": ["loyalty:L0000042"]},
        )
        stock = [{"item_id": i, "stores": {"s1": True}} for i in ("i10", "i12", "i14", "i03")]
        call(base, "PUT", "/v1/inventory", ADMIN, {"items": stock})
        offer = {
            "title": "15% off everything even",
            "kind": "percent_off",
            "amount": 15,
            "target": {"categories": ["even"]},
            "channels": ["tablet", "email"],
            "value": 12.0,
        }
        call(base, "PUT", "/v1/offers/even-15", ADMIN, offer)
        consent = {"marketing": {"tablet": True, "email": True}}
        call(base, "PUT", "/v1/customers/u2/consent", ADMIN, consent)
        yield base


def test_staff_find_a_customer_and_see_the_profile(service: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{service}/tablet/")
        page.fill("#key", TABLET_KEY)
        page.click("#key-form button")
        page.fill("#store-id", "s1")
        page.dispatch_event("#store-id", "change")
        # An unknown card gets a clear message and shows no profile.
        page.fill("#query", "L999")
        page.click("#search-button")
        expect(page.locator("#message")).to_contain_text("No customer found")
        expect(page.locator("#profile")).to_be_hidden()
        # The customer's card, typed loosely.
        page.fill("#query", " l000 0042")
        page.click("#search-button")
        expect(page.locator("#profile")).to_be_visible()
        expect(page.locator("#customer-id")).to_have_text("u2")
        expect(page.locator("#orders")).to_have_text("3")
        expect(page.locator("#churn")).to_be_hidden()  # active today: no moment of silence
        expect(
            page.locator("#channel-chart svg path, #channel-chart svg circle").first
        ).to_be_visible()
        expect(page.locator("#spend-chart svg rect").first).to_be_visible()
        cards = page.locator("#recommendations li")
        expect(cards.first).to_be_visible()
        shown = {cards.nth(i).locator("strong").inner_text() for i in range(cards.count())}
        assert shown <= {"i10", "i12", "i14", "i03"}  # only what store s1 has in stock
        expect(page.locator("#offer")).to_contain_text("15% off everything even")
        shot = Path(os.environ.get("TABLET_SCREENSHOT") or tmp_path / "tablet.png")
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        # Before the presentation email may make the offer; after it, email does not repeat it.
        email = "/v1/customers/u2/offers?channel=email&record=false"
        assert [o["offer_id"] for o in call(service, "GET", email, ADMIN)["offers"]] == ["even-15"]
        page.click("#presented")
        expect(page.locator("#presented-note")).to_be_visible()
        assert call(service, "GET", email, ADMIN)["offers"] == []
        browser.close()
