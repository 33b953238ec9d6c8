"""Problem details for bodies the decoder cannot take: too deeply nested, empty."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

PROBLEM = "application/problem+json"
DEPTH = 5000
NESTED_ARRAYS = b"[" * DEPTH + b"]" * DEPTH
NESTED_OBJECTS = b'{"a":' * DEPTH + b"1" + b"}" * DEPTH
JSON = {"content-type": "application/json"}

JSON_BODY_ROUTES = [
    ("POST", "/v1/events"),
    ("POST", "/v1/recommendations"),
    ("PUT", "/v1/inventory"),
    ("PUT", "/v1/offers/o1"),
    ("PUT", "/v1/offer-rules"),
    ("POST", "/v1/exports/offers"),
    ("PUT", "/v1/experiments/e1"),
]


@pytest.mark.parametrize(("method", "path"), JSON_BODY_ROUTES)
@pytest.mark.parametrize("body", [NESTED_ARRAYS, NESTED_OBJECTS], ids=["arrays", "objects"])
def test_a_deeply_nested_body_is_a_400_on_every_json_route(
    client: TestClient, method: str, path: str, body: bytes
) -> None:
    response = client.request(method, path, content=body, headers=JSON)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["type"] == "urn:omnireco:problem:invalid-request"
    assert "nested too deeply" in problem["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/events"), ("PUT", "/v1/inventory"), ("PUT", "/v1/offers/o1")],
)
def test_an_empty_body_is_a_400_that_says_so(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, content=b"", headers=JSON)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert "request body is empty" in problem["detail"]
    assert problem["errors"][0]["field"] == "$"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PATCH", "/v1/customers/c1/consent", {"personalisation": "false"}, "$.personalisation"),
        ("PUT", "/v1/customers/c1/consent", {"marketing": {"app": 0}}, "$.marketing[...]"),
        (
            "POST",
            "/v1/events",
            [{"customer_id": "c1", "event_type": "purchase", "item_id": "i01", "quantity": "3"}],
            "$[0].quantity",
        ),
        ("POST", "/v1/exports/offers", {"record": 0}, "$.record"),
        ("PUT", "/v1/inventory", {"items": [{"item_id": "i01", "stores": {"s1": 1}}]}, None),
        ("POST", "/v1/recommendations", {"customer_id": "c1", "k": "5"}, "$.k"),
    ],
)
def test_a_json_body_is_decoded_strictly(
    client: TestClient, method: str, path: str, body: object, field: str | None
) -> None:
    """``"false"``, ``0`` and ``"3"`` are not the boolean and number the OpenAPI asks for: a 400
    naming the field, not a value silently coerced (Litestar converts bodies in lax mode)."""
    response = client.request(method, path, json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    errors = response.json()["errors"]
    assert errors[0]["field"].startswith(field or "$.items[0].stores"), errors
    assert client.get("/v1/customers/c1/consent").json().get("personalisation") is None
