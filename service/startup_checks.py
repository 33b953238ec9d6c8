"""What ``python -m service`` checks before it starts any worker: every setting a worker would
fail on at startup.

A worker that fails while it starts is started again by uvicorn's supervisor, forever, unless it
exits with uvicorn's startup-failure status; checked once in the parent, a bad setting is one line
naming the variable, and the service exits without serving.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from redis.connection import parse_url

from service.attribution import parse_windows
from service.auth import ApiKeys
from service.settings import Settings, SettingsError, variable


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
        try:
            parse_url(settings.redis_url)
        except ValueError as exc:  # nor the URL: it may hold a password
            raise SettingsError(f"{variable('redis_url', environ)}: {exc}") from None
    try:
        parse_windows(settings.attribution_windows)
    except ValueError as exc:
        var = variable("attribution_windows", environ)
        raise SettingsError(f"{var}={settings.attribution_windows!r}: {exc}") from None
    _folder(settings.model_dir, "model_dir", environ, create=False)
    _folder(settings.data_dir, "data_dir", environ, create=True)


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
