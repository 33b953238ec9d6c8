"""The two busiest routes answered without Litestar's per-request machinery.

``GET /v1/customers/{id}/recommendations`` (every storefront page) and
``GET /v1/items/{id}/similar`` (every product page) are answered here when the request is one
the route surely accepts: a key with the ``recommend`` scope, an id and query parameters that
pass the routes' own rules. They go through the same code as the Litestar handlers
(``recommendations.answer``, ``similar_items``), with the same metrics, request id and answer,
byte for byte. Everything else (another route or method, a parameter this module is not sure
of, a refused key, an error while answering) goes to Litestar, which answers or refuses it as
the OpenAPI document says; an error is answered there from scratch, so its problem details are
worded in one place.

Why: Litestar spends about 120 µs of CPU on such a request before and after the handler
(routing, the signature's parameters, the response objects), as much as the similar-items
answer itself and a fifth of a recommendation; here it takes a few µs.
``RECO_FAST_ROUTES=false`` turns this off.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar._parsers import parse_query_string  # what Litestar's routes parse queries with
from litestar.types import ASGIApp, Receive, Scope, Send

from service import logs, recommend
from service.api.params import ID_RULES, MAX_EXCLUDE, MAX_K
from service.api.recommendations import RecommendationController, answer, similar_items
from service.auth import grants
from service.events import CHANNELS
from service.metrics import Metrics
from service.runtime import Runtime

_SCOPES = (RecommendationController.opt["scope"],)
_ID = re.compile(ID_RULES["pattern"])
_CHANNELS = frozenset(CHANNELS)
_SINGLE = frozenset({"channel", "k", "category", "store_id"})
_ENCODE = msgspec.json.Encoder().encode
_JSON = (b"content-type", b"application/json")

# (path prefix, path suffix, route template as Litestar's router names it, path parameter)
_CUSTOMER = ("/v1/customers/", "/recommendations", "/v1/customers/{customer_id}/recommendations")
_SIMILAR = ("/v1/items/", "/similar", "/v1/items/{item_id}/similar")


class FastRoutes:
    """An ASGI app in front of Litestar's (``litestar``): answers the requests it is sure of."""

    def __init__(self, litestar: ASGIApp, metrics: Metrics | None) -> None:
        """``metrics``: the app's, when its middleware times requests (tracking on)."""
        self._litestar = litestar
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ``scope`` here, or hand it to Litestar unchanged."""
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            await self._litestar(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith(_CUSTOMER[0]) and path.endswith(_CUSTOMER[1]):
            route, name, respond = _CUSTOMER, "customer_id", _recommendations
        elif path.startswith(_SIMILAR[0]) and path.endswith(_SIMILAR[1]):
            route, name, respond = _SIMILAR, "item_id", _similar
        else:
            await self._litestar(scope, receive, send)
            return
        identifier = path[len(route[0]) : len(path) - len(route[1])]
        query = _query(scope["query_string"])
        if query is None or not _valid_id(identifier) or not grants(scope, _SCOPES):
            await self._litestar(scope, receive, send)
            return
        if not await self._answer(scope, send, route[2], name, identifier, respond, query):
            await self._litestar(scope, receive, send)

    async def _answer(
        self,
        scope: Scope,
        send: Send,
        template: str,
        name: str,
        identifier: str,
        respond: Callable[[Runtime, str, dict[str, Any]], Awaitable[msgspec.Struct]],
        query: dict[str, Any],
    ) -> bool:
        """Answer with ``respond``; False, having sent nothing, when it raised."""
        metrics = self._metrics
        headers = [_JSON]
        if metrics is not None:
            request_id = logs.start_request()
            started = time.perf_counter()
            metrics.in_flight += 1
        try:
            body = _ENCODE(await respond(scope["app"].state.runtime, identifier, query))
        except Exception:  # answered again by Litestar, with its problem details and metrics
            return False
        finally:
            if metrics is not None:
                metrics.in_flight -= 1
        headers.append((b"content-length", str(len(body)).encode()))
        if metrics is not None:
            headers.append((b"x-request-id", request_id.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if metrics is not None:
            scope["path_template"] = template
            scope["path_params"] = {name: identifier}
            metrics.observe(scope, 200, time.perf_counter() - started)
        return True


def _query(query_string: bytes) -> dict[str, Any] | None:
    """The routes' query parameters, or None where Litestar should judge them: a value this
    module is not sure it would take as Litestar does (it ignores unknown parameters, and the
    last of a repeated single one wins, as Litestar's do)."""
    channel, k, exclude = "web", None, []
    values: dict[str, Any] = {}
    for key, value in parse_query_string(query_string):
        if not value:
            return None
        if key == "exclude":
            exclude.append(value)
        elif key in _SINGLE:
            values[key] = value
    channel = values.get("channel", channel)
    if channel not in _CHANNELS or len(exclude) > MAX_EXCLUDE:
        return None
    if (text := values.get("k")) is not None:
        if not (text.isascii() and text.isdigit() and text[0] != "0" and len(text) <= 3):
            return None
        k = int(text)
        if k > MAX_K:
            return None
    return {
        "channel": channel,
        "k": k,
        "category": values.get("category"),
        "exclude": tuple(exclude),
        "store_id": values.get("store_id"),
    }


def _valid_id(identifier: str) -> bool:
    return (
        ID_RULES["min_length"] <= len(identifier) <= ID_RULES["max_length"]
        and "/" not in identifier
        and _ID.match(identifier) is not None
    )


def _as_query(rt: Runtime, query: dict[str, Any]) -> recommend.Query:
    return recommend.Query(
        channel=query["channel"],
        k=query["k"] or rt.settings.default_k,
        category=query["category"],
        exclude=query["exclude"],
        store_id=query["store_id"],
    )


async def _recommendations(rt: Runtime, customer_id: str, query: dict[str, Any]) -> msgspec.Struct:
    return await answer(rt, customer_id, _as_query(rt, query))


async def _similar(rt: Runtime, item_id: str, query: dict[str, Any]) -> msgspec.Struct:
    return await similar_items(rt, item_id, _as_query(rt, query))
