"""Measurement in Redis: experiments, each customer's recent touches, and daily counters.

Counters live in one hash per UTC day; a field is ``<dimension>|<channel>|<metric>`` where the
dimension is ``all``, ``exp:<experiment>:<variant>`` or ``model:<version>``. Writes that belong to
an event batch are queued on the batch's own MULTI (``EventState.record(..., also=...)``), so
ingestion stays one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import msgspec

from service.attribution import Touch
from service.experiments import Experiment
from service.store.base import StoreBase, text, unavailable_on_redis_error

log = logging.getLogger(__name__)

METRICS = ("impressions", "clicks", "conversions", "revenue", "revenue_sq", "requests", "fallbacks")
# Sums of money, kept as floats (HINCRBYFLOAT) whatever their value: a revenue of up to 10^21
# (price 10^12 x quantity 10^9) and its square are past HINCRBY's 64-bit integers, and a field
# past them refuses every HINCRBY after. The other metrics count, one at a time (HINCRBY).
SUMS = frozenset({"revenue", "revenue_sq"})
TOUCHES_MAX = 500
STATS_TTL_SECONDS = 400 * 86400

_touch_encoder = msgspec.msgpack.Encoder()
_touch_decoder = msgspec.msgpack.Decoder(Touch)
_experiment_decoder = msgspec.json.Decoder(Experiment)

# {day: {field: increment}}: what one batch adds to the daily counters.
Increments = dict[date, dict[str, float]]


def field(dimension: str, channel: str, metric: str) -> str:
    """A counter's field name in the daily hash."""
    return f"{dimension}|{channel}|{metric}"


def add(
    increments: Increments, day: date, dims: Iterable[str], channel: str, **metrics: float
) -> None:
    """Add ``metrics`` for every dimension in ``dims`` on ``day`` to ``increments``."""
    bucket = increments.setdefault(day, {})
    for dim in dims:
        for metric, value in metrics.items():
            key = field(dim, channel, metric)
            bucket[key] = bucket.get(key, 0.0) + value


class TrackingState(StoreBase):
    """Experiments' config, touches for attribution, daily counters and served items."""

    @unavailable_on_redis_error
    async def experiments(self) -> list[Experiment]:
        """Every stored experiment (running or not)."""
        raw = await self.client.hgetall(self.keys.experiments)
        found = []
        for value in raw.values():
            try:
                found.append(_experiment_decoder.decode(value))
            except msgspec.DecodeError:
                log.warning("undecodable experiment config skipped")
        return sorted(found, key=lambda e: e.experiment_id)

    @unavailable_on_redis_error
    async def put_experiment(self, experiment: Experiment) -> None:
        """Create or replace an experiment."""
        payload = msgspec.json.encode(experiment)
        await self.client.hset(self.keys.experiments, experiment.experiment_id, payload)

    @unavailable_on_redis_error
    async def delete_experiment(self, experiment_id: str) -> bool:
        """Remove an experiment's config (its counters stay); True if it existed."""
        return bool(await self.client.hdel(self.keys.experiments, experiment_id))

    @unavailable_on_redis_error
    async def touches(self, customer_ids: Iterable[str]) -> dict[str, list[Touch]]:
        """Each customer's recent touches, newest first, in one round trip."""
        ids = sorted(set(customer_ids))
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for customer_id in ids:
            pipe.lrange(self.keys.touches(customer_id), 0, -1)
        found: dict[str, list[Touch]] = {}
        for customer_id, raws in zip(ids, await pipe.execute(), strict=True):
            found[customer_id] = [_touch_decoder.decode(raw) for raw in raws]
        return found

    def queue_touches(
        self, pipe: Any, touches: Mapping[str, Sequence[Touch]], ttl_seconds: int
    ) -> None:
        """Queue storing new touches per customer on ``pipe`` (a transaction being built)."""
        for customer_id, new in touches.items():
            key = self.keys.touches(customer_id)
            pipe.lpush(key, *(_touch_encoder.encode(t) for t in new))
            pipe.ltrim(key, 0, TOUCHES_MAX - 1)
            pipe.expire(key, ttl_seconds)

    def queue_counters(self, pipe: Any, increments: Increments) -> None:
        """Queue the counter increments on ``pipe``."""
        for day, values in increments.items():
            key = self.keys.daily_stats(day.isoformat())
            for name, value in values.items():
                if name.rpartition("|")[2] in SUMS:
                    pipe.hincrbyfloat(key, name, value)
                else:
                    pipe.hincrby(key, name, int(value))
            pipe.expire(key, STATS_TTL_SECONDS)

    @unavailable_on_redis_error
    async def add_served(self, increments: Increments, items: Mapping[date, set[str]]) -> None:
        """Add recommendation counters and the items shown per day, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        self.queue_counters(pipe, increments)
        for day, ids in items.items():
            if not ids:
                continue
            key = self.keys.served_items(day.isoformat())
            pipe.sadd(key, *ids)
            pipe.expire(key, STATS_TTL_SECONDS)
        await pipe.execute()

    @unavailable_on_redis_error
    async def daily(self, last_day: date, days: int) -> list[tuple[date, dict[str, float], int]]:
        """The counters and the number of distinct items shown, for each of ``days`` days.

        Returns:
            ``(day, counters, distinct items served)`` per day, oldest first.
        """
        wanted = [last_day - timedelta(days=n) for n in range(days - 1, -1, -1)]
        pipe = self.client.pipeline(transaction=False)
        for day in wanted:
            pipe.hgetall(self.keys.daily_stats(day.isoformat()))
            pipe.scard(self.keys.served_items(day.isoformat()))
        replies = await pipe.execute()
        result = []
        for n, day in enumerate(wanted):
            raw, served = replies[2 * n], replies[2 * n + 1]
            counters = {text(k): float(text(v)) for k, v in raw.items()}
            result.append((day, counters, int(served)))
        return result
