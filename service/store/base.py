"""What every part of the store shares: the client, the keys, and Redis error handling."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis.exceptions
from redis.asyncio import Redis

from service.errors import StoreUnavailable
from service.store.breaker import CircuitOpen
from service.store.keys import Keys
from service.store.pipelined import Pipelined
from service.store.state_cache import StateCache

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="StoreBase")


class StoreBase:
    """The Redis client and key schema the store's parts work with."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "reco",
        recent_max: int = 100,
        recent_ttl_days: int = 90,
        state_cache: StateCache | None = None,
    ) -> None:
        """Use ``client`` (opened and closed by the app's lifespan), and ``state_cache`` (started
        by the caller) to keep customer states between changes."""
        self.client = client
        self.state_cache = state_cache
        self.pipelined = Pipelined(client)
        self.breaker = self.pipelined.breaker
        self.keys = Keys(prefix)
        self.recent_max = recent_max
        self.recent_ttl_seconds = recent_ttl_days * 86400

    @property
    def unavailable(self) -> str | None:
        """Why the store fails at once now (Redis failed a moment ago), or None."""
        return self.breaker.reason

    async def ping(self) -> bool:
        """True when Redis answers; False at once while the breaker is open."""
        if self.breaker.reason is not None:
            return False
        try:
            await self.pipelined.command("PING")
        except (redis.exceptions.RedisError, OSError):
            return False
        return True

    async def aclose(self) -> None:
        """Close the client's connections (and the state cache's)."""
        if self.state_cache is not None:
            await self.state_cache.aclose()
        await self.pipelined.aclose()
        await self.client.aclose()


# The error codes with which a running Redis refuses commands for a while, each with what it
# means: an outage to wait out or fix in Redis, not a bug of ours.
REFUSALS = {
    "OOM": "Redis is out of memory (maxmemory reached, noeviction)",
    "READONLY": "the server is a read-only replica (after a failover?)",
    "MISCONF": "Redis cannot save its snapshot and refuses writes",
    "NOREPLICAS": "too few replicas to accept writes",
    "MASTERDOWN": "the replica lost its link to the master",
    "BUSY": "Redis is busy running a slow script",
    "TRYAGAIN": "the cluster is moving the key's slot",
    "CLUSTERDOWN": "the cluster is down",
}
# redis-py strips the code of the replies it has a class for.
_CLASSES = {
    redis.exceptions.OutOfMemoryError: "OOM",
    redis.exceptions.ReadOnlyError: "READONLY",
    redis.exceptions.TryAgainError: "TRYAGAIN",
    redis.exceptions.MasterDownError: "MASTERDOWN",  # before its base class, CLUSTERDOWN's
    redis.exceptions.ClusterDownError: "CLUSTERDOWN",
}
# The others keep it in front ("MISCONF Redis is..."), and a refusal inside a script comes back
# within the script's error: "...@user_script:7: -OOM command not allowed...".
_CODE = re.compile(r"(?:^|-)(" + "|".join(REFUSALS) + r") ")


def refusal(error: redis.exceptions.ResponseError) -> str | None:
    """The code of ``error`` when it is one of Redis's ``REFUSALS``, else None."""
    for kind, code in _CLASSES.items():
        if isinstance(error, kind):
            return code
    found = _CODE.search(str(error))
    return found.group(1) if found else None


def unavailable_on_redis_error(
    fn: Callable[Concatenate[S, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Awaitable[T]]:
    """Turn Redis connection problems, timeouts and refusals (out of memory, a read-only replica:
    ``REFUSALS``) into ``StoreUnavailable`` (a 503).

    While the store's breaker is open (Redis timed out or refused a connection a moment ago,
    store/breaker.py), it raises at once, for calls on redis-py's client as well as on the shared
    connection; a timeout on either opens it. Other Redis errors (a wrong key type, say) are
    bugs, not outages, and propagate. A refused script has changed nothing: Redis refuses a
    script's first write, and once a script has written it lets it finish.
    """

    @wraps(fn)
    async def wrapper(store: S, *args: P.args, **kwargs: P.kwargs) -> T:
        breaker = store.breaker
        try:
            if breaker.reason is not None:
                breaker.refuse()
            return await fn(store, *args, **kwargs)
        except CircuitOpen as e:
            # Logged once, when it opened: not once per request of the outage.
            raise StoreUnavailable(f"customer state store unavailable: {e}") from e
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as e:
            if isinstance(e, redis.exceptions.TimeoutError):
                breaker.trip(e)
            log.warning("redis unavailable in %s: %s", fn.__name__, e)
            raise StoreUnavailable(f"customer state store unavailable: {type(e).__name__}") from e
        except redis.exceptions.ResponseError as e:
            code = refusal(e)
            if code is None:
                raise
            log.warning("redis refused %s: %s", fn.__name__, e)
            reason = f"customer state store refuses it: {REFUSALS[code]} ({code})"
            raise StoreUnavailable(reason) from e

    return wrapper


def mapping(flat: Sequence[Any]) -> dict[Any, Any]:
    """A hash as a dict, from the flat [field, value, ...] list HGETALL answers inside a script
    and on the shared connection."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def text(value: bytes | str) -> str:
    """A Redis reply as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else value
