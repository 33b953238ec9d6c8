"""Placements: where a recommendation is shown, and the bounded names they are counted under.

A request may name any placement that follows the token rule (``events.PLACEMENT_PATTERN``); it
is echoed and experiments may target it. Counters (Redis's daily hashes, ``/metrics`` labels)
know only the configured placements (``RECO_PLACEMENTS``) and ``other`` for the rest, so a
client sending a new token on every request cannot grow them. Pure: no Redis, no HTTP.
"""

from __future__ import annotations

import re

from service.events import PLACEMENT_PATTERN, PLACEMENT_RULE

DEFAULT_PLACEMENTS = "home,category,search,product,cart,checkout,email,tablet"
# At most this many configured placements: each one is a series per channel in /metrics and a
# column of counters per day in Redis.
MAX_PLACEMENTS = 32
OTHER = "other"  # a valid placement that is not configured
NONE = "none"  # no placement given (only a /metrics label: Redis counts these under ``all``)

_TOKEN = re.compile(PLACEMENT_PATTERN)


def parse(spec: str) -> tuple[str, ...]:
    """The configured placements from ``"home,cart,product"`` (spaces and empty entries ignored).

    Raises:
        ValueError: an entry breaks the token rule, is ``other`` or ``none``, or there are more
            than ``MAX_PLACEMENTS``.
    """
    names: list[str] = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        if not _TOKEN.match(entry):
            raise ValueError(f"placement {entry!r} must be {PLACEMENT_RULE}")
        if entry in (OTHER, NONE):
            raise ValueError(f"placement {entry!r} is reserved (what is not configured)")
        if entry not in names:
            names.append(entry)
    if len(names) > MAX_PLACEMENTS:
        raise ValueError(f"at most {MAX_PLACEMENTS} placements, not {len(names)}")
    return tuple(names)


def labels(spec: str) -> dict[str | None, str]:
    """Placement -> the name it is counted under: itself when configured; ``None`` -> ``none``.

    Look a placement up with ``.get(placement, OTHER)``: one dict look-up per request.
    """
    found: dict[str | None, str] = {name: name for name in parse(spec)}
    found[None] = NONE
    return found
