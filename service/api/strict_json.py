"""JSON request bodies are decoded strictly: ``"3"`` is not a number, nor ``0`` a boolean.

Litestar decodes a body untyped, then converts it with the query parameters in lax mode
(``strict=False``, right for text such as a query string): a body's ``"personalisation":
"false"`` became ``False``, ``"quantity": "3"`` became ``3``, though the OpenAPI says boolean and
number and a client sending them has a bug worth a 400. This request class decodes the body
straight into the handler's ``data`` type, strictly (one pass, no untyped tree); Litestar's
conversion then finds the value already typed and keeps it.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from litestar import Request

from service.problems import InvalidBody


class StrictJSONRequest(Request[Any, Any, Any]):
    """A request whose ``json()`` is the body decoded strictly into the handler's data type."""

    async def json(self) -> Any:
        field = self.route_handler.parsed_data_field
        body = await self.body()
        if field is None or not body:  # no data wanted; or none sent (a 400 naming the body)
            return await super().json()
        try:
            return body_decoder(field.annotation).decode(body)
        except msgspec.ValidationError as e:  # (a DecodeError too: first)
            # Nested too deeply is the 400 that says so, not the first mismatch msgspec met.
            await super().json()
            raise InvalidBody(detail=str(e)) from e
        except msgspec.DecodeError:
            return await super().json()  # not JSON: Litestar's own 400


@functools.cache
def body_decoder(annotation: Any) -> msgspec.json.Decoder[Any]:
    """The strict decoder of a body into ``annotation`` (one per type)."""
    return msgspec.json.Decoder(annotation)
