"""Unix times in event files: seconds, milliseconds, microseconds or nanoseconds since 1970.

Warehouses, event pipelines and Parquet writers export times as numbers as often as ISO-8601 text
(``1291161600``, ``1291161600000``, an int64 column). The unit is told apart by the number of
digits of the whole part, which no date of this era leaves ambiguous: 9-10 digits are seconds
(1973-03-03 to 2286), 12-13 milliseconds, 15-16 microseconds and 18-19 nanoseconds. Any other
length is refused rather than guessed: an 8-digit ``20240131`` is a date written as a number, not
a time in August 1970, and 11 digits could be seconds in 2286 or milliseconds in 1972.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UTC_MICROS = pa.timestamp("us", tz="UTC")
# A number written as text: digits, and a fraction of the unit.
SHAPE = r"^\d+(\.\d+)?$"
_PARTS = r"^(?P<whole>\d+)(?:\.(?P<fraction>\d+))?$"
REASON = (
    "is not a Unix time in seconds, milliseconds, microseconds or nanoseconds "
    "(9-10, 12-13, 15-16 or 18-19 digits)"
)
# (lowest, highest + 1) whole values of each unit, and microseconds per unit as (times, divided).
_UNITS = (
    (10**8, 10**10, 1_000_000, 1),
    (10**11, 10**13, 1_000, 1),
    (10**14, 10**16, 1, 1),
    (10**17, np.iinfo(np.int64).max, 1, 1_000),
)
_INT64_MAX_TEXT = str(np.iinfo(np.int64).max)


def from_text(strings: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Numbers written as text (``SHAPE``; other values must be null) to UTC microseconds.

    Returns the times (null where not one) and a mask of the values that are no Unix time.
    """
    parts = pc.extract_regex(strings, _PARTS)
    whole_text = pc.struct_field(parts, "whole")
    # Longer than int64's digits (or as long and larger) is no Unix time: nulled before the cast.
    lengths = pc.utf8_length(whole_text)
    fits = pc.or_(
        pc.less(lengths, len(_INT64_MAX_TEXT)),
        pc.and_(
            pc.equal(lengths, len(_INT64_MAX_TEXT)),
            pc.less_equal(whole_text, _INT64_MAX_TEXT),
        ),
    )
    whole_text = pc.if_else(fits, whole_text, pa.scalar(None, pa.string()))
    whole = _numpy(pc.cast(whole_text, pa.int64()), 0)
    fraction_text = pc.binary_join_element_wise("0.", pc.struct_field(parts, "fraction"), "")
    fraction = _numpy(pc.cast(fraction_text, pa.float64()), 0.0)
    given = _numpy(pc.is_valid(strings), False)
    micros, ok = _to_micros(whole, fraction)
    too_long = given & ~_numpy(fits, False)
    return _times(micros, ok & given), (given & ~ok) | too_long


def from_numbers(column: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """An integer or float column to UTC microseconds; null and NaN are missing values.

    Returns the times (null where not one) and a mask of the values that are no Unix time.
    """
    if pa.types.is_integer(column.type):
        # Unsafe: a uint64 beyond int64 wraps negative, and a negative number is no Unix time.
        values = pc.cast(column, pa.int64(), safe=False).combine_chunks()
        given = in_range = _numpy(pc.is_valid(values), False)
        whole, fraction = _numpy(values, 0), np.zeros(len(values))
    else:
        numbers = _numpy(pc.cast(column, pa.float64()).combine_chunks(), np.nan)
        given = ~np.isnan(numbers)
        in_range = given & (numbers >= 0) & (numbers < 2.0**63)
        floor = np.floor(np.where(in_range, numbers, 0.0))
        whole, fraction = floor.astype(np.int64), np.where(in_range, numbers - floor, 0.0)
    micros, ok = _to_micros(whole, fraction)
    ok &= in_range
    return _times(micros, ok), given & ~ok


def _to_micros(whole: np.ndarray, fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    micros = np.zeros(len(whole), dtype=np.int64)
    ok = np.zeros(len(whole), dtype=bool)
    for lowest, above, times, divided in _UNITS:
        unit = (whole >= lowest) & (whole < above)
        micros[unit] = whole[unit] * times // divided
        micros[unit] += np.round(fraction[unit] * times / divided).astype(np.int64)
        ok |= unit
    return micros, ok


def _times(micros: np.ndarray, ok: np.ndarray) -> pa.Array:
    return pa.array(micros, type=pa.int64(), mask=~ok).cast(UTC_MICROS)


def _numpy(values: pa.Array | pa.ChunkedArray, missing: object) -> np.ndarray:
    return values.fill_null(missing).to_numpy(zero_copy_only=False)
