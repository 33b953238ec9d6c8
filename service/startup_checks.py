"""What ``python -m service`` checks before it starts any worker: every setting a worker would
fail on at startup, and a ``REDIS_URL`` that no waiting can make work.

A worker that fails while it starts is started again by uvicorn's supervisor, forever, unless it
exits with uvicorn's startup-failure status; checked once in the parent, a bad setting is one line
naming the variable, and the service exits without serving.

``REDIS_URL``'s server is asked too (``_redis_server``). What waiting can fix is not refused: no
server listening, or one that does not answer in time, is an outage, and the workers serve
without Redis until it answers, as they do when Redis goes away later (README, "What a failure
does"). What only the operator can fix is refused: a server that is not Redis (a PostgreSQL port,
a TLS port given as ``redis://``: it answered a worker's first command with a protocol error, a
traceback and exit status 3, or closed the connection, and the workers logged "Connection closed
by server" every second for ever), credentials the server refuses, a database it does not have.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.exceptions
from redis.asyncio import Redis
from redis.connection import parse_url

from service import placements
from service.attribution import parse_windows
from service.auth import ApiKeys
from service.settings import Settings, SettingsError, variable
from service.store.connection import NotRedis, greet
from service.store.wire import Endpoint


def check(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Raise ``SettingsError`` for the first setting the workers could not start with.

    Creates ``data_dir`` when it does not exist (the service writes there at once).

    Args:
        settings: the settings, as ``Settings.from_env(environ)`` read them.
        environ: where they were read from, to name the variable as the operator set it.
    """
    if settings.api_keys:
        try:
            ApiKeys.parse(settings.api_keys)
        except ValueError as exc:  # never the value: it holds the keys
            raise SettingsError(f"{variable('api_keys', environ)}: {exc}") from None
    if settings.redis_url is not None:
        var = variable("redis_url", environ)
        try:
            options = parse_url(settings.redis_url)
        except ValueError as exc:  # nor the URL: it may hold a password
            raise SettingsError(f"{var}: {exc}") from None
        url = urlsplit(settings.redis_url)
        database = unquote(url.path).replace("/", "")
        if url.scheme.lower() != "unix" and database and "db" not in options:
            # redis-py ignores a path that is not a number: the service used database 0.
            raise SettingsError(f"{var}: the database {database!r} is not a number")
        _redis_server(settings, var)
    try:
        parse_windows(settings.attribution_windows)
    except ValueError as exc:
        var = variable("attribution_windows", environ)
        raise SettingsError(f"{var}={settings.attribution_windows!r}: {exc}") from None
    try:
        placements.parse(settings.placements)
    except ValueError as exc:
        var = variable("placements", environ)
        raise SettingsError(f"{var}={settings.placements!r}: {exc}") from None
    _folder(settings.model_dir, "model_dir", environ, create=False)
    _folder(settings.data_dir, "data_dir", environ, create=True)


def _redis_server(settings: Settings, var: str) -> None:
    """Raise ``SettingsError`` when the server at ``settings.redis_url`` answers, but not as a
    Redis the workers can use; an unreachable or silent one passes (see the module docstring)."""
    assert settings.redis_url is not None
    timeout = settings.redis_timeout_seconds  # what a worker waits for it
    client = Redis.from_url(
        settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    endpoint = Endpoint.of(client)  # as the workers' connections reach it
    where = endpoint.path or f"{endpoint.host}:{endpoint.port}"  # never the password
    try:
        replies = asyncio.run(greet(endpoint))
    except NotRedis as exc:
        raise SettingsError(
            f"{var}: the server at {where} does not speak the Redis protocol ({exc})"
        ) from None
    except (redis.exceptions.RedisError, OSError):
        return  # an outage: the workers serve without Redis until it answers
    for command, reply in zip((*endpoint.hello(), ("PING",)), replies, strict=True):
        if _misconfigured(command, reply):
            raise SettingsError(f"{var}: the server at {where} refused {command[0]}: {reply}")


def _misconfigured(command: tuple[Any, ...], reply: Any) -> bool:
    """Whether ``reply`` to one of ``greet``'s commands is an error the operator must fix: a
    refused AUTH or SELECT (Redis's messages name neither the password nor other secrets), or a
    PING refused for want of a password. Others (LOADING, too many clients) pass: they end."""
    if not isinstance(reply, redis.exceptions.ResponseError | redis.exceptions.ConnectionError):
        return False
    if command[0] in ("AUTH", "SELECT"):
        return True
    return command[0] == "PING" and isinstance(reply, redis.exceptions.AuthenticationError)


def _folder(path: str, name: str, environ: Mapping[str, str] | None, *, create: bool) -> None:
    folder = Path(path)
    problem = None
    if folder.exists() and not folder.is_dir():
        problem = "not a folder"
    elif create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = f"cannot create it ({exc.strerror})"
        else:
            if not os.access(folder, os.W_OK | os.X_OK):
                problem = "cannot write there"
    if problem:
        raise SettingsError(f"{variable(name, environ)}={path!r}: {problem}")
