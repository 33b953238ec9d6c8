"""Where a Redis is and how to talk to it directly: the two connections the store opens itself.

redis-py's asyncio client serves most of the store. Two connections are ours, on an
``asyncio.Protocol`` with hiredis (the parser redis-py uses): the requests' shared connection
(store/connection.py) and the state cache's (store/state_cache.py). Both take the client's own
settings (``Endpoint.of``), so a Redis URL means the same to all three.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import redis.exceptions
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection


class Endpoint(msgspec.Struct, frozen=True):
    """A Redis server and what a connection to it sends first."""

    host: str | None = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket, instead of host and port
    tls: ssl.SSLContext | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    client_name: str | None = None
    # Seconds; None waits for ever (redis-py's default).
    timeout: float | None = None
    connect_timeout: float | None = None

    @classmethod
    def of(cls, client: Redis) -> Endpoint:
        """The server and settings ``client``'s connections use."""
        # A connection object is built, not opened: it holds every setting the URL and the
        # keyword arguments gave, parsed.
        conn: Any = client.connection_pool.make_connection()
        username, password = conn.username, conn.password
        if conn.credential_provider is not None:
            *user, password = conn.credential_provider.get_credentials()
            username = user[0] if user else None
        unix = isinstance(conn, UnixDomainSocketConnection)
        return cls(
            host=None if unix else conn.host,
            port=6379 if unix else conn.port,
            path=conn.path if unix else None,
            tls=conn.ssl_context.get() if isinstance(conn, SSLConnection) else None,
            db=int(conn.db or 0),
            username=username,
            password=password,
            client_name=conn.client_name,
            timeout=conn.socket_timeout,
            connect_timeout=conn.socket_connect_timeout or conn.socket_timeout,
        )

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """The server and settings of ``url`` (as ``Redis.from_url`` reads it)."""
        return cls.of(Redis.from_url(url))

    def hello(self, client_name: str | None = None) -> list[tuple[Any, ...]]:
        """The commands a new connection sends before any other: authentication, the
        database, and a name for ``CLIENT LIST`` (``client_name``, else the client's)."""
        commands: list[tuple[Any, ...]] = []
        if self.password is not None:
            commands.append(("AUTH", *([self.username] if self.username else []), self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        name = client_name or self.client_name
        if name:
            commands.append(("CLIENT", "SETNAME", name))
        return commands

    async def open(self, protocol: Callable[[], asyncio.Protocol]) -> None:
        """Connect a new ``protocol()`` (raises ``TimeoutError`` or ``OSError``)."""
        loop = asyncio.get_running_loop()
        if self.path is not None:
            connecting = loop.create_unix_connection(protocol, self.path)
        else:
            connecting = loop.create_connection(protocol, self.host, self.port, ssl=self.tls)
        await asyncio.wait_for(connecting, self.connect_timeout)


def pack(command: Sequence[Any]) -> bytes:
    """``command`` (its name and arguments) as RESP, encoded as redis-py encodes them."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        kind = type(arg)
        # The exact types first: every request packs a few commands (half the time of isinstance).
        if kind is str:
            value = arg.encode()
        elif kind is bytes:
            value = arg
        elif kind is int:
            value = b"%d" % arg
        else:
            value = _encoded(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


def _encoded(arg: Any) -> bytes:
    if isinstance(arg, bytes | memoryview):
        return bytes(arg)
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, int) and not isinstance(arg, bool):
        return b"%d" % arg
    if isinstance(arg, float):
        return repr(arg).encode()
    # As redis-py refuses them (None, booleans, containers).
    raise redis.exceptions.DataError(f"cannot send {type(arg).__name__} to Redis")


def reply_error(message: str) -> redis.exceptions.ResponseError:
    """An error reply as the exception redis-py raises for it (``NOSCRIPT``:
    ``NoScriptError``, ``LOADING``: ``BusyLoadingError``...)."""
    return BaseParser.parse_error(message)  # type: ignore[no-any-return]
