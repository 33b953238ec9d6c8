"""Whether the Redis the service writes to can lose events it has acknowledged.

``POST /v1/events`` answers 202 once an event is in the Redis stream, and the exporter drains the
stream into training data later. Two settings of the Redis server can lose what lies in between:
an eviction policy other than ``noeviction`` under a memory limit drops keys (the stream among
them) when memory runs short, and without the append-only file a restart loses whatever was
written since the last snapshot. The service cannot change a shared server's configuration, so it
says so at start (as Sidekiq does about eviction). The embedded Redis is configured safely
(``service/embedded_redis.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis.exceptions
from redis.asyncio import Redis

from service.store.base import text

log = logging.getLogger(__name__)

# What is read: one CONFIG GET per setting (Redis 6 takes one pattern per call).
_SETTINGS = ("maxmemory", "maxmemory-policy", "appendonly")


def risks(config: Mapping[str, str]) -> list[str]:
    """How the server's ``config`` (setting -> value, as CONFIG GET answers) can lose
    acknowledged events; empty when it cannot, or when a setting is missing."""
    found = []
    policy = config.get("maxmemory-policy")
    if config.get("maxmemory", "0") != "0" and policy not in (None, "noeviction"):
        found.append(
            f"maxmemory-policy is {policy}: under its memory limit Redis may evict the event "
            "stream and customers' state; set it to noeviction"
        )
    if config.get("appendonly") == "no":
        found.append(
            "appendonly is no: a restart of Redis loses the events acknowledged since its last "
            "snapshot; set appendonly yes (appendfsync everysec or always)"
        )
    return found


async def check(client: Redis) -> list[str]:
    """Read the server's settings and log a warning for each risk (``risks``); the risks found.

    A server that does not answer CONFIG (managed services may rename or forbid it) or is
    unreachable is not an error here: the service starts anyway, and nothing is reported.
    """
    config: dict[str, str] = {}
    try:
        async with client.pipeline(transaction=False) as pipe:
            for name in _SETTINGS:
                pipe.config_get(name)
            for reply in await pipe.execute():
                config.update({text(k): text(v) for k, v in reply.items()})
    except (redis.exceptions.RedisError, OSError) as exc:
        log.info("could not read the Redis configuration (%s); durability not checked", exc)
        return []
    found = risks(config)
    for risk in found:
        log.warning("Redis can lose acknowledged events: %s", risk)
    return found
