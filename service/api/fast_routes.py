"""The busiest routes answered without Litestar's per-request machinery.

A storefront asks for recommendations on every page and similar items on every product page,
and sends events as the customer browses; an email or app campaign asks for offers. These five
routes are answered here when the request is one the route surely accepts: a key with the
route's scope, an id, query parameters and a JSON body that pass the route's own rules (the body
decoded strictly into the handler's type, as ``StrictJSONRequest`` does). They run the same code
as the Litestar handlers (``recommendations.answer``, ``events.record_events``...), with the same
metrics and request id, and answer byte for byte what Litestar would.

Everything else goes to Litestar unchanged (another route or method, a parameter or body this
module is not sure of, a refused key), and Litestar answers or refuses it as the OpenAPI document
says. An error raised while answering here is answered here by the app's exception handlers, as
Litestar's exception middleware would, never by running the request a second time: recording
events or presented offers must happen once.

Why: Litestar spends about 120 µs of CPU on such a request around the handler (routing, the
signature's parameters, the response objects), as much as a similar-items answer itself and a
fifth of a recommendation; here it takes a few µs. ``RECO_FAST_ROUTES=false`` turns this off.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar
from litestar._parsers import parse_query_string  # what Litestar's routes parse queries with
from litestar.middleware._internal.exceptions.middleware import get_exception_handler
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service import logs, recommend
from service.api.events import EventController, record_events
from service.api.offers import CustomerOffersController, offers_for
from service.api.params import ID_RULES
from service.api.recommendations import (
    RecommendationController,
    answer,
    answer_session,
    similar_items,
)
from service.api.strict_json import body_decoder
from service.auth import grants, wanted_scopes
from service.events import CHANNELS, PLACEMENT_PATTERN, Event
from service.metrics import Metrics
from service.problems import EXCEPTION_HANDLERS
from service.runtime import Runtime
from service.schemas import MAX_EXCLUDE, MAX_K, RecommendationRequest

# Bodies larger than this are left to Litestar (its limit, a 413, is far above any valid one).
MAX_BODY_BYTES = 1 << 20

_ID = re.compile(ID_RULES["pattern"])
_PLACEMENT = re.compile(PLACEMENT_PATTERN)
_CHANNELS = frozenset(CHANNELS)
_ENCODE = msgspec.json.Encoder().encode
_JSON = (b"content-type", b"application/json")

# What a route does with the request: (runtime, path id, query values, decoded body) -> answer.
Respond = Callable[[Runtime, str, dict[str, Any], Any], Awaitable[msgspec.Struct]]


@dataclass(frozen=True, slots=True)
class Route:
    """One route answered here: ``prefix`` + id + ``suffix`` (or exactly ``prefix`` when
    ``param`` is None), with the template, scopes and status Litestar's route has."""

    method: str
    prefix: str
    suffix: str
    param: str | None
    template: str
    scopes: tuple[str, ...]
    status: int
    query: Callable[[bytes], dict[str, Any] | None]
    body: msgspec.json.Decoder[Any] | None
    respond: Respond

    def identifier(self, path: str) -> str | None:
        """The path's id (``""`` for a route without one), or None: not this route's path."""
        if self.param is None:
            return "" if path == self.prefix else None
        if not (path.startswith(self.prefix) and path.endswith(self.suffix)):
            return None
        identifier = path[len(self.prefix) : len(path) - len(self.suffix)]
        if not (ID_RULES["min_length"] <= len(identifier) <= ID_RULES["max_length"]):
            return None
        return identifier if "/" not in identifier and _ID.match(identifier) else None


class FastRoutes:
    """An ASGI app in front of Litestar's: answers the requests it is sure of (see above)."""

    def __init__(self, app: Litestar, litestar: ASGIApp, metrics: Metrics | None) -> None:
        """``litestar``: ``app``'s own ASGI handler; ``metrics``: the app's, when its middleware
        times requests (tracking on)."""
        self._app = app
        self._litestar = litestar
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ``scope`` here, or hand it to Litestar as it came."""
        if scope["type"] == "http" and not scope.get("root_path"):
            for route in ROUTES:
                if route.method == scope["method"]:
                    identifier = route.identifier(scope["path"])
                    if identifier is not None:
                        await self._route(route, identifier, scope, receive, send)
                        return
        await self._litestar(scope, receive, send)

    async def _route(
        self, route: Route, identifier: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        query = route.query(scope["query_string"])
        if query is None or not grants(scope, route.scopes):
            await self._litestar(scope, receive, send)
            return
        data = None
        if route.body is not None:
            body, complete, more = await _read_body(receive)
            if complete:  # any content type: Litestar decodes the body as JSON whatever it says
                try:
                    data = route.body.decode(body)
                except (msgspec.DecodeError, RecursionError):  # (a ValidationError too)
                    data = None
            if data is None:
                await self._litestar(scope, _replay(body, more, receive), send)
                return
        await self._answer(route, identifier, query, data, scope, receive, send)

    async def _answer(
        self,
        route: Route,
        identifier: str,
        query: dict[str, Any],
        data: Any,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        metrics, out = self._metrics, send
        if metrics is not None:  # what the metrics middleware does on Litestar's routes
            request_id = logs.start_request().encode()
            started = time.perf_counter()
            metrics.in_flight += 1

            async def out(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message["headers"], (b"x-request-id", request_id)]
                await send(message)

        status = 500
        try:
            try:
                runtime = scope["app"].state.runtime
                body = _ENCODE(await route.respond(runtime, identifier, query, data))
            except Exception as exc:
                status = await self._answer_error(exc, scope, receive, out)
                return
            headers = [_JSON, (b"content-length", str(len(body)).encode())]
            await out({"type": "http.response.start", "status": route.status, "headers": headers})
            await out({"type": "http.response.body", "body": body})
            status = route.status
        finally:
            if metrics is not None:
                metrics.in_flight -= 1
                scope["path_template"] = route.template
                if route.param is not None:
                    scope["path_params"] = {route.param: identifier}
                metrics.observe(scope, status, time.perf_counter() - started)

    async def _answer_error(
        self, exc: Exception, scope: Scope, receive: Receive, send: Send
    ) -> int:
        """Answer ``exc`` as Litestar's exception middleware would; returns the status sent."""
        handler = get_exception_handler(EXCEPTION_HANDLERS, exc)
        request = self._app.request_class(scope=scope, receive=receive, send=send)
        response = handler(request, exc)  # type: ignore[misc]
        asgi = response.to_asgi_response(
            app=None, request=request, type_encoders=self._app.type_encoders
        )
        await asgi(scope=scope, receive=receive, send=send)
        return int(response.status_code)


async def _read_body(receive: Receive) -> tuple[bytes, bool, bool]:
    """(what was read of the request's body, whether that is all of it within the limit, whether
    Litestar is to ask ``receive`` for more: the rest of a body past the limit, or the client's
    leaving)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # gone: Litestar hears it again and says so
            return b"".join(chunks), False, True
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES or not more:
            return b"".join(chunks), not more and size <= MAX_BODY_BYTES, more


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """``receive`` giving ``body`` (what was read of the request) first, then, when ``more``,
    what ``receive`` gives."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": more}

    return replayed


def _int(text: str | None, low: int, high: int) -> int | None:
    """A plain decimal ``text`` within [low, high] (no sign, no leading zero), else None."""
    if text is None or not (text.isascii() and text.isdigit() and len(text) <= 3):
        return None
    if text[0] == "0" and text != "0":
        return None
    value = int(text)
    return value if low <= value <= high else None


def _params(query_string: bytes, single: frozenset[str]) -> tuple[dict[str, str], list[str]] | None:
    """The ``single`` parameters (the last of repeated ones wins, as in Litestar) and every
    ``exclude``; unknown parameters are ignored, as Litestar does. None: an empty value."""
    values: dict[str, str] = {}
    exclude: list[str] = []
    for key, value in parse_query_string(query_string):
        if not value:
            return None
        if key == "exclude":
            exclude.append(value)
        elif key in single:
            values[key] = value
    channel = values.setdefault("channel", "web")
    return (values, exclude) if channel in _CHANNELS else None


_RANKING = frozenset({"channel", "k", "category", "store_id", "placement"})
_OFFERS = frozenset({"channel", "k", "items", "record"})
_RECORD = {"true": True, "false": False}


def _ranking_query(query_string: bytes) -> dict[str, Any] | None:
    """The recommendations and similar-items routes' parameters."""
    parsed = _params(query_string, _RANKING)
    if parsed is None or len(parsed[1]) > MAX_EXCLUDE:
        return None
    values, exclude = parsed
    k = None
    if "k" in values and (k := _int(values["k"], 1, MAX_K)) is None:
        return None
    if "placement" in values and not _PLACEMENT.match(values["placement"]):
        return None  # Litestar refuses it, naming the parameter
    return {**values, "k": k, "exclude": tuple(exclude)}


def _offers_query(query_string: bytes) -> dict[str, Any] | None:
    """The offers route's parameters (``exclude`` is not one of them: ignored)."""
    parsed = _params(query_string, _OFFERS)
    if parsed is None:
        return None
    values = parsed[0]
    k = _int(values.get("k", "3"), 1, 20)
    items = _int(values.get("items", "0"), 0, 50)
    record = _RECORD.get(values.get("record", "true"))
    if k is None or items is None or record is None:
        return None
    return {"channel": values["channel"], "k": k, "items": items, "record": record}


def _no_query(query_string: bytes) -> dict[str, Any]:
    return {}  # the body routes take none: Litestar ignores any


def _as_query(rt: Runtime, query: dict[str, Any]) -> recommend.Query:
    return recommend.Query(
        channel=query["channel"],
        k=query["k"] or rt.settings.default_k,
        category=query.get("category"),
        exclude=query["exclude"],
        store_id=query.get("store_id"),
        placement=query.get("placement"),
    )


async def _recommendations(
    rt: Runtime, customer_id: str, query: dict[str, Any], _: Any
) -> msgspec.Struct:
    return await answer(rt, customer_id, _as_query(rt, query))


async def _similar(rt: Runtime, item_id: str, query: dict[str, Any], _: Any) -> msgspec.Struct:
    return await similar_items(rt, item_id, _as_query(rt, query))


async def _offers(rt: Runtime, customer_id: str, q: dict[str, Any], _: Any) -> msgspec.Struct:
    return await offers_for(rt, customer_id, q["channel"], q["k"], q["items"], q["record"])


async def _session(rt: Runtime, _: str, __: dict[str, Any], data: Any) -> msgspec.Struct:
    return await answer_session(rt, data)


async def _events(rt: Runtime, _: str, __: dict[str, Any], data: Any) -> msgspec.Struct:
    return await record_events(rt, data)


def _scopes(controller: Any) -> tuple[str, ...]:
    return wanted_scopes(controller.opt["scope"])


_RECOMMEND = _scopes(RecommendationController)
ROUTES = (
    Route("GET", "/v1/customers/", "/recommendations", "customer_id",
          "/v1/customers/{customer_id}/recommendations", _RECOMMEND, 200, _ranking_query, None,
          _recommendations),
    Route("GET", "/v1/items/", "/similar", "item_id", "/v1/items/{item_id}/similar", _RECOMMEND,
          200, _ranking_query, None, _similar),
    Route("GET", "/v1/customers/", "/offers", "customer_id", "/v1/customers/{customer_id}/offers",
          _scopes(CustomerOffersController), 200, _offers_query, None, _offers),
    Route("POST", "/v1/recommendations", "", None, "/v1/recommendations", _RECOMMEND, 200,
          _no_query, body_decoder(RecommendationRequest), _session),
    Route("POST", "/v1/events", "", None, "/v1/events", _scopes(EventController), 202, _no_query,
          body_decoder(Event | list[Event]), _events),
)  # fmt: skip
