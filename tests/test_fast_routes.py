"""The routes answered in front of Litestar (service/api/fast_routes.py) answer as Litestar does.

Each request goes to two apps on the same Redis state and model, one with the fast routes and one
without; status, headers and body (less the request id) must be the same, and the requests the
fast routes are sure of must never reach Litestar.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from service.api.fast_routes import FastRoutes
from service.settings import Settings
from tests.conftest import ADMIN_KEY, EVENTS_KEY, STOREFRONT_KEY, client_for, replace

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
STOREFRONT = {"X-API-Key": STOREFRONT_KEY}

# Requests the fast routes answer themselves: (path, query, headers).
ANSWERED: list[tuple[str, Any, dict[str, str]]] = [
    ("/v1/customers/u0/recommendations", {}, ADMIN),
    ("/v1/customers/u0/recommendations", {"k": 3, "channel": "app"}, STOREFRONT),
    ("/v1/customers/u2/recommendations", {"k": 200, "channel": "store"}, ADMIN),
    ("/v1/customers/u1/recommendations", {"category": "odd", "exclude": ["i01", "i03"]}, ADMIN),
    ("/v1/customers/u0/recommendations", {"channel": "tablet", "store_id": "s1", "k": 3}, ADMIN),
    ("/v1/customers/u0/recommendations", [("k", "2"), ("k", "4"), ("channel", "web")], ADMIN),
    ("/v1/customers/u0/recommendations", {"k": 3, "utm_source": "mail"}, ADMIN),
    ("/v1/customers/stranger/recommendations", {"k": 4, "channel": "store"}, ADMIN),
    ("/v1/customers/email:ann@example.com/recommendations", {"k": 3}, ADMIN),
    ("/v1/customers/u3 with space/recommendations", {"k": 3}, ADMIN),
    ("/v1/items/i00/similar", {}, ADMIN),
    ("/v1/items/i03/similar", {"k": 3, "category": "odd", "channel": "app"}, STOREFRONT),
    ("/v1/items/i00/similar", {"store_id": "s2", "k": 5}, ADMIN),
]

# Requests left to Litestar: refusals, errors and values the fast routes are not sure of.
DELEGATED: list[tuple[str, Any, dict[str, str]]] = [
    ("/v1/customers/u0/recommendations", {"k": 0}, ADMIN),
    ("/v1/customers/u0/recommendations", {"k": 201}, ADMIN),
    ("/v1/customers/u0/recommendations", {"k": "05"}, ADMIN),
    ("/v1/customers/u0/recommendations", {"k": "three"}, ADMIN),
    ("/v1/customers/u0/recommendations", {"k": "1000000000000000000000"}, ADMIN),
    ("/v1/customers/u0/recommendations", {"channel": "moon"}, ADMIN),
    ("/v1/customers/u0/recommendations", {"category": ""}, ADMIN),
    ("/v1/customers/u0/recommendations", {"exclude": [f"i{j}" for j in range(501)]}, ADMIN),
    ("/v1/customers/u0/recommendations", {}, {}),
    ("/v1/customers/u0/recommendations", {}, {"X-API-Key": "nobody"}),
    ("/v1/customers/u0/recommendations", {}, {"X-API-Key": EVENTS_KEY}),
    ("/v1/customers/%01/recommendations", {}, ADMIN),
    (f"/v1/customers/{'x' * 257}/recommendations", {}, ADMIN),
    ("/v1/customers/a%2Fb/recommendations", {}, ADMIN),
    ("/v1/customers//recommendations", {}, ADMIN),
    ("/v1/customers/u0/recommendations/", {}, ADMIN),
    ("/v1/items/nope/similar", {"k": 3}, ADMIN),
    ("/v1/items/i00/similar", {"k": 500}, ADMIN),
    ("/v1/items/i00/similar", {}, {"X-API-Key": EVENTS_KEY}),
]


@pytest.fixture
def clients(settings: Settings) -> Iterator[tuple[TestClient, TestClient, list[str]]]:  # type: ignore[type-arg]
    """(fast routes on, off, the paths that reached Litestar through the first), same state."""
    with (
        client_for(replace(settings, fast_routes=True)) as fast,
        client_for(replace(settings, fast_routes=False)) as plain,
    ):
        fast_routes = fast.app.asgi_handler
        assert isinstance(fast_routes, FastRoutes)
        reached: list[str] = []
        litestar = fast_routes._litestar

        async def counting(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                reached.append(scope["path"])
            await litestar(scope, receive, send)

        fast_routes._litestar = counting
        seed(plain)
        yield fast, plain, reached


def seed(client: TestClient) -> None:  # type: ignore[type-arg]
    """Live state that every answer depends on: events, an identifier, stock."""
    events = [
        {"customer_id": "u2", "item_id": "i04", "event_type": "view", "channel": "web"},
        {"customer_id": "u2", "item_id": "i07", "event_type": "add_to_cart", "channel": "app"},
        {
            "customer_id": "u3 with space",
            "item_id": "i05",
            "event_type": "purchase",
            "channel": "store",
        },
    ]
    assert client.post("/v1/events", json=events, headers=ADMIN).status_code in (
        200,
        202,
    )
    link = {"customer_id": "u0", "identifiers": ["email:ann@example.com"]}
    assert client.post("/v1/identities/link", json=link, headers=ADMIN).status_code in (200, 201)
    stock = {
        "items": [
            {"item_id": "i02", "online": False},
            {"item_id": "i10", "stores": {"s1": True, "s2": True}},
        ]
    }
    assert client.put("/v1/inventory", json=stock, headers=ADMIN).status_code == 200


def _answer(client: TestClient, path: str, query: Any, headers: dict[str, str]) -> tuple[Any, ...]:  # type: ignore[type-arg]
    response = client.get(path, params=query, headers=headers)
    body = response.json()
    request_id = body.pop("request_id", None) if isinstance(body, dict) else None
    if request_id is not None:  # the same id in the body and the header
        assert response.headers["x-request-id"] == request_id
    head = [(k, v) for k, v in response.headers.items() if k not in ("x-request-id", "date")]
    return response.status_code, head, body


@pytest.mark.parametrize(("path", "query", "headers"), ANSWERED)
def test_answered_in_front_of_litestar_as_litestar_answers(
    clients: tuple[TestClient, TestClient, list[str]],  # type: ignore[type-arg]
    path: str,
    query: Any,
    headers: dict[str, str],
) -> None:
    fast, plain, reached = clients
    answer = _answer(fast, path, query, headers)
    assert answer[0] == 200, answer
    assert reached == []
    assert answer == _answer(plain, path, query, headers)


@pytest.mark.parametrize(("path", "query", "headers"), DELEGATED)
def test_requests_it_is_not_sure_of_are_litestars(
    clients: tuple[TestClient, TestClient, list[str]],  # type: ignore[type-arg]
    path: str,
    query: Any,
    headers: dict[str, str],
) -> None:
    fast, plain, reached = clients
    answer = _answer(fast, path, query, headers)
    assert len(reached) == 1
    assert answer == _answer(plain, path, query, headers)


def test_metrics_count_fast_answers_as_litestar_would(
    clients: tuple[TestClient, TestClient, list[str]],  # type: ignore[type-arg]
) -> None:
    fast, plain, reached = clients
    for client in (fast, plain):
        for path, query, headers in ANSWERED[:3] + ANSWERED[-2:] + DELEGATED[-3:]:
            client.get(path, params=query, headers=headers)
    assert len(reached) == 3

    def request_series(client: TestClient) -> list[str]:  # type: ignore[type-arg]
        text = client.get("/metrics", headers=ADMIN).text
        wanted = re.compile(
            r"^reco_(responses_total|request_duration_seconds_count)\{.*route=\"/v1/(customers|items)/"
        )
        return sorted(line for line in text.splitlines() if wanted.match(line))

    series = request_series(fast)
    assert (
        'reco_responses_total{route="/v1/customers/{customer_id}/recommendations",status="200"} 3.0'
        in series
    )
    assert 'reco_responses_total{route="/v1/items/{item_id}/similar",status="200"} 2.0' in series
    assert series == request_series(plain)
