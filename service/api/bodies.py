"""Request bodies the OpenAPI cannot learn from a handler's signature.

The offer catalogue's handlers read the raw body (their decoder names each field at fault) so
Litestar documents no body at all; the events' ``Event | list[Event]`` cannot carry the batch's
``minItems`` through Litestar. Each documents its body through an ``operation_class`` made here.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)


def component(name: str) -> Reference:
    """A schema in ``components/schemas`` (one that some response of the app already uses)."""
    return Reference(ref=f"#/components/schemas/{name}")


def one_or_batch(name: str) -> Schema:
    """One ``name`` object, or a non-empty array of them."""
    ref = component(name)
    return Schema(one_of=[ref, Schema(type=OpenAPIType.ARRAY, items=ref, min_items=1)])


def json_body(schema: Schema | Reference, description: str | None = None) -> type[Operation]:
    """An ``operation_class`` documenting a required JSON request body of ``schema``."""
    body = RequestBody(
        content={"application/json": OpenAPIMediaType(schema=schema)},
        description=description,
        required=True,
    )

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    return WithBody
