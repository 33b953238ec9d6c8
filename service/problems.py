"""RFC 9457 problem details: every error response, with a stable ``type`` per kind of error."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from service.errors import ServiceError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
EMPTY_BODY = "the request body is empty; expected JSON"
TYPE_PREFIX = "urn:omnireco:problem:"

# Litestar's words (litestar/connection/request.py, a 500) when the client is gone before the
# body it announced has arrived: it left, or the server timed it out (service/http_protocol.py).
_CLIENT_GONE = "client disconnected prematurely"

# Framework errors by status: their stable slug and title.
_HTTP_KINDS = {
    400: ("invalid-request", "Invalid request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    408: ("request-timeout", "Request timeout"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("too-many-requests", "Too many requests"),
}


class InvalidBody(ValidationException):
    """A JSON body that does not decode into the handler's data type, strictly (raised by
    service/api/strict_json.py from msgspec's error, which names the path without ``$.data``)."""


class FieldError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One invalid input: where it is (``$.events[0].channel``, ``query.k``) and what is wrong."""

    field: str
    message: str


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The body of every error response."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


def problem_response(
    request: Request[Any, Any, Any],
    *,
    slug: str,
    title: str,
    status: int,
    detail: str | None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Problem]:
    """Build a problem-details response for ``request``."""
    body = Problem(
        type=TYPE_PREFIX + slug,
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
    )
    return Response(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def service_error_handler(request: Request[Any, Any, Any], exc: ServiceError) -> Response[Problem]:
    """Domain errors carry their own slug, status, title and, for outages, ``Retry-After``."""
    retry = exc.retry_after_seconds
    return problem_response(
        request,
        slug=exc.slug,
        title=exc.title,
        status=exc.status,
        detail=str(exc) or None,
        headers=None if retry is None else {"Retry-After": str(retry)},
    )


def validation_error_handler(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[Problem]:
    """Invalid body or parameters: a 400 listing every field at fault."""
    errors = _body_error(exc) or [
        FieldError(field=_field_name(e), message=str(e.get("message", "invalid value")))
        for e in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(e, dict)
    ]
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or exc.detail
    return problem_response(
        request, slug="validation", title="Invalid input", status=400, detail=detail, errors=errors
    )


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    """Any other framework error (401, 403, 404, 405...) as problem details; a client gone
    before its body arrived is a 408, not a server error (logged, counted as one in /metrics)."""
    if exc.status_code == 500 and exc.detail == _CLIENT_GONE:
        slug, title = _HTTP_KINDS[408]
        detail = "the request's body did not arrive in full"
        return problem_response(request, slug=slug, title=title, status=408, detail=detail)
    slug, title = _HTTP_KINDS.get(exc.status_code, (f"http-{exc.status_code}", "Error"))
    if exc.status_code >= 500:
        log.error("HTTP %d on %s: %s", exc.status_code, request.url.path, exc.detail)
        slug, title = "internal", "Internal error"
    return problem_response(
        request,
        slug=slug,
        title=title,
        status=exc.status_code,
        detail=exc.detail,
        headers=exc.headers,
    )


def recursion_error_handler(
    request: Request[Any, Any, Any], exc: RecursionError
) -> Response[Problem]:
    """A JSON body nested deeper than the decoder can follow is the client's fault: a 400.

    msgspec (under Litestar's body decoding and the offers' own) follows nesting on the C stack
    and gives up with a RecursionError of its own wording; any other RecursionError is a bug.
    """
    if _DESERIALIZING not in str(exc):
        return internal_error_handler(request, exc)
    return problem_response(
        request,
        slug="invalid-request",
        title=_HTTP_KINDS[400][1],
        status=400,
        detail="the JSON body is nested too deeply to decode",
    )


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """A bug: log it with its traceback, tell the client no internals."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        request,
        slug="internal",
        title="Internal error",
        status=500,
        detail="unexpected error; it has been logged",
    )


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    ServiceError: service_error_handler,
    ValidationException: validation_error_handler,
    HTTPException: http_error_handler,
    RecursionError: recursion_error_handler,
    Exception: internal_error_handler,
}


def _field_name(error: dict[str, Any]) -> str:
    key, source = error.get("key"), error.get("source")
    source = getattr(source, "value", source)  # Litestar passes a ParamType enum
    if key and source and source != "body":
        return f"{source}.{key}"
    return str(key or source or "$")


# How msgspec words the RecursionError of a too deeply nested input.
_DESERIALIZING = "while deserializing"
# Litestar leaves ``data`` out of the handler's arguments when the body is empty.
_NO_BODY = "Object missing required field `data`"
# msgspec names a bad key of a mapping as "- at `key` in `$.data.items[0].stores`" (in Litestar's
# kwargs; "`$.items[0].stores`" where the body was decoded on its own: InvalidBody).
_BODY_PATH = re.compile(r"^(?P<message>.*) - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`$", re.DOTALL)


def _body_error(exc: ValidationException) -> list[FieldError]:
    """The exact JSON path of an invalid body value (``$[3].channel``).

    Litestar keeps only the top-level field in its message; msgspec's original error, chained as
    the cause, still has the full path, so use it when it is there.
    """
    cause = exc.__cause__
    if not isinstance(cause, msgspec.ValidationError):
        return []
    if str(cause) == _NO_BODY:
        return [FieldError(field="$", message=EMPTY_BODY)]
    # Litestar's kwargs put the body under ``data``; a body decoded on its own is the root.
    root = "" if isinstance(exc, InvalidBody) else ".data"
    m = _BODY_PATH.match(str(cause))
    if m and (m["path"] == root or m["path"].startswith((root + ".", root + "["))):
        message = m["message"] + (" (a key)" if m["key"] else "")
        return [FieldError(field="$" + m["path"][len(root) :], message=message)]
    if isinstance(exc, InvalidBody):  # the body itself is of the wrong type
        return [FieldError(field="$", message=str(cause))]
    return []
