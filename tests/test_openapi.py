"""The served OpenAPI tells the truth: what each operation answers is documented, with the media
type and shape it really has (found by fuzzing the API against its own schema)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from service.api.offers import ExportRequest
from service.api.tablet import Presentation
from service.events import Event
from service.experiments import ExperimentConfig
from service.offers import Offer, OfferRules
from service.schemas import ConsentRequest, InventoryRequest, LinkRequest, RecommendationRequest
from tests.conftest import STOREFRONT_KEY
from tests.test_offers import offer

PROBLEM = "application/problem+json"
METHODS = {"get", "put", "post", "patch", "delete", "head"}


@pytest.fixture
def spec(client: TestClient) -> dict[str, Any]:  # type: ignore[type-arg]
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def _documented(spec: dict[str, Any], method: str, path: str, response: Any) -> None:
    """``response`` has a status and a media type ``method path`` documents."""
    responses = spec["paths"][path][method.lower()]["responses"]
    status = str(response.status_code)
    assert status in responses, f"{method} {path}: {status} undocumented ({sorted(responses)})"
    media_type = response.headers.get("content-type", "").split(";")[0]
    documented = responses[status].get("content") or {}
    if response.content:
        assert media_type in documented, f"{method} {path} {status}: {media_type} undocumented"


def test_every_error_response_is_documented_as_problem_details(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        for status, response in op["responses"].items():
            if int(status) < 400 or path.startswith("/health"):
                continue
            content = response.get("content") or {}
            assert list(content) == [PROBLEM], f"{method} {path} {status}: {list(content)}"
            schema = content[PROBLEM]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, status)


def test_every_operation_behind_a_key_documents_401_403_and_503(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        if path.startswith("/v1/"):
            assert {"401", "403", "503"} <= set(op["responses"]), (method, path)


@pytest.mark.parametrize(
    ("method", "url", "path"),
    [
        ("GET", "/v1/offers/nope", "/v1/offers/{offer_id}"),
        ("DELETE", "/v1/offers/nope", "/v1/offers/{offer_id}"),
        ("GET", "/v1/experiments/nope", "/v1/experiments/{experiment_id}"),
        ("DELETE", "/v1/experiments/nope", "/v1/experiments/{experiment_id}"),
        ("POST", "/v1/experiments/nope/stop", "/v1/experiments/{experiment_id}/stop"),
        ("GET", "/v1/experiments/nope/results", "/v1/experiments/{experiment_id}/results"),
        ("GET", "/v1/items/nope/similar", "/v1/items/{item_id}/similar"),
        ("GET", "/v1/customers/nope/profile", "/v1/customers/{customer_id}/profile"),
        ("GET", "/v1/customers/lookup?email=x@example.com", "/v1/customers/lookup"),
        ("GET", "/v1/customers/%0A/consent", "/v1/customers/{customer_id}/consent"),
        ("GET", "/v1/dashboard?days=0", "/v1/dashboard"),
        ("PUT", "/v1/inventory", "/v1/inventory"),
        ("POST", "/v1/events", "/v1/events"),
    ],
)
def test_errors_the_fuzzer_met_are_documented(
    client: TestClient,  # type: ignore[type-arg]
    spec: dict[str, Any],
    method: str,
    url: str,
    path: str,
) -> None:
    response = client.request(method, url)
    assert response.status_code >= 400
    assert response.headers["content-type"] == PROBLEM
    _documented(spec, method, path, response)


def test_a_refused_key_is_documented(client: TestClient, spec: dict[str, Any]) -> None:  # type: ignore[type-arg]
    missing = client.get("/v1/offers", headers={"Authorization": ""})
    lacking = client.get("/v1/offers", headers={"Authorization": f"Bearer {STOREFRONT_KEY}"})
    assert (missing.status_code, lacking.status_code) == (401, 403)
    for response in (missing, lacking):
        _documented(spec, "GET", "/v1/offers", response)


def test_a_new_offer_is_a_documented_201(client: TestClient, spec: dict[str, Any]) -> None:  # type: ignore[type-arg]
    response = client.put("/v1/offers/o-new", json=offer())
    assert response.status_code == 201, response.text
    _documented(spec, "PUT", "/v1/offers/{offer_id}", response)


def test_an_export_is_documented_as_ndjson(client: TestClient, spec: dict[str, Any]) -> None:  # type: ignore[type-arg]
    response = client.post("/v1/exports/offers", json={"audience": {"customer_ids": ["c1"]}})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    _documented(spec, "POST", "/v1/exports/offers", response)


def test_an_exports_lines_are_documented(client: TestClient, spec: dict[str, Any]) -> None:  # type: ignore[type-arg]
    """The export's 200 documents its lines (it said ``{}``: anything, so nothing was checked)."""
    client.put("/v1/offers/o1", json=offer())
    client.put("/v1/customers/u1/consent", json={"marketing": {"email": True}})
    response = client.post("/v1/exports/offers", json={"audience": {"customer_ids": ["u1"]}})
    documented = spec["paths"]["/v1/exports/offers"]["post"]["responses"]["200"]["content"]
    line = documented["application/x-ndjson"]["schema"]
    assert line == {"$ref": "#/components/schemas/Choice"}
    schema = spec["components"]["schemas"]["Choice"]
    lines = [msgspec.json.decode(text) for text in response.text.splitlines()]
    assert [body["customer_id"] for body in lines] == ["u1"]
    for body in lines:
        assert set(schema["required"]) <= set(body) <= set(schema["properties"]), body


@pytest.mark.parametrize(
    ("url", "methods"),
    [
        ("/v1/offers/o1", "DELETE, GET, OPTIONS, PUT"),
        ("/v1/experiments/e1", "DELETE, GET, OPTIONS, PUT"),
        ("/v1/customers/c1/consent", "GET, OPTIONS, PATCH, PUT"),
        ("/v1/offer-rules", "GET, OPTIONS, PUT"),
        ("/v1/events", "OPTIONS, POST"),
    ],
)
def test_options_allows_every_method_of_the_path(
    client: TestClient,  # type: ignore[type-arg]
    url: str,
    methods: str,
) -> None:
    response = client.options(url)
    assert response.status_code == 204
    assert response.headers["allow"] == methods


def test_request_schemas_say_what_the_decoder_refuses(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for name in ("LinkRequest", "ConsentRequest", "Presentation", "RecommendationRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    identifiers = schemas["LinkRequest"]["properties"]["identifiers"]["items"]
    assert identifiers["minLength"] == 1 and identifiers["maxLength"] == 256
    marketing = schemas["ConsentRequest"]["properties"]["marketing"]
    assert "email" in marketing["propertyNames"]["enum"]
    assert "nope" not in marketing["propertyNames"]["enum"]
    stores = schemas["StockUpdate"]["properties"]["stores"]
    assert stores["propertyNames"]["minLength"] == 1 and "pattern" in stores["propertyNames"]


def test_bodies_read_raw_or_batched_are_documented(spec: dict[str, Any]) -> None:
    def body(method: str, path: str) -> dict[str, Any]:
        request_body = spec["paths"][path][method]["requestBody"]
        assert request_body["required"] is True
        return request_body["content"]["application/json"]["schema"]  # type: ignore[no-any-return]

    assert body("put", "/v1/offers/{offer_id}") == {"$ref": "#/components/schemas/Offer"}
    assert body("put", "/v1/offer-rules") == {"$ref": "#/components/schemas/OfferRules"}
    batch = body("post", "/v1/events")["oneOf"][1]
    assert batch["type"] == "array" and batch["minItems"] == 1


BODIES = (Event, RecommendationRequest, LinkRequest, ConsentRequest, InventoryRequest, Presentation)
BODIES += (Offer, OfferRules, ExportRequest, ExperimentConfig)
BOUNDS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
BOUNDS |= {"minLength", "maxLength", "pattern", "minItems", "maxItems"}


def _bounds(schema: Any) -> set[tuple[str, Any]]:
    """Every bound in ``schema`` and its members (not through a $ref): (keyword, value)."""
    if isinstance(schema, list):
        return {bound for member in schema for bound in _bounds(member)}
    if not isinstance(schema, dict):
        return set()
    found = {(key, value) for key, value in schema.items() if key in BOUNDS}
    for key in ("anyOf", "oneOf", "allOf", "items"):
        found |= _bounds(schema.get(key))
    return found


def test_every_bound_a_body_is_decoded_with_is_documented(spec: dict[str, Any]) -> None:
    """An optional bounded field (``Days | None``, ``Annotated[int, Meta(ge=0)] | None``) kept
    its bound in the OpenAPI: Litestar dropped a bound of 0 and every bound of an optional int,
    so clients (and the fuzzer) sent ``min_days_since_purchase: -1``, a price of -1, and got 400s
    for bodies the schema said were valid."""
    _, decoded = msgspec.json.schema_components(BODIES)
    documented = spec["components"]["schemas"]
    missing = []
    for name, component in decoded.items():
        for field, schema in component.get("properties", {}).items():
            served = documented[name]["properties"][field]
            missing += [(name, field, bound) for bound in _bounds(schema) - _bounds(served)]
    assert missing == [], missing


def test_every_operation_says_what_it_does_and_refuses(spec: dict[str, Any]) -> None:
    """The handlers' docstrings are the operations' descriptions: the rules JSON Schema cannot
    say (exactly one look-up parameter, an identifier's kinds) are documented there."""
    for method, path, op in _operations(spec):
        assert op.get("description"), (method, path)
    lookup = spec["paths"]["/v1/customers/lookup"]["get"]["description"]
    assert "exactly one of ``loyalty``, ``email`` or ``phone``" in lookup
