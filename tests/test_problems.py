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
