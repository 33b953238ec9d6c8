"""The OpenAPI schema of a request Struct says what its decoder refuses.

Litestar's own Struct schemas leave out two refusals msgspec makes, so a client built from the
OpenAPI (or a fuzzer) sends bodies the service answers with a 400:

* an unknown field, where the Struct has ``forbid_unknown_fields``: ``additionalProperties:
  false``;
* a list item's own constraints (``list[Id]``: each id 1 to 256 characters, no control
  characters), which Litestar drops from ``items``;
* the keys of a mapping keyed by a ``Literal`` (consent's ``marketing`` by channel) or by an
  ``Id`` (inventory's ``stores``);
* the bounds of an optional field: Litestar keeps no bound of ``Annotated[int, Meta(ge=0)] |
  None`` and drops any bound of 0 (it tests them for truth), so ``Days | None`` said ``maximum``
  but not ``minimum: 0``, and a price of -1 was valid by the schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.spec import OpenAPIType, Schema

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition


class RequestStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's Struct schema, with the refusals above added."""

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if not isinstance(info, msgspec.inspect.StructType):
            return schema
        if info.forbid_unknown_fields:
            schema.additional_properties = False
        for field in info.fields:
            prop = (schema.properties or {}).get(field.encode_name)
            items = _string_items(field.type)
            if isinstance(prop, Schema) and items is not None:
                _set_items(prop, items)
            if isinstance(prop, Schema) and (keys := _key_schema(field.type)):
                prop.property_names = keys
            if isinstance(prop, Schema):
                _set_bounds(prop, field.type)
        return schema


# msgspec's constraint -> the OpenAPI schema's attribute, by the kind of value it bounds.
_NUMBER_BOUNDS = {
    "ge": "minimum",
    "gt": "exclusive_minimum",
    "le": "maximum",
    "lt": "exclusive_maximum",
    "multiple_of": "multiple_of",
}
_BOUNDS: dict[type, dict[str, str]] = {
    msgspec.inspect.IntType: _NUMBER_BOUNDS,
    msgspec.inspect.FloatType: _NUMBER_BOUNDS,
    msgspec.inspect.StrType: {
        "min_length": "min_length",
        "max_length": "max_length",
        "pattern": "pattern",
    },
    msgspec.inspect.ListType: {"min_length": "min_items", "max_length": "max_items"},
}


def _set_bounds(prop: Schema, field_type: msgspec.inspect.Type) -> None:
    """Put on ``prop`` each bound of ``field_type`` (or of its one member besides None) that it
    lacks; beside a ``oneOf`` with null, as Litestar puts the bounds it keeps (a bound applies
    only to the values of its kind)."""
    if isinstance(field_type, msgspec.inspect.UnionType):
        members = [t for t in field_type.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(members) != 1:
            return
        field_type = members[0]
    for constraint, attribute in _BOUNDS.get(type(field_type), {}).items():
        value = getattr(field_type, constraint)
        if value is not None and getattr(prop, attribute) is None:
            setattr(prop, attribute, value)


def _string_items(field_type: msgspec.inspect.Type) -> Schema | None:
    """The schema of a list's constrained string items (``list[Id]``), else None."""
    if isinstance(field_type, msgspec.inspect.UnionType):  # ``list[Id] | None``
        lists = [t for t in field_type.types if isinstance(t, msgspec.inspect.ListType)]
        field_type = lists[0] if len(lists) == 1 else field_type
    if not isinstance(field_type, msgspec.inspect.ListType):
        return None
    return _constrained_string(field_type.item_type)


def _key_schema(field_type: msgspec.inspect.Type) -> Schema | None:
    """The keys a mapping takes where they are constrained (``dict[Channel, bool]``: the
    channels; ``dict[Id, bool]``: ids), else None."""
    if not isinstance(field_type, msgspec.inspect.DictType):
        return None
    keys = field_type.key_type
    if isinstance(keys, msgspec.inspect.LiteralType):
        return Schema(type=OpenAPIType.STRING, enum=[str(v) for v in keys.values])
    return _constrained_string(keys)


def _constrained_string(value_type: msgspec.inspect.Type) -> Schema | None:
    """The schema of a string with constraints (``Id``), else None."""
    if not isinstance(value_type, msgspec.inspect.StrType):
        return None
    if value_type == msgspec.inspect.StrType():
        return None
    return Schema(
        type=OpenAPIType.STRING,
        min_length=value_type.min_length,
        max_length=value_type.max_length,
        pattern=value_type.pattern,
    )


def _set_items(prop: Schema, items: Schema) -> None:
    """Put ``items`` on the array schema in ``prop`` (itself, or one member of its ``oneOf``)."""
    for schema in [prop, *(s for s in prop.one_of or [] if isinstance(s, Schema))]:
        if schema.type == OpenAPIType.ARRAY:
            schema.items = items
