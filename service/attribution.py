"""The attribution rule: a purchase goes to the last touch of that item within its channel's window.

A *touch* is an impression or a click of a recommended item. A purchase of item X on any channel
(the store included) at time t is attributed to the most recent touch of X by the same customer
at or before t, if t - touch time is within the window of the channel *where the touch happened*
(last touch; clicks and impressions count alike). Pure: no Redis, no HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import msgspec

from service.events import CHANNELS

# Days a touch on each channel stays eligible; the README documents these defaults.
DEFAULT_WINDOW_DAYS: dict[str, float] = {
    "web": 7,
    "app": 7,
    "email": 7,
    "social": 3,
    "store": 1,
    "tablet": 1,
    "support": 1,
    "unknown": 1,
}


class Touch(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A recommended item the customer saw or clicked, and the experiment it was served under."""

    item_id: str
    channel: str
    ts: float  # Unix seconds
    kind: str  # "impression" or "click"
    request_id: str | None = None
    # "exp:<id>:<variant>" when the customer was in an experiment on that channel.
    arm: str | None = None
    model_version: str | None = None
    # Where the answer was shown, as counted (service/placements.py); None: not given. Touches
    # stored before placements existed decode without it.
    placement: str | None = None


def parse_windows(spec: str | None) -> dict[str, timedelta]:
    """Windows per channel from ``"web=7,store=2"`` (days) over the defaults.

    Raises:
        ValueError: an entry is malformed or names an unknown channel.
    """
    days = dict(DEFAULT_WINDOW_DAYS)
    for entry in filter(None, (part.strip() for part in (spec or "").split(","))):
        channel, sep, value = entry.partition("=")
        channel = channel.strip()
        if not sep or channel not in CHANNELS:
            raise ValueError(f"attribution window {entry!r} must look like <channel>=<days>")
        days[channel] = float(value)
    return {channel: timedelta(days=d) for channel, d in days.items()}


def attribute(
    item_id: str,
    at: datetime,
    touches: Iterable[Touch],
    windows: Mapping[str, timedelta],
) -> Touch | None:
    """The touch a purchase of ``item_id`` at ``at`` is attributed to, or None.

    Args:
        item_id: the item bought.
        at: when it was bought (timezone-aware).
        touches: the customer's touches, in any order.
        windows: how long a touch on each channel stays eligible.
    """
    bought_at = at.timestamp()
    best: Touch | None = None
    for touch in touches:
        if touch.item_id != item_id or touch.ts > bought_at:
            continue
        window = windows.get(touch.channel, timedelta(0)).total_seconds()
        if bought_at - touch.ts > window:
            continue
        # Later touches win; on a tie a click beats an impression (it shows more intent).
        if best is None or (touch.ts, touch.kind == "click") > (best.ts, best.kind == "click"):
            best = touch
    return best
