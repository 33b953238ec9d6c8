"""Casting text columns without failing a whole file on one bad value.

Arrow's casts fail a whole array on one bad value. ``shaped`` nulls the values that do not match
a regex shape (most bad values, found at once), and ``bisect`` pins down the few left that match
the shape but still fail to cast (a 30 February), by halving the slice that fails.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def as_mask(mask: pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
    """A boolean mask as numpy, nulls False."""
    if isinstance(mask, np.ndarray):
        return mask
    return mask.fill_null(False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def cast_to(target: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    """A cast to ``target``, for ``bisect``."""
    return lambda values: pc.cast(values, target)


def shaped(values: pa.ChunkedArray, shape: str) -> tuple[pa.Array, np.ndarray]:
    """The strings matching a regex shape, the others nulled, and a mask of the others.

    Arrow's casts fail a whole array on one bad value: the shape test finds most bad values
    at once, and bisect the few that look right but are not (a 30 February).
    """
    strings = values.combine_chunks()
    malformed = as_mask(pc.invert(pc.match_substring_regex(strings, shape)))
    if malformed.any():
        strings = pc.if_else(pa.array(malformed), pa.scalar(None, pa.string()), strings)
    return strings, malformed


def bisect(
    values: pa.Array, convert: Callable[[pa.Array], pa.Array]
) -> tuple[pa.Array, np.ndarray]:
    """Converts the values, halving the slice that fails until the bad values are pinned down.

    Only values that pass the shape test but still fail (a 30 February) get here, so the
    halving stays short: about log2(rows) casts per bad value.
    """
    try:
        return convert(values), np.zeros(len(values), dtype=bool)
    except pa.ArrowInvalid:
        if len(values) == 1:
            return convert(pa.nulls(1, values.type)), np.ones(1, dtype=bool)
    half = len(values) // 2
    head, head_failed = bisect(values.slice(0, half), convert)
    tail, tail_failed = bisect(values.slice(half), convert)
    return pa.concat_arrays([head, tail]), np.concatenate([head_failed, tail_failed])
