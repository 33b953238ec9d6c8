"""ISO-8601 times in event files, and Parquet's typed times, to microseconds in UTC.

A time with ``Z`` or an offset is converted; one without a zone, or a date alone, is taken as
UTC. Warehouses' spaced zones (BigQuery's ``2020-01-01 10:00:00 UTC``, Snowflake's ``... +0000``)
are normalised first. Unix times written as numbers are ``training/unix_time.py``'s.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.casts import bisect, cast_to, shaped
from training.unix_time import UTC_MICROS

# Shapes checked before casting (``casts.shaped``).
_ISO_8601 = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"([T ]([01]\d|2[0-3])(:[0-5]\d(:[0-5]\d(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$"
)
_ZONE = r"[T ].*(Z|[+-]\d{2}(:?\d{2})?)$"
# A zone after a space, as warehouses write it: normalised to ISO-8601 before the shape test.
_SPACED_ZONE = r" (UTC|GMT|Z|[+-]\d{2}(:?\d{2})?)$"
# Arrow parses at most microseconds; finer digits are dropped, as the output is in microseconds.
_EXTRA_DIGITS = r"(\.\d{6})\d+"


def typed_to_utc(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Parquet dates and timestamps to microseconds in UTC; naive ones are taken as UTC."""
    if pa.types.is_date(column.type):
        column = pc.cast(column, pa.timestamp("us"))
    if column.type.tz is None:
        # Arrow stores naive times as if they were UTC: naming the zone keeps the wall time.
        column = pc.cast(column, pa.timestamp(column.type.unit, tz="UTC"))
    return pc.cast(column, options=pc.CastOptions(UTC_MICROS, allow_time_truncate=True))


def to_utc(values: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray]:
    """ISO-8601 strings to UTC: with ``Z`` or an offset converted, without one taken as UTC.

    Returns the times (null where unusable) and a mask of the values that are not ISO-8601.
    """
    strings, malformed = shaped(values, _ISO_8601)
    if malformed.any() and pc.any(pc.match_substring_regex(values, _SPACED_ZONE)).as_py():
        # BigQuery's "2020-01-01 10:00:00 UTC", Snowflake's "... 10:00:00.000 +0000".
        values = pc.replace_substring_regex(values, r" (UTC|GMT)$", "Z")
        values = pc.replace_substring_regex(values, _SPACED_ZONE, r"\1")
        strings, malformed = shaped(values, _ISO_8601)
    if pc.any(pc.match_substring_regex(strings, _EXTRA_DIGITS)).as_py():
        strings = pc.replace_substring_regex(strings, _EXTRA_DIGITS, r"\1")
    # The usual export says "Z" everywhere: one plain substring test spares the zone regex.
    if pc.all(pc.ends_with(strings, "Z")).as_py() is not False:
        stamps, failed = bisect(strings, cast_to(UTC_MICROS))
        return pa.chunked_array([stamps]), malformed | failed
    zoned = pc.match_substring_regex(strings, _ZONE)
    no_string = pa.scalar(None, pa.string())
    aware, aware_failed = bisect(pc.if_else(zoned, strings, no_string), cast_to(UTC_MICROS))
    naive, naive_failed = bisect(pc.if_else(zoned, no_string, strings), _naive_to_utc)
    stamps = pc.if_else(zoned, aware, naive)
    return pa.chunked_array([stamps]), malformed | aware_failed | naive_failed


def _naive_to_utc(strings: pa.Array) -> pa.Array:
    return pc.cast(pc.cast(strings, pa.timestamp("us")), UTC_MICROS)
