"""The routes answered in front of Litestar (service/api/fast_routes.py) answer as Litestar does.

Each request goes to two apps with the same model and the same seeded Redis state (each under a
key prefix of its own, so what one records never changes the other's answers), one with the
fast routes and one without. Status, headers and body (less the request id and the event stream's
ids) must be the same; the requests the fast routes are sure of must never reach Litestar, and
an error met while answering is answered in front of it too, never by running the request again.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis
from litestar.testing import TestClient

from service.api.fast_routes import FastRoutes
from service.settings import Settings
from tests.conftest import ADMIN_KEY, EVENTS_KEY, STOREFRONT_KEY, client_for, replace

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
STOREFRONT = {"X-API-Key": STOREFRONT_KEY}
EVENTS = {"X-API-Key": EVENTS_KEY}
JSON = {"Content-Type": "application/json"}


def view(customer: str, item: str, **more: object) -> dict[str, object]:
    return {
        "customer_id": customer,
        "item_id": item,
        "event_type": "view",
        "channel": "web",
        **more,
    }


RETRY = view("u4", "i10", event_id="e1")
SESSION = {"identifier": "cookie:c9", "k": 4, "context": {"cart": ["i03"], "viewed": ["i05"]}}

# (method, path, query, headers, JSON body or raw bytes)
Request = tuple[str, str, Any, dict[str, str], Any]


def recs(customer: str, query: Any, headers: dict[str, str] = ADMIN) -> Request:
    return ("GET", f"/v1/customers/{customer}/recommendations", query, headers, None)


def similar(item: str, query: Any, headers: dict[str, str] = ADMIN) -> Request:
    return ("GET", f"/v1/items/{item}/similar", query, headers, None)


def offers(customer: str, query: Any, headers: dict[str, str] = ADMIN) -> Request:
    return ("GET", f"/v1/customers/{customer}/offers", query, headers, None)


def post(path: str, body: Any, headers: dict[str, str] = ADMIN, query: Any = None) -> Request:
    return ("POST", path, query or {}, {**JSON, **headers}, body)


# Requests the fast routes answer themselves, successfully.
ANSWERED: list[Request] = [
    recs("u0", {}),
    recs("u0", {"k": 3, "channel": "app"}, STOREFRONT),
    recs("u2", {"k": 200, "channel": "store"}),
    recs("u1", {"category": "odd", "exclude": ["i01", "i03"]}),
    recs("u0", {"channel": "tablet", "store_id": "s1", "k": 3}),
    recs("u0", [("k", "2"), ("k", "4")]),
    recs("u0", {"k": 3, "utm_source": "mail"}),
    recs("stranger", {"k": 4, "channel": "store"}),
    recs("email:ann@example.com", {"k": 3}),
    recs("u3 with space", {"k": 3}),
    recs("u0", {"placement": "cart", "k": 3}),
    recs("u2", {"placement": "home", "channel": "app", "k": 2}, STOREFRONT),
    recs("u0", [("placement", "home"), ("placement", "slot-9_b")]),
    recs("u1", {"placement": "x" * 32, "exclude": ["i01"]}),
    similar("i00", {}),
    similar("i03", {"placement": "product", "k": 3}),
    similar("i03", {"k": 3, "category": "odd", "channel": "app"}, STOREFRONT),
    similar("i00", {"store_id": "s2", "k": 5}),
    offers("u0", {"channel": "email"}),
    offers("u2", {"channel": "app", "k": 2, "items": 3, "record": "false"}),
    offers("u2", {"channel": "app", "items": 0, "record": "true"}),
    post("/v1/recommendations", SESSION),
    # Litestar decodes a body as JSON whatever its content type says, or without one.
    post("/v1/recommendations", SESSION, {**ADMIN, "Content-Type": "text/plain"}),
    ("POST", "/v1/recommendations", {}, ADMIN, SESSION),
    post("/v1/recommendations", {"customer_id": "u2", "channel": "app"}, STOREFRONT),
    post("/v1/recommendations", {**SESSION, "placement": "cart"}),
    post("/v1/events", view("u4", "i06"), EVENTS),
    post("/v1/events", view("u4", "i09", placement="home", request_id="r1"), EVENTS),
    post("/v1/events", [view("u4", "i08"), view("u4", "i10", event_id="e1"), RETRY],
         {**EVENTS, "Content-Type": "application/json; charset=utf-8"}),
    post("/v1/events", view("email:ann@example.com", "i12"), query={"channel": "web"}),
]  # fmt: skip

# Errors met while answering, answered in front of Litestar as its exception handlers would.
ERRORS: list[Request] = [
    similar("nope", {"k": 3}),
    offers("email:", {}),
    post("/v1/events", [], EVENTS),
    post("/v1/events", [view("u4", "i06", timestamp="2999-01-01T00:00:00Z")], EVENTS),
]  # fmt: skip

# Requests left to Litestar: refusals, and values the fast routes are not sure of.
DELEGATED: list[Request] = [
    recs("u0", {"k": 0}),
    recs("u0", {"k": 201}),
    recs("u0", {"k": "05"}),
    recs("u0", {"k": "three"}),
    recs("u0", {"k": "1000000000000000000000"}),
    recs("u0", {"channel": "moon"}),
    recs("u0", {"category": ""}),
    recs("u0", {"placement": ""}),
    recs("u0", {"placement": "Cart"}),
    recs("u0", {"placement": "cart\n"}),
    recs("u0", {"placement": "9slot"}),
    recs("u0", {"placement": "x" * 33}),
    recs("u0", [("placement", "cart"), ("placement", "Cart")]),
    similar("i00", {"placement": "pro duct"}),
    recs("u0", {"exclude": [f"i{j}" for j in range(501)]}),
    recs("u0", {}, {}),
    recs("u0", {}, {"X-API-Key": "nobody"}),
    recs("u0", {}, EVENTS),
    recs("%01", {}),
    ("GET", f"/v1/customers/{'x' * 257}/recommendations", {}, ADMIN, None),
    recs("a%2Fb", {}),
    recs("", {}),
    ("GET", "/v1/customers/u0/recommendations/", {}, ADMIN, None),
    ("HEAD", "/v1/customers/u0/recommendations", {}, ADMIN, None),
    similar("i00", {"k": 500}),
    offers("u0", {"k": 21}),
    offers("u0", {"items": 51}),
    offers("u0", {"record": "no"}),
    offers("u0", {"record": "1"}),
    offers("u0", {}, STOREFRONT),
    post("/v1/recommendations", {**SESSION, "k": "4"}),
    post("/v1/recommendations", {**SESSION, "colour": "red"}),
    post("/v1/recommendations", {**SESSION, "placement": "Cart"}),
    post("/v1/events", view("u4", "i06", placement="cart\n"), EVENTS),
    post("/v1/recommendations", b"{not json"),
    post("/v1/recommendations", b""),
    post("/v1/recommendations", SESSION, EVENTS),
    post("/v1/events", {**view("u4", "i06"), "quantity": "3"}, EVENTS),
    post("/v1/events", b"[" * 100_000, EVENTS),
    post("/v1/events", view("u4", "i06"), STOREFRONT),
    post("/v1/events", [view("u4", "i06")] * 15_000, EVENTS),  # past the body size read here
]  # fmt: skip


@pytest.fixture
def clients(
    settings: Settings, redis_url: str
) -> Iterator[tuple[TestClient, TestClient, list[str]]]:  # type: ignore[type-arg]
    """(fast routes on, off, the paths that reached Litestar through the first)."""
    other_prefix = f"test-{uuid.uuid4().hex[:12]}"
    try:
        with (
            client_for(replace(settings, fast_routes=True)) as fast,
            client_for(replace(settings, fast_routes=False, key_prefix=other_prefix)) as plain,
        ):
            fast_routes = fast.app.asgi_handler
            assert isinstance(fast_routes, FastRoutes)
            reached: list[str] = []
            litestar = fast_routes._litestar

            async def counting(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "http":
                    reached.append(scope["path"])
                await litestar(scope, receive, send)

            seed(fast)
            seed(plain)
            fast_routes._litestar = counting
            yield fast, plain, reached
    finally:
        client = redis.Redis.from_url(redis_url)
        if keys := list(client.scan_iter(match=f"{other_prefix}:*", count=1000)):
            client.delete(*keys)
        client.close()


def seed(client: TestClient) -> None:  # type: ignore[type-arg]
    """Live state that the answers depend on: events, an identifier, stock, offers, consent."""
    events = [
        view("u2", "i04"),
        {**view("u2", "i07"), "event_type": "add_to_cart", "channel": "app"},
    ]
    events.append({**view("u3 with space", "i05"), "event_type": "purchase", "channel": "store"})
    assert client.post("/v1/events", json=events, headers=ADMIN).status_code == 202
    link = {"customer_id": "u0", "identifiers": ["email:ann@example.com"]}
    assert client.post("/v1/identities/link", json=link, headers=ADMIN).status_code == 200
    stock = {
        "items": [
            {"item_id": "i02", "online": False},
            {"item_id": "i10", "stores": {"s1": True, "s2": True}},
        ]
    }
    assert client.put("/v1/inventory", json=stock, headers=ADMIN).status_code == 200
    offer = {
        "title": "10% off even things", "kind": "percent_off", "amount": 10,
        "target": {"categories": ["even"]}, "channels": ["email", "app"], "value": 10.0,
        "cost": 1.0, "caps": [{"max": 1, "period_days": 7}],
    }  # fmt: skip
    assert client.put("/v1/offers/o1", json=offer, headers=ADMIN).status_code == 201
    assert (
        client.put(
            "/v1/offers/o2", json={**offer, "value": 5.0, "caps": []}, headers=ADMIN
        ).status_code
        == 201
    )
    for customer in ("u0", "u2"):
        consent = {"marketing": {"email": True, "app": True}}
        assert (
            client.put(f"/v1/customers/{customer}/consent", json=consent, headers=ADMIN).status_code
            == 200
        )


def _ask(client: TestClient, request: Request, *, with_id: bool = True) -> tuple[Any, ...]:  # type: ignore[type-arg]
    method, path, query, headers, body = request
    content = body if isinstance(body, bytes) or body is None else msgspec.json.encode(body)
    response = client.request(method, path, params=query, headers=headers, content=content)
    try:
        answer = response.json()
    except ValueError:
        answer = response.content
    if isinstance(answer, dict):
        if (request_id := answer.pop("request_id", None)) is not None:
            assert response.headers.get("x-request-id") == (request_id if with_id else None)
        if "ids" in answer:  # the event stream's, different in each app's stream
            assert all(re.fullmatch(r"\d+-\d+", i) for i in answer["ids"])
            answer["ids"] = len(answer["ids"])
    head = [
        # Litestar lists a 405's methods in no set order.
        (k, ", ".join(sorted(v.split(", "))) if k == "allow" else v)
        for k, v in response.headers.items()
        if k not in ("x-request-id", "date")
    ]
    return response.status_code, head, answer


def _ids(requests: list[Request]) -> list[str]:
    return [f"{r[0]} {r[1][:40]} {str(r[2])[:40]} {str(r[4])[:30]}" for r in requests]


@pytest.mark.parametrize(
    ("request_", "statuses"),
    [(r, (200, 202)) for r in ANSWERED] + [(r, (400, 404)) for r in ERRORS],
    ids=_ids(ANSWERED + ERRORS),
)
def test_answered_in_front_of_litestar_as_litestar_answers(
    clients: tuple[TestClient, TestClient, list[str]],  # type: ignore[type-arg]
    request_: Request,
    statuses: tuple[int, int],
) -> None:
    """Answers and errors while answering (answered in place, never run again) alike."""
    fast, plain, reached = clients
    answer = _ask(fast, request_)
    assert answer[0] in statuses, answer
    assert reached == []
    assert answer == _ask(plain, request_)


@pytest.mark.parametrize("request_", DELEGATED, ids=_ids(DELEGATED))
def test_requests_it_is_not_sure_of_are_litestars(
    clients: tuple[TestClient, TestClient, list[str]],  # type: ignore[type-arg]
    request_: Request,
) -> None:
    fast, plain, reached = clients
    answer = _ask(fast, request_)
    assert reached == [request_[1].replace("%01", "\x01").replace("%2F", "/")]
    assert answer == _ask(plain, request_)


def test_recorded_once_and_counted_as_litestar_counts(
    clients: tuple[TestClient, TestClient, list[str]],  # type: ignore[type-arg]
) -> None:
    fast, plain, reached = clients
    capped = ("GET", "/v1/customers/u0/offers", {"channel": "email", "k": 1}, ADMIN, None)
    session = post("/v1/recommendations", SESSION)
    placed = [recs("u0", {"placement": "cart"}), similar("i00", {"placement": "slot-9"})]
    asked = [*ANSWERED[:3], *placed, session, *ERRORS[:2], *DELEGATED[:2], capped, capped]
    answers = {
        name: [_ask(client, r) for r in asked]
        for name, client in (("fast", fast), ("plain", plain))
    }
    assert answers["fast"] == answers["plain"]
    # The cap of one presentation a week: the offer was recorded once, so the second ask gets o2.
    first, second = answers["fast"][-2][2], answers["fast"][-1][2]
    assert [o["offer_id"] for o in first["offers"]] == ["o1"]
    assert [o["offer_id"] for o in second["offers"]] == ["o2"]
    assert len(reached) == 2

    def request_series(client: TestClient) -> list[str]:  # type: ignore[type-arg]
        text = client.get("/metrics", headers=ADMIN).text
        wanted = re.compile(
            r"^reco_((responses_total|request_duration_seconds_count)\{.*route=\"/v1/"
            r"|placement_answers_total)"
        )
        return sorted(
            line for line in text.splitlines() if wanted.match(line) and "metrics" not in line
        )

    series = request_series(fast)
    assert (
        'reco_responses_total{route="/v1/customers/{customer_id}/recommendations",status="200"} 4.0'
        in series
    )
    assert (
        'reco_placement_answers_total{channel="web",endpoint="similar",placement="other"} 1.0'
        in series
    )
    assert 'reco_responses_total{route="/v1/items/{item_id}/similar",status="404"} 1.0' in series
    assert 'reco_responses_total{route="/v1/recommendations",status="200"} 1.0' in series
    assert series == request_series(plain)


@pytest.mark.parametrize("client_leaves", [False, True])
def test_a_body_in_parts_reaches_litestar_whole_past_the_limit(
    clients: tuple[TestClient, TestClient, list[str]],  # type: ignore[type-arg]
    client_leaves: bool,
) -> None:
    """A body past what is read here is handed on with its parts read so far; then Litestar
    reads the rest, or hears that the client left."""
    fast, _, reached = clients
    body = msgspec.json.encode([view("u4", "i06")] * 15_000)
    parts = [body[at : at + 65_536] for at in range(0, len(body), 65_536)]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": part, "more_body": at < len(parts) - 1}
        for at, part in enumerate(parts)
    ]
    if client_leaves:
        messages[-1] = {"type": "http.disconnect"}
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/events", "raw_path": b"/v1/events", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
        "headers": [(b"content-type", b"application/json"), (b"x-api-key", EVENTS_KEY.encode())],
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    fast.blocking_portal.call(fast.app, scope, receive, send)
    assert reached == ["/v1/events"]
    problem = msgspec.json.decode(sent[1]["body"])
    if client_leaves:
        assert (sent[0]["status"], problem["title"]) == (408, "Request timeout")
    else:
        assert sent[0]["status"] == 400
        assert "the batch holds 15000 events" in problem["detail"]


def test_with_measurement_off_answers_are_litestars_too(settings: Settings, redis_url: str) -> None:
    """``RECO_TRACKING=false``: no metrics middleware, so no request id header either way."""
    off = replace(settings, tracking=False)
    other_prefix = f"test-{uuid.uuid4().hex[:12]}"
    asked = [ANSWERED[0], ANSWERED[10], post("/v1/events", view("u4", "i06"), EVENTS), ERRORS[0]]
    try:
        with (
            client_for(replace(off, fast_routes=True)) as fast,
            client_for(replace(off, fast_routes=False, key_prefix=other_prefix)) as plain,
        ):
            seed(fast)
            seed(plain)
            for request in asked:
                answer = _ask(fast, request, with_id=False)
                assert answer == _ask(plain, request, with_id=False)
                assert answer[0] in (200, 202, 404)
            response = fast.get("/v1/customers/u0/recommendations", headers=ADMIN)
            assert response.status_code == 200 and "x-request-id" not in response.headers
    finally:
        client = redis.Redis.from_url(redis_url)
        if keys := list(client.scan_iter(match=f"{other_prefix}:*", count=1000)):
            client.delete(*keys)
        client.close()
