"""The store's short commands, sent on the worker's shared connection; bulk ones on a second.

Every request's reads and scripts (the customer's state, an event batch, the offers' state)
go through here, on one connection per worker that all callers share (store/connection.py):
the commands of concurrent requests go out together and each caller gets its own replies.
A caller with ``MAX_BATCH`` commands or more (an email export's chunk) uses a second shared
connection, so requests do not wait behind its replies.

Each command stands alone (a read, or a script, which Redis runs atomically), so sharing a
connection means the same as sending them one by one: a failed connection fails every command
waiting on it, each as if its own command had failed, and an error reply fails only its caller.

History: the first version queued the commands of one turn of the loop and sent them as one
redis-py pipeline (12% less CPU per recommendation under load than a command per request); the
shared connection replaced it (docs/serving.md, sixth round).
"""

from __future__ import annotations

from typing import Any

import redis.exceptions
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from service.store.connection import Command, SharedConnection
from service.store.wire import Endpoint

# A caller with this many commands or more uses the bulk connection.
MAX_BATCH = 256


class Pipelined:
    """Commands of concurrent callers on shared connections; each caller awaits its own
    replies."""

    def __init__(self, client: Redis) -> None:
        """Connect where ``client`` does, with its settings (timeout, database, credentials)."""
        endpoint = Endpoint.of(client)
        self.connection = SharedConnection(endpoint)
        # Open when Redis just failed: the store's calls fail at once (store/breaker.py).
        self.breaker = self.connection.breaker
        self.bulk = SharedConnection(endpoint, self.breaker)
        # Callers waiting on Redis now.
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """How many callers wait on Redis now."""
        return self._waiting

    async def command(self, *args: Any) -> Any:
        """The reply to one command (``args``: its name and arguments). Raises what the command
        or the connection raised."""
        return (await self.commands([args]))[0]

    async def commands(self, commands: list[Command]) -> list[Any]:
        """The replies to ``commands``, in order. Raises the first error among them, or the
        connection's. Replies are as Redis sends them (``HGETALL``: a flat list)."""
        connection = self.connection if len(commands) < MAX_BATCH else self.bulk
        self._waiting += 1
        try:
            replies = await connection.execute(commands)
        finally:
            self._waiting -= 1
        failed = next((r for r in replies if isinstance(r, Exception)), None)
        if failed is not None:
            raise failed
        return replies

    async def evalsha(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """``script``'s reply for ``keys`` and ``args``, loading it again if Redis lost it (a
        restart, ``SCRIPT FLUSH``)."""
        return (await self.evalsha_many(script, [(keys, args)]))[0]

    async def evalsha_many(
        self, script: AsyncScript, calls: list[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        """``script``'s reply to each of ``calls`` (keys, args), in order, sent together.

        A script call whose reads or writes would otherwise be several commands is one reply to
        read and wait for.
        """
        commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls]
        try:
            return await self.commands(commands)
        except redis.exceptions.NoScriptError:
            # Every caller finds the script missing at once; Redis loads it again for each
            # SCRIPT LOAD, which is idempotent.
            await self.command("SCRIPT", "LOAD", script.script)
            return await self.commands(commands)

    async def aclose(self) -> None:
        """Close both connections."""
        await self.connection.aclose()
        await self.bulk.aclose()
